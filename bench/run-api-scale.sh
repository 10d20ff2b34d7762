#!/usr/bin/env bash
# The controller's API at fleet scale: 100,000 amphorae on PostgreSQL served
# by three API processes, ours and upstream's, in one run; writes the
# API-at-scale section of bench/RESULTS.md. Not part of CI.
#   bench/run-api-scale.sh [amphora-bench api-scale options, e.g. --only ours --amphorae 10000]
set -euo pipefail
cd "$(dirname "$0")/.."

python="$(scripts/upstream-venv.sh)"
cargo build --release --quiet -p amphora-controller -p amphora-bench
pgdir="$(mktemp -d /tmp/api-scale-bench-pg.XXXXXX)"
trap 'scripts/postgres-server.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
postgres="$(scripts/postgres-server.sh start "$pgdir")"
target/release/amphora-bench api-scale --python "$python" --postgres "$postgres" "$@"
