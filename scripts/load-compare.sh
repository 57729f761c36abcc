#!/usr/bin/env bash
# Replays one trace window against a fresh `baton serve` per policy with `baton load`, and
# prints a summary of the live and simulated cold-start ratios (docs/load.md).
#
#   scripts/load-compare.sh OUT_DIR [baton load arguments...]
#
# POLICIES (default ttl,histogram,chain) and BATON (default target/release/baton) may be
# set. Each server is started on a free loopback port with its own data directory,
# process functions allowed, and stopped after its replay; OUT_DIR gets each replay's
# load-POLICY.json and .md and the server's log.
set -euo pipefail
out=${1:?usage: scripts/load-compare.sh OUT_DIR [baton load arguments...]}
shift
bin=${BATON:-target/release/baton}
policies=${POLICIES:-ttl,histogram,chain}
mkdir -p "$out"
for policy in ${policies//,/ }; do
  data=$(mktemp -d)
  log="$out/serve-$policy.log"
  "$bin" serve --listen 127.0.0.1:0 --no-auth --data-dir "$data" --allow-process-functions \
    --policy "$policy" >"$log" 2>&1 &
  pid=$!
  url=""
  for _ in $(seq 1 300); do
    url=$(sed -n 's/^baton listening on \([^ ]*\).*/\1/p' "$log" | head -1)
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
  done
  [ -n "$url" ] || { echo "baton serve did not start: see $log"; kill "$pid"; exit 1; }
  echo "== $policy ($url)"
  status=0
  "$bin" load --server "$url" --out "$out" "$@" | tee "$out/load-$policy.md" || status=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  [ "$status" = 0 ] || { echo "baton load failed for $policy (exit $status)"; exit "$status"; }
done
python3 - "$out" "$policies" <<'PY'
import json, sys
out, policies = sys.argv[1], sys.argv[2].split(",")
print("\n| policy | live cold-start ratio | sim, planned | live ÷ sim | sim, as served | live ÷ sim | live idle GB·s | sim idle GB·s |")
print("|---|---|---|---|---|---|---|---|")
for policy in policies:
    d = json.load(open(f"{out}/load-{policy}.json"))
    live, sim, served = d["live"], d["sim"], d["sim_as_served"]
    ratio = live["cold_starts"] / max(live["steps"], 1)
    def r(a, b):
        return f"{a / b:.2f}" if b else ("=" if a == 0 else "—")
    print(f"| {policy} | {ratio:.4f} | {sim['cold_start_ratio']:.4f} | {r(ratio, sim['cold_start_ratio'])} "
          f"| {served['cold_start_ratio']:.4f} | {r(ratio, served['cold_start_ratio'])} "
          f"| {live['idle_gb_s']:.1f} | {sim['idle_gb_s']:.1f} |")
PY
