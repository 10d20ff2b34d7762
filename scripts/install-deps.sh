#!/usr/bin/env bash
# Installs the system packages the agent and its tests use, when missing.
# Usage: scripts/install-deps.sh [runtime|test]
set -euo pipefail

want=(haproxy ip)
packages=(haproxy iproute2)

missing=()
for i in "${!want[@]}"; do
    command -v "${want[$i]}" >/dev/null 2>&1 || [ -x "/usr/sbin/${want[$i]}" ] || missing+=("${packages[$i]}")
done
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
