#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
bash scripts/install_node_sdk.sh
# Tools the tests drive for real: wrk (load), prometheus (scrapes a test server),
# chromium and its chromedriver (renders /docs; Debian's package names).
for pkg in wrk:wrk prometheus:prometheus chromium:chromium chromedriver:chromium-driver; do
  command -v "${pkg%%:*}" >/dev/null || apt-get install -y -q --no-install-recommends "${pkg#*:}" \
    || { apt-get update -q && apt-get install -y -q --no-install-recommends "${pkg#*:}"; }
done
.venv/bin/ruff check .
# Redis and Elasticsearch for the distributed-mode tests (idempotent; they fail, never skip,
# when these cannot start).
bash scripts/services.sh start
exec .venv/bin/pytest "$@"
