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
# On the local cluster, a run without arguments runs the suite on the
# standard channel's CRDs, then on the experimental channel's (see below).
#
# $CONFORMANCE_VERSION (make conformance VERSION=v0.9.0) is the version the
# report names (implementation.version and the report's file name); without
# it, devel.
set -euo pipefail
cd "$(dirname "$0")/.."

version=()
[[ -z ${CONFORMANCE_VERSION:-} ]] || version=(-version "$CONFORMANCE_VERSION")

work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
bin=$work/gatewayapi.test
go test -c -tags gatewayapi -o "$bin" ./conformance/gatewayapi

if [[ -n ${KUBECONFIG:-} ]]; then
  "$bin" -test.v -test.timeout 60m ${version[@]+"${version[@]}"} "$@"
  exit
fi

D=${TOOLGATE_CLUSTER_DIR:-/var/lib/toolgate-cluster}
if ./hack/cluster status >/dev/null 2>&1; then
  echo "conformance: using the local cluster that is up" >&2
  ./hack/cluster deploy
else
  brought_up=1
  trap 'cleanup; ./hack/cluster down' EXIT
  ./hack/cluster up >/dev/null
  ./hack/cluster deploy
fi
run() { ./hack/cluster exec env KUBECONFIG="$D/kubeconfig/admin" "$bin" -test.v -test.timeout 60m ${version[@]+"${version[@]}"} "$@"; }
run "$@"

# A whole run goes on with the Gateway API's experimental channel, whose
# CRDs have the fields of experimental features (an HTTPRoute rule's
# retry): the suite runs again, declares those features too, and writes
# the experimental channel's report. The standard CRDs are put back after.
# CONFORMANCE_CHANNELS=standard skips it.
[[ $# -eq 0 && ${CONFORMANCE_CHANNELS:-standard experimental} == *experimental* ]] || exit 0
k() { ./hack/cluster exec "$(cat "$D/testbin")/kubectl" --kubeconfig="$D/kubeconfig/admin" "$@"; }
crds=$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd
standard() {
  k apply --server-side --force-conflicts -f "$crds/standard" >&2
  k delete --ignore-not-found crd xbackends.gateway.networking.x-k8s.io \
    xbackendtrafficpolicies.gateway.networking.x-k8s.io xmeshes.gateway.networking.x-k8s.io >&2
}
# A cluster brought up here goes down at the end; one that was up gets
# its standard CRDs back.
[[ ${brought_up:-} ]] || trap 'standard; cleanup' EXIT
echo "conformance: again on the experimental channel's CRDs" >&2
# The standard channel's admission policy refuses experimental CRDs over
# standard ones: it is deleted, and comes back with the standard CRDs.
# The experimental channel ships the same policy: its CRDs are applied
# without it, since a policy applied beside them could take effect before
# the last of them and refuse it.
k delete --ignore-not-found validatingadmissionpolicybinding,validatingadmissionpolicy safe-upgrades.gateway.networking.k8s.io >&2
experimental=()
for f in "$crds"/experimental/gateway.networking*.yaml; do
  [[ $f == *_vap_* ]] || experimental+=(-f "$f")
done
# The API server enforces a policy until its admission cache has seen the
# deletion: a server-side dry run tells when the CRDs would be accepted.
for _ in $(seq 1 60); do
  k apply --server-side --force-conflicts --dry-run=server "${experimental[@]}" >/dev/null 2>&1 && break
  sleep 1
done
k apply --server-side --force-conflicts "${experimental[@]}" >&2
k wait --for=condition=Established crd --all --timeout=60s >&2
# The first run's namespaces (gateway-conformance-*, gateway-api-*) must be
# gone: the suite cannot create objects in a namespace being deleted.
# (The list is read whole before it is searched: with pipefail, grep -q
# leaving early would fail kubectl on a closed pipe, and end the wait.)
for _ in $(seq 1 300); do
  namespaces=$(k get namespaces -o name)
  grep -q '^namespace/gateway-' <<<"$namespaces" || break
  sleep 1
done
run "$@"
