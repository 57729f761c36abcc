#!/usr/bin/env bash
# HTTP fuzzing: Schemathesis (PyPI, pinned) against a live `baton serve` on loopback, built
# by the test run before it. A bounded number of examples per route; it fails on any 5xx,
# any response that does not match docs/openapi.json, and any schema-violating request the
# server accepts. The server is started here and stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

baton=target/debug/baton
[ -x "$baton" ] || cargo build -q -p baton-cli
venv=.ci/.venv
bash .ci/venv.sh

data=$(mktemp -d)
log="$data/server.log"
token="fuzz-$RANDOM$RANDOM"
"$baton" serve --listen 127.0.0.1:0 --data-dir "$data/data" --token "$token" 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
url=""
for _ in $(seq 1 100); do
  url=$(sed -n 's/^baton listening on \(http:[^ ]*\).*/\1/p' "$log")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$log"; echo "the server did not start"; exit 1; }

# Real functions, so that invoke, graph and predictions reach their logic.
"$baton" deploy --server "$url" --token "$token" \
  examples/order/validate.toml examples/order/reserve.toml examples/order/reject.toml >/dev/null

"$venv/bin/schemathesis" run docs/openapi.json --url "$url" \
  -H "Authorization: Bearer $token" \
  --max-examples "${FUZZ_EXAMPLES:-25}" --seed 20261130 \
  --checks all --exclude-checks positive_data_acceptance \
  --no-color
