#!/usr/bin/env bash
# Installs, from Debian packages, what the private mail-server harness needs: Dovecot (IMAP +
# LMTP), Postfix, swaks, openssl and python3. Only checks when everything is already present.
#
# The packages' own system daemons are never left running: a policy-rc.d that forbids starting
# services is put in place for the install (if the machine has none), Postfix is preseeded to
# "No configuration", and any system Dovecot/Postfix master that still came up is stopped by
# the pid in its pid file. The harness runs its own instances from a private directory.
#
# Exit status: 0 when everything is present (or was installed), 1 when something is missing
# and cannot be installed (not root, or apt-get failed).
set -euo pipefail

# package -> a file that proves it is installed
declare -A PROBE=(
  [dovecot-core]=/usr/sbin/dovecot
  [dovecot-imapd]=/usr/lib/dovecot/imap
  [dovecot-lmtpd]=/usr/lib/dovecot/lmtp
  [postfix]=/usr/lib/postfix/sbin/master
)
# package -> a command that proves it is installed (anywhere on PATH)
declare -A COMMAND=(
  [swaks]=swaks
  [openssl]=openssl
  [python3]=python3
)

missing=()
for pkg in dovecot-core dovecot-imapd dovecot-lmtpd postfix; do
  [[ -x ${PROBE[$pkg]} ]] || missing+=("$pkg")
done
for pkg in swaks openssl python3; do
  command -v "${COMMAND[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
# postfix's package must also have created its users; dovecot's its login/internal users.
if [[ ${#missing[@]} -eq 0 ]]; then
  for user in postfix dovecot dovenull; do
    if ! getent passwd "$user" >/dev/null; then
      missing+=("$([[ $user == postfix ]] && echo postfix || echo dovecot-core)")
    fi
  done
fi

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

# de-duplicate, keep order
declare -A seen=()
pkgs=()
for pkg in "${missing[@]}"; do
  [[ -n ${seen[$pkg]:-} ]] && continue
  seen[$pkg]=1
  pkgs+=("$pkg")
done

if [[ $EUID -ne 0 ]]; then
  echo "mailbus test servers: missing ${pkgs[*]}; install them as root with:" \
    "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${pkgs[*]}" \
    "(preseed postfix/main_mailer_type to 'No configuration')" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "mailbus test servers: missing ${pkgs[*]} and no apt-get on this machine to install them" >&2
  exit 1
fi

echo "mailbus test servers: installing ${pkgs[*]} from Debian packages" >&2

policy=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
  if [[ $created_policy -eq 1 ]]; then
    rm -f "$policy"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# temporary, from mailbus test/servers/install.sh: start no services\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=1
fi

echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections

export DEBIAN_FRONTEND=noninteractive
# wait for a dpkg lock held by a parallel run instead of failing at once
lock=(-o DPkg::Lock::Timeout=300)
apt-get "${lock[@]}" update -q >&2
apt-get "${lock[@]}" install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${pkgs[@]}" >&2

# Belt and braces: if a package script started a system daemon anyway, stop it by its pid.
stop_pidfile() {
  local file=$1 pid
  [[ -r $file ]] || return 0
  pid=$(tr -dc '0-9' <"$file")
  [[ -n $pid ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  echo "mailbus test servers: stopping system daemon pid $pid (from $file)" >&2
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}
stop_pidfile /run/dovecot/master.pid
stop_pidfile /var/spool/postfix/pid/master.pid

still=()
for pkg in dovecot-core dovecot-imapd dovecot-lmtpd postfix; do
  [[ -x ${PROBE[$pkg]} ]] || still+=("$pkg")
done
for pkg in swaks openssl python3; do
  command -v "${COMMAND[$pkg]}" >/dev/null 2>&1 || still+=("$pkg")
done
if [[ ${#still[@]} -gt 0 ]]; then
  echo "mailbus test servers: still missing after apt-get install: ${still[*]}" >&2
  exit 1
fi
echo "mailbus test servers: installed ${pkgs[*]}" >&2
