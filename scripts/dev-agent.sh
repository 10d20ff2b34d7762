#!/usr/bin/env bash
# Runs the agent for real on 127.0.0.1:9443 with throwaway certificates in
# .dev/ (generated on first use). Options go to amphora-dev, e.g.
#   scripts/dev-agent.sh --port 9444 --netns amphora-dev
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh runtime
cargo build --release --quiet -p amphora-agent -p amphora-testkit --bins
exec target/release/amphora-dev --dir .dev "$@"
