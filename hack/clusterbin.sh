#!/usr/bin/env bash
# Builds what a local single-node cluster runs beside the test binaries of
# hack/testbin.sh -- kubelet, kube-controller-manager, kube-scheduler and
# kube-proxy from the same Kubernetes release, and the CNI plugins bridge,
# host-local, loopback and portmap -- from source through the Go module
# proxy, into a cache folder keyed by version, and prints that folder. A
# second run reuses it. The four Kubernetes binaries are built by one go
# build, so that they share its work (about 20 minutes cold on 2 cores).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
STAGING_VERSION=${STAGING_VERSION:-v0.${K8S_VERSION#v1.}}
CNI_VERSION=${CNI_VERSION:-v1.7.1}
CACHE=${TOOLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/toolgate}
BIN=$CACHE/clusterbin/kubernetes-$K8S_VERSION-cni-$CNI_VERSION

log() { echo "clusterbin: $*" >&2; }

k8s=(kubelet kube-controller-manager kube-scheduler kube-proxy)
cni=(bridge host-local loopback portmap)

complete() {
  local b
  for b in "${k8s[@]}"; do [[ -x $BIN/$b ]] || return 1; done
  for b in "${cni[@]}"; do [[ -x $BIN/cni/$b ]] || return 1; done
}

if complete; then
  echo "$BIN"
  exit 0
fi

export GOFLAGS=-mod=mod GOWORK=off
mkdir -p "$BIN/cni"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

missing=()
for b in "${k8s[@]}"; do [[ -x $BIN/$b ]] || missing+=("$b"); done
if ((${#missing[@]})); then
  log "building ${missing[*]} $K8S_VERSION (about 20 minutes on the first run)"
  mkdir -p "$work/kubernetes"
  cd "$work/kubernetes"
  go mod init toolgate.dev/clusterbin/kubernetes >/dev/null 2>&1
  # As hack/testbin.sh: point k8s.io/kubernetes' staging modules at their
  # published release of the same version.
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  [[ -f $gomod ]] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod")
  [[ -n $staging ]] || { log "no staging modules found in $gomod"; exit 1; }
  for m in $staging; do
    go mod edit -replace "$m=$m@$STAGING_VERSION"
  done
  go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  pkgs=()
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  go get "${pkgs[@]/%/@$K8S_VERSION}" >&2
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$work/out"
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$work/out/" "${pkgs[@]}"
  for b in "${missing[@]}"; do mv "$work/out/$b" "$BIN/$b"; done
fi

if ! complete; then
  log "building the CNI plugins ${cni[*]} $CNI_VERSION"
  mkdir -p "$work/cni"
  cd "$work/cni"
  go mod init toolgate.dev/clusterbin/cni >/dev/null 2>&1
  go get "github.com/containernetworking/plugins@$CNI_VERSION" >&2
  pkgs=()
  for b in bridge host-local portmap loopback; do
    case $b in
      bridge) pkgs+=(github.com/containernetworking/plugins/plugins/main/bridge) ;;
      loopback) pkgs+=(github.com/containernetworking/plugins/plugins/main/loopback) ;;
      host-local) pkgs+=(github.com/containernetworking/plugins/plugins/ipam/host-local) ;;
      portmap) pkgs+=(github.com/containernetworking/plugins/plugins/meta/portmap) ;;
    esac
  done
  mkdir -p "$work/cni-out"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/cni-out/" "${pkgs[@]}"
  for b in "${cni[@]}"; do mv "$work/cni-out/$b" "$BIN/cni/$b"; done
fi

echo "$BIN"
