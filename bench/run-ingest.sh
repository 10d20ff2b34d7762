#!/usr/bin/env bash
# Heartbeat ingest: our controller's health role (SQLite and PostgreSQL)
# against upstream's octavia-health-manager (PostgreSQL), the same generator
# driving both, in one run; writes the ingest section of bench/RESULTS.md,
# leaving the others alone. Not part of CI.
#   bench/run-ingest.sh [amphora-bench ingest options, e.g. --members 1 --duration 3]
# Upstream keeps up with a few hundred heartbeats/s on this 2-core machine,
# so the rates start low enough for it to keep up with some (a ratio, not
# only a bound); ours goes on up to 20,000. A --rates given here wins.
set -euo pipefail
cd "$(dirname "$0")/.."

python="$(scripts/upstream-venv.sh)"
cargo build --release --quiet -p amphora-controller -p amphora-bench
pgdir="$(mktemp -d /tmp/ingest-bench-pg.XXXXXX)"
trap 'scripts/postgres-server.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
postgres="$(scripts/postgres-server.sh start "$pgdir")"
rates=(--rates "100,250,500,1000,2000,5000,10000,15000,20000,25000,30000")
for arg in "$@"; do
    case "$arg" in --rates | --rates=*) rates=() ;; esac
done
target/release/amphora-bench ingest --python "$python" --postgres "$postgres" "${rates[@]}" "$@"
