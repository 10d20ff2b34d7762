#!/usr/bin/env bash
# Installs the system packages the agent and its tests use, when missing.
# Usage: scripts/install-deps.sh [runtime|test]
set -euo pipefail
purpose=${1:-runtime}

missing=()
need() { # command package
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || missing+=("$2")
}
need haproxy haproxy
need ip iproute2
need nft nftables
need keepalived keepalived
need ipvsadm ipvsadm
if [ "$purpose" = test ]; then
    need python3 python3
    need mount mount
    # A throwaway VM for what this kernel lacks (scripts/vm-image.sh).
    need qemu-system-x86_64 qemu-system-x86
    need busybox busybox-static
    need cpio cpio
    need depmod kmod
    # The agent's Debian package (packaging/deb, tests/package.rs).
    need jq jq
    need dpkg-deb dpkg
    need systemd-analyze systemd
    need deb-systemd-helper init-system-helpers
    # A clean root to install the package into (tests/package.rs).
    need debootstrap debootstrap
    if command -v python3 >/dev/null 2>&1 && ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}; run as root to install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt-get update -qq
    apt-get install -y --no-install-recommends "${missing[@]}"
}
