#!/usr/bin/env bash
# Benchmarks our agent against upstream's in one run and writes
# bench/RESULTS.md. Needs root (namespaces). Not part of CI.
#   bench/run.sh [amphora-bench options, e.g. --only ours --rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh test
venv=bench/.venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import octavia, pyroute2" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet octavia pyroute2
fi
cargo build --release --quiet -p amphora-agent -p amphora-bench
exec target/release/amphora-bench --python "$venv/bin/python" "$@"
