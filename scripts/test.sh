#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and integration tests (real
# haproxy, real mutual TLS, real network namespaces). Needs root for the
# namespaces; installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null && exec sudo -E env "PATH=$PATH" "$0" "$@"
    echo "the tests create network namespaces: run as root" >&2
    exit 1
fi

scripts/install-deps.sh test
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace "$@"
