#!/usr/bin/env bash
# Runs the upstream Gateway API conformance suite (conformance/gatewayapi,
# profile GATEWAY-HTTP) against toolgate and writes its report under
# conformance/reports/.
#
# With $KUBECONFIG set, it runs against that cluster, which must have the
# Gateway API CRDs, toolgate and a GatewayClass "toolgate" (or pass
# -gateway-class). Without, it uses the local cluster of hack/cluster: one
# that is up already is reused and left up; otherwise one is brought up,
# toolgate deployed into it, and taken down again at the end. Extra
# arguments go to the suite, e.g. -run-test HTTPRouteSimpleSameNamespace.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
bin=$work/gatewayapi.test
go test -c -tags gatewayapi -o "$bin" ./conformance/gatewayapi

if [[ -n ${KUBECONFIG:-} ]]; then
  "$bin" -test.v -test.timeout 60m "$@"
  exit
fi

D=${TOOLGATE_CLUSTER_DIR:-/var/lib/toolgate-cluster}
if ./hack/cluster status >/dev/null 2>&1; then
  echo "conformance: using the local cluster that is up" >&2
  ./hack/cluster deploy
else
  trap 'cleanup; ./hack/cluster down' EXIT
  ./hack/cluster up >/dev/null
  ./hack/cluster deploy
fi
./hack/cluster exec env KUBECONFIG="$D/kubeconfig/admin" "$bin" -test.v -test.timeout 60m "$@"
