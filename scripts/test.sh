#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
bash scripts/install_node_sdk.sh
command -v wrk >/dev/null || { apt-get install -y -q wrk || { apt-get update -q && apt-get install -y -q wrk; }; }
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
