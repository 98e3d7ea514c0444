#!/usr/bin/env bash
# Builds Ory Hydra, the OAuth 2.0 / OpenID Connect authorization server that
# the OAuth tests (cmd/toolgate/hydra_test.go, through internal/testhydra) log
# in with, from source through the Go module proxy, into a cache folder outside
# the repository keyed by the pinned inputs below, and prints the binary's
# path. A second run reuses it.
#
# Hydra cannot be built with go install (its go.mod has a replace), so it is
# built in a throwaway module that requires it with the same replace. Its
# SQLite driver needs cgo: a C compiler must be installed. The tests read the
# path from TOOLGATE_HYDRA, which the Makefile's test target sets from this
# script's output; without it they run this script.
set -euo pipefail

# The pinned inputs: changing any of them builds into a new folder.
HYDRA_MODULE=github.com/ory/hydra/v2
HYDRA_VERSION=v2.3.0
# Hydra's own go.mod replaces pop with Ory's fork; a replace in a dependency's
# go.mod does not apply to the module that builds it, so it is repeated here.
POP_REPLACE=github.com/gobuffalo/pop/v6=github.com/ory/pop/v6@v6.2.1-0.20241121111754-e5dfc0f3344b
# The tags Hydra's own images are built with: the SQLite driver (DSN=memory).
BUILD_TAGS=sqlite,sqlite_omit_load_extension
LDFLAGS="-s -w -X $HYDRA_MODULE/driver/config.Version=$HYDRA_VERSION"

CACHE=${TOOLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/toolgate}
inputs_hash=$(printf '%s\n' "$HYDRA_MODULE" "$HYDRA_VERSION" "$POP_REPLACE" "$BUILD_TAGS" "$LDFLAGS" | sha256sum | cut -c1-12)
DIR=$CACHE/hydra/$HYDRA_VERSION-$inputs_hash

log() { echo "hydra: $*" >&2; }

if [[ -f $DIR/.complete && -x $DIR/hydra ]]; then
  echo "$DIR/hydra"
  exit 0
fi

command -v go >/dev/null 2>&1 || {
  log "go is not installed: Hydra is built from source with the Go toolchain; install Go, then run this again"
  exit 1
}
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=1
cc=$(go env CC)
command -v "${cc%% *}" >/dev/null 2>&1 || {
  log "no C compiler ('$cc' not found): Hydra's SQLite driver is built with cgo; run 'apt-get install -y gcc' (Debian), then run this again"
  exit 1
}

mkdir -p "$CACHE/hydra"
work=$(mktemp -d "$CACHE/hydra/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir "$work/mod"

# Runs a step with its output in the build log; on failure says which step
# failed, why it may have, and shows the end of the log.
step() {
  local what=$1 hint=$2
  shift 2
  if ! (cd "$work/mod" && "$@") >>"$work/build.log" 2>&1; then
    log "$what failed ($hint); its output ends with:"
    tail -n 30 "$work/build.log" >&2
    exit 1
  fi
}

log "building Hydra $HYDRA_VERSION with -tags $BUILD_TAGS into $DIR (first run only: a few minutes)"
start=$SECONDS
step "go mod init" "see below" go mod init toolgate.dev/testbin/hydra
step "go mod edit" "see below" go mod edit -require="$HYDRA_MODULE@$HYDRA_VERSION" -replace="$POP_REPLACE"
step "go get $HYDRA_MODULE@$HYDRA_VERSION" "is the Go module proxy ($(go env GOPROXY)) reachable?" \
  go get "$HYDRA_MODULE@$HYDRA_VERSION"
step "go build" "a cgo error here usually means a missing C compiler or C headers (apt-get install -y gcc libc6-dev)" \
  go build -trimpath -tags "$BUILD_TAGS" -ldflags "$LDFLAGS" -o "$work/hydra" "$HYDRA_MODULE"

version=$("$work/hydra" version 2>&1 | sed -n 's/^Version:[[:space:]]*//p')
[[ $version == "$HYDRA_VERSION" ]] || {
  log "the built binary says its version is '$version', want $HYDRA_VERSION"
  exit 1
}
rm -rf "$work/mod" "$work/build.log"
touch "$work/.complete"
# Another run may have finished the same folder meanwhile: keep its copy.
if ! mv -T "$work" "$DIR" 2>/dev/null; then
  [[ -f $DIR/.complete ]] || { rm -rf "$DIR" && mv -T "$work" "$DIR"; }
fi
log "built $DIR/hydra in $((SECONDS - start))s"
echo "$DIR/hydra"
