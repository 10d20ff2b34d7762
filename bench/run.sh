#!/usr/bin/env bash
# Benchmarks our agent against upstream's in one run and writes
# bench/RESULTS.md. Needs root (namespaces). Not part of CI.
#   bench/run.sh [amphora-bench options, e.g. --only ours --rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh test
python="$(scripts/upstream-venv.sh)"
cargo build --release --quiet -p amphora-agent -p amphora-bench
exec target/release/amphora-bench --python "$python" "$@"
