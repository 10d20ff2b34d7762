#!/usr/bin/env bash
# Benchmarks our controller (SQLite and PostgreSQL) against upstream's API
# (SQLite) in one run and writes the controller section of bench/RESULTS.md,
# leaving the agent's sections alone. Not part of CI.
#   bench/run-controller.sh [amphora-bench controller options, e.g. --only ours --lbs 1000]
set -euo pipefail
cd "$(dirname "$0")/.."

python="$(scripts/upstream-venv.sh)"
cargo build --release --quiet -p amphora-controller -p amphora-bench
pgdir="$(mktemp -d /tmp/controller-bench-pg.XXXXXX)"
trap 'scripts/postgres-server.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
postgres="$(scripts/postgres-server.sh start "$pgdir")"
target/release/amphora-bench controller --python "$python" --postgres "$postgres" "$@"
