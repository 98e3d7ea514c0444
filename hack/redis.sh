#!/usr/bin/env bash
# Makes sure redis-server is installed: the tests start their own instances
# on free loopback ports. Installs the Debian package when missing and
# running as root; otherwise says how.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "redis-server is not installed and this is not root: run 'sudo apt-get install -y redis-server', then 'make test' again" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "redis-server is not installed and apt-get is not available: install redis-server (6.2 or newer) with this system's package manager" >&2
  exit 1
fi
echo "redis: installing the Debian package redis-server" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends redis-server >&2
# The package may start a system instance; the tests do not use it.
command -v redis-server >/dev/null
