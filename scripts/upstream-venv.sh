#!/usr/bin/env bash
# Creates (once) a virtualenv with upstream Octavia, for compatibility tests
# and the benchmark, and prints its python. Kept under target/ so repeated
# runs on one machine reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/upstream-venv
if ! "$venv/bin/python" -c "import octavia, pyroute2" >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check octavia pyroute2 >&2
fi
echo "$PWD/$venv/bin/python"
