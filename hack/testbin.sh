#!/usr/bin/env bash
# Builds the binaries the tests run for real -- kube-apiserver, etcd and kubectl --
# from source through the Go module proxy, into a cache folder outside the
# repository keyed by version, and prints that folder. A second run reuses it.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
STAGING_VERSION=${STAGING_VERSION:-v0.${K8S_VERSION#v1.}}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE=${TOOLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/toolgate}
BIN=$CACHE/testbin/kubernetes-$K8S_VERSION-etcd-$ETCD_VERSION

log() { echo "testbin: $*" >&2; }

if [[ -x $BIN/kube-apiserver && -x $BIN/etcd && -x $BIN/kubectl ]]; then
  echo "$BIN"
  exit 0
fi

export GOFLAGS=-mod=mod GOWORK=off
mkdir -p "$BIN"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ ! -x $BIN/kube-apiserver || ! -x $BIN/kubectl ]]; then
  log "building kube-apiserver and kubectl $K8S_VERSION (several minutes on the first run)"
  mkdir -p "$work/kubernetes"
  cd "$work/kubernetes"
  go mod init toolgate.dev/testbin/kubernetes >/dev/null 2>&1
  # k8s.io/kubernetes points each staging module at ./staging; point them at
  # the published release of the same version instead.
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  [[ -f $gomod ]] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod")
  [[ -n $staging ]] || { log "no staging modules found in $gomod"; exit 1; }
  for m in $staging; do
    go mod edit -replace "$m=$m@$STAGING_VERSION"
  done
  go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" >&2
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$BIN/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$BIN/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
  mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"
  mv "$BIN/kubectl.tmp" "$BIN/kubectl"
fi

if [[ ! -x $BIN/etcd ]]; then
  log "building etcd $ETCD_VERSION"
  mkdir -p "$work/etcd"
  cd "$work/etcd"
  go mod init toolgate.dev/testbin/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

echo "$BIN"
