#!/usr/bin/env bash
# Creates (once) a virtualenv with upstream Octavia, for compatibility tests
# and the benchmark, and prints its python. Kept under target/ so repeated
# runs on one machine reuse it.
#
# Versions are pinned, so every run tests against the same upstream:
# octavia is the release docs/compatibility.md describes; its metadata does
# not list pyroute2, which its amphora agent imports (plug.py,
# amphora_info.py), and 0.7.12 is the last release of the synchronous API
# that code was written against. psycopg2-binary is the PostgreSQL driver
# upstream's health manager and migrations use in the ingest benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
octavia=19.0.0
pyroute2=0.7.12
psycopg2=2.9.10
venv=target/upstream-venv
if ! "$venv/bin/python" - "$octavia" "$pyroute2" "$psycopg2" >/dev/null 2>&1 <<'PY'; then
import sys
from importlib.metadata import version
import octavia, pyroute2, psycopg2  # noqa: F401
sys.exit(version("octavia") != sys.argv[1] or version("pyroute2") != sys.argv[2]
         or version("psycopg2-binary") != sys.argv[3])
PY
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "octavia==$octavia" "pyroute2==$pyroute2" \
        "psycopg2-binary==$psycopg2" >&2
fi
echo "$PWD/$venv/bin/python"
