#!/usr/bin/env bash
# Builds the previous release -- the version and commit hack/previous-release
# names -- from source, as that commit's own `make release` builds it, into a
# cache folder outside the repository keyed by version and commit, and
# prints that folder. A second run reuses it. make e2e upgrades from it
# (conformance/upgrade_test.go).
#
# The folder holds:
#   src/    the commit's tree (git archive COMMIT): its chart and its
#           config/local/values.yaml
#   dist/   what its hack/release wrote for linux/amd64 alone: the binary
#           (stamped with the version and commit), the image
#           toolgate-image-linux-amd64.tar (tagged
#           ghcr.io/toolgate/toolgate:VERSION), the chart
#           toolgate-VERSION.tgz (its image tag defaults to VERSION),
#           install.yaml and checksums.txt
#
# The commit is read from the repository's history, not from a tag: a clone
# of main has it (a shallow one may not: git fetch --unshallow).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${TOOLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/toolgate}

log() { echo "previous-release: $*" >&2; }
die() { log "$*"; exit 1; }

read -r version commit < <(grep -v '^#' "$root/hack/previous-release" | grep -v '^[[:space:]]*$' | head -n 1)
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+ && $commit =~ ^[0-9a-f]{40}$ ]] ||
  die "hack/previous-release must hold one line 'VERSION COMMIT' (v0.1.0 and 40 hex digits), not '$version $commit'"

dir=$CACHE/releases/$version-$commit
if [[ -f $dir/dist/checksums.txt ]]; then
  echo "$dir"
  exit 0
fi

git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null ||
  die "commit $commit ($version) is not in this clone's history: fetch it (git fetch --unshallow, or git fetch origin $commit)"

log "building $version (commit ${commit:0:12}) from source into $dir"
mkdir -p "$CACHE/releases"
work=$(mktemp -d "$CACHE/releases/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
git -C "$root" archive "$commit" | tar -x -C "$work/src"
# Its own release command, for the image's platform only. The tree has no
# .git: the version and commit are stamped by the release itself.
(
  cd "$work/src"
  export GOWORK=off GOFLAGS="${GOFLAGS:-} -buildvcs=false"
  go run ./hack/release --version "$version" --commit "$commit" --platforms linux/amd64 --out "$work/dist" >&2
)
[[ -f $work/dist/checksums.txt ]] || die "$version's release wrote no checksums.txt"
chmod 755 "$work"
rm -rf "$dir"
mv "$work" "$dir"
trap - EXIT
echo "$dir"
