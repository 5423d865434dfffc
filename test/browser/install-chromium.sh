#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser tests, when it is missing. The tests
# drive it with playwright-core, which downloads no browser of its own.
#
# Exit status: 0 when /usr/bin/chromium is present (or was installed), 1 when it cannot be
# installed (not root, or apt-get failed).
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "chromium is missing and installing it needs root: apt-get install chromium" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Another apt-get may hold the lock for a while on a shared machine: wait for it.
apt_get() {
  apt-get -o DPkg::Lock::Timeout=300 "$@"
}
if ! apt_get install -y --no-install-recommends chromium >/dev/null; then
  apt_get update >/dev/null
  apt_get install -y --no-install-recommends chromium >/dev/null
fi
[[ -x /usr/bin/chromium ]]
