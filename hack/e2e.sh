#!/usr/bin/env bash
# Runs toolgate's own end-to-end suite (conformance/, Ginkgo) against
# toolgate deployed in a real cluster: the suite's Gateway is of the
# cluster's GatewayClass "toolgate" and its proxies are pods (--pods).
#
# With $KUBECONFIG set, it runs against that cluster (kind, a real one),
# which must run toolgate with its image pullable there; set
# E2E_BACKEND_ADDRESS to an IP address of this machine that the cluster's
# pods reach: the suite's MCP backend, issuer and redis-server listen on it.
# Otherwise it uses the local cluster of hack/cluster: one that is up
# already is reused and left up; otherwise one is brought up, toolgate
# deployed into it, and taken down again at the end. The suite runs inside the cluster's
# network namespace, where its MCP backend and OpenID issuer listen on the
# node's address for the pods to reach. On the local cluster, a second run
# of the suite follows: the upgrade spec (label upgrade), which replaces
# toolgate with the previous release (hack/previous-release, built from
# source by hack/previous-release.sh, its image loaded into the node),
# upgrades it to this checkout's chart with helm upgrade under load, and
# leaves the cluster as hack/cluster deploy does. Extra arguments go to
# both runs, e.g. -ginkgo.focus='Proxy pods'.
set -euo pipefail
cd "$(dirname "$0")/.."

D=${TOOLGATE_CLUSTER_DIR:-/var/lib/toolgate-cluster}
NODE_IP=10.200.0.10

work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
bin=$work/e2e.test
go test -c -o "$bin" ./conformance
assets=$(./hack/testbin.sh)
# The specs that toolgate's pods can serve: not those that run toolgate
# processes of their own or need the suite's own API server (make test runs
# those), nor the upgrade spec, which runs alone (below). See
# conformance/README.md.
filter='!processes && !own-apiserver && !upgrade'

# Another cluster runs the first run only: the upgrade spec would replace
# that cluster's toolgate (and delete its MCPServers with the CRD), and
# needs the previous release's image loaded into its nodes.
if [[ -n ${KUBECONFIG:-} ]]; then
  [[ -n ${E2E_BACKEND_ADDRESS:-} ]] || { echo "e2e: with \$KUBECONFIG, set E2E_BACKEND_ADDRESS to an IP address of this machine that the cluster's pods reach" >&2; exit 1; }
  KUBEBUILDER_ASSETS="$assets" "$bin" -test.v -test.timeout 30m \
    -kubeconfig "$KUBECONFIG" -pods -backend-address "$E2E_BACKEND_ADDRESS" -ginkgo.label-filter="$filter" "$@"
  exit
fi

if ./hack/cluster status >/dev/null 2>&1; then
  echo "e2e: using the local cluster that is up" >&2
  ./hack/cluster deploy
else
  trap 'cleanup; ./hack/cluster down' EXIT
  ./hack/cluster up >/dev/null
  ./hack/cluster deploy
fi
# The suite creates a GatewayClass whose proxies share its own
# redis-server on the node's address, which the Redis outage spec stops and
# starts.
./hack/cluster exec env KUBEBUILDER_ASSETS="$assets" "$bin" -test.v -test.timeout 30m \
  -kubeconfig "$D/kubeconfig/admin" -pods -backend-address "$NODE_IP" -ginkgo.label-filter="$filter" "$@"

# The upgrade from the previous release, last: it uninstalls toolgate,
# installs the previous release's chart and image, and upgrades to this
# checkout's chart and the image deploy loaded.
previous=$(./hack/previous-release.sh)
./hack/cluster load "$previous/dist/toolgate-image-linux-amd64.tar"
helm=$(go tool -n -modfile=hack/helm/go.mod helm)
./hack/cluster exec env KUBEBUILDER_ASSETS="$assets" "$bin" -test.v -test.timeout 30m \
  -kubeconfig "$D/kubeconfig/admin" -pods -backend-address "$NODE_IP" \
  -previous-release "$previous" -helm "$helm" -ginkgo.label-filter=upgrade "$@"
