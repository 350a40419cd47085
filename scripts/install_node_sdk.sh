#!/usr/bin/env bash
# Installs the real @sentry/node SDK used by tests/sdk/node/send.js.
# Idempotent and cheap when nothing changed: `npm ci` wipes node_modules, so it
# only runs when the lockfile is newer than the last successful install.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/sdk/node" && pwd)"
stamp="$dir/node_modules/.stacksift-installed"

if ! command -v npm >/dev/null 2>&1; then
    echo "install_node_sdk: npm not found; install Node.js >= 18 first" >&2
    exit 1
fi

if [ -f "$stamp" ] && [ "$stamp" -nt "$dir/package-lock.json" ] \
    && [ -d "$dir/node_modules/@sentry/node" ]; then
    echo "install_node_sdk: up to date ($dir)"
    exit 0
fi

cd "$dir"
npm ci --no-audit --no-fund --loglevel=error
touch "$stamp"
echo "install_node_sdk: installed @sentry/node $(node -p 'require("@sentry/node/package.json").version')"
