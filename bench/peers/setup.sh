#!/usr/bin/env bash
# Installs the peer runtimes for `baton bench peers` into $1 (default .peers, ignored by git):
# serverless@3 + serverless-offline@13 (npm) and functions-framework (PyPI, in a venv).
# Idempotent; exits non-zero naming what failed.
set -euo pipefail
dir="${1:-.peers}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

if [ "${SKIP_SLS:-0}" != 1 ] && [ ! -x "$dir/node/node_modules/.bin/serverless" ]; then
  command -v npm >/dev/null || { echo "setup: npm not found (needed for serverless-offline)" >&2; exit 2; }
  mkdir -p "$dir/node"
  (cd "$dir/node" && [ -f package.json ] || echo '{"private":true}' > package.json)
  (cd "$dir/node" && npm install --no-audit --no-fund --loglevel=error serverless@3 serverless-offline@13 >&2) \
    || { echo "setup: npm install serverless@3 serverless-offline@13 failed" >&2; exit 3; }
fi

if [ "${SKIP_FF:-0}" != 1 ] && [ ! -x "$dir/venv/bin/functions-framework" ]; then
  python3 -m venv "$dir/venv" || { echo "setup: python3 -m venv failed" >&2; exit 4; }
  "$dir/venv/bin/pip" install -q functions-framework >&2 \
    || { echo "setup: pip install functions-framework failed" >&2; exit 5; }
fi
echo "$dir"
