#!/usr/bin/env bash
# Makes sure redis-server, redis-sentinel and redis-cli are installed: the
# tests start their own standalone, Sentinel and Cluster instances on free
# loopback ports. Installs the missing Debian packages when running as root
# (then stops the system instances they start); otherwise says how.
set -euo pipefail

# The binaries the tests run, and the Debian package of each.
declare -A packages=(
  [redis-server]=redis-server
  [redis-sentinel]=redis-sentinel
  [redis-cli]=redis-tools
)

missing=()
for binary in redis-server redis-sentinel redis-cli; do
  if ! command -v "$binary" >/dev/null 2>&1; then
    missing+=("${packages[$binary]}")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "redis: the Debian packages ${missing[*]} are missing and this is not root: run 'sudo apt-get install -y ${missing[*]}', then 'make test' again" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "redis: ${missing[*]} missing and apt-get is not available: install Redis 6.2 or newer, with redis-sentinel and redis-cli, with this system's package manager" >&2
  exit 1
fi
echo "redis: installing the Debian packages ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

# The packages may start system instances on the default ports; the tests
# do not use them. Stopping them may fail (no init system in a container):
# that is fine.
if command -v service >/dev/null 2>&1; then
  for instance in redis-server redis-sentinel; do
    service "$instance" stop >/dev/null 2>&1 || true
  done
fi

for binary in redis-server redis-sentinel redis-cli; do
  command -v "$binary" >/dev/null
done
