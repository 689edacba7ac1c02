#!/usr/bin/env bash
# Install what the tests and the lab need: Debian packages (as root, only when
# missing) and the pinned Python packages in .venv (only when requirements.txt
# changed). A second run installs nothing and takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, one per program the project runs on this machine:
# dockerd, the PostgreSQL server and pg_dump, haproxy, sshd, debootstrap
# (builds the authentik stand-in image), openssl, ip, curl, socat (HAProxy runtime API).
PACKAGES=(docker.io postgresql postgresql-client haproxy openssh-server debootstrap openssl iproute2 curl ca-certificates socat)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: install them as root: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "--> installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
  apt-get update -qq
  # policy-rc.d keeps the packages from starting their services: the project
  # starts what it needs itself, on its own ports.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d.authops
  chmod +x /usr/sbin/policy-rc.d.authops
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    cp /usr/sbin/policy-rc.d.authops /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  rm -f /usr/sbin/policy-rc.d.authops
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  echo "--> installing Python packages into .venv"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$wanted" >"$stamp"
fi
echo "setup: ok"
