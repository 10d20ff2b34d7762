#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and integration tests (real
# haproxy, real mutual TLS, real network namespaces) and the compatibility
# tests against upstream Octavia's own code (in a virtualenv this script
# creates under target/), and the tests that need IPVS in a throwaway VM
# (scripts/vm-image.sh). The controller's tests run on SQLite and on a
# private PostgreSQL server this script starts (scripts/postgres-server.sh),
# and drive it with real OpenStack clients and a real Keystone from a second
# virtualenv (scripts/clients-venv.sh). Needs root for the namespaces;
# installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null && exec sudo -E env "PATH=$PATH" "$0" "$@"
    echo "the tests create network namespaces: run as root" >&2
    exit 1
fi

scripts/install-deps.sh test
mkdir -p target
# Upstream's virtualenv builds while cargo compiles.
scripts/upstream-venv.sh > target/upstream-python.txt 2> target/upstream-venv.log &
venv=$!
# So does the VM image (Debian's kernel, for tests that need IPVS).
scripts/vm-image.sh > target/vm-dir.txt 2> target/vm-image.log &
vm=$!
# And the OpenStack clients' virtualenv (openstacksdk, the CLI, Keystone).
scripts/clients-venv.sh > target/clients-python.txt 2> target/clients-venv.log &
clients=$!
# A private PostgreSQL server for the controller's tests, stopped on exit.
pgdir=$(mktemp -d /tmp/amphora-pg.XXXXXX)
trap 'scripts/postgres-server.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
AMPHORA_TEST_POSTGRES="$(scripts/postgres-server.sh start "$pgdir" 2> target/postgres.log)" || {
    cat target/postgres.log >&2
    echo "cannot start PostgreSQL" >&2
    exit 1
}
export AMPHORA_TEST_POSTGRES

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-run

if ! wait "$venv"; then
    cat target/upstream-venv.log >&2
    echo "cannot create the upstream virtualenv" >&2
    exit 1
fi
UPSTREAM_PYTHON="$(cat target/upstream-python.txt)"
export UPSTREAM_PYTHON
if ! wait "$vm"; then
    cat target/vm-image.log >&2
    echo "cannot prepare the VM image" >&2
    exit 1
fi
AMPHORA_VM_DIR="$(cat target/vm-dir.txt)"
export AMPHORA_VM_DIR
if ! wait "$clients"; then
    cat target/clients-venv.log >&2
    echo "cannot create the clients virtualenv" >&2
    exit 1
fi
CLIENTS_PYTHON="$(head -n 1 target/clients-python.txt)"
export CLIENTS_PYTHON
# cargo-nextest (on the CI machines) runs the tests of all binaries side by
# side (.config/nextest.toml); plain cargo test runs one binary at a time.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --run-ignored all "$@"
    cargo test --workspace --doc
else
    cargo test --workspace "$@" -- --include-ignored
fi
