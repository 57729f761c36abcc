#!/usr/bin/env bash
# Mining with an answer key: runs `baton sim` on a trace whose callers are known with its
# callers kept, dropped, and mined back (with and without trace ids), and prints the links'
# precision and recall and the share of the known links' cold-start saving the mined ones
# recover (docs/sim/mining.md).
#
#   scripts/mining-check.sh OUT_DIR [baton sim arguments...]
#
# BATON (default target/release/baton) may be set; OUT_DIR gets one folder per mode.
set -euo pipefail
out=${1:?usage: scripts/mining-check.sh OUT_DIR [baton sim arguments...]}
shift
bin=${BATON:-target/release/baton}
mkdir -p "$out"
for mode in keep drop mine drop-parents mine-parents; do
  "$bin" sim "$@" --callers "$mode" --out "$out/$mode" >/dev/null 2>"$out/$mode.log" ||
    { cat "$out/$mode.log"; exit 1; }
done
python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
def rows(mode):
    d = json.load(open(f"{out}/{mode}/results.json"))
    return d["header"], {(r["policy"], r["knob"], r["memory_mib"]): r for r in d["results"]}
_, keep = rows("keep")
print("| policy | knob | GiB | known | none | mined | saving recovered | none, trace ids kept | mined inside requests | saving recovered | links mined (precision / recall / calls) | inside requests |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
modes = {m: rows(m) for m in ["drop", "mine", "drop-parents", "mine-parents"]}
def links(header):
    m = re.search(r"precision ([0-9.]+), recall ([0-9.]+), calls whose link was mined ([0-9.]+)", header)
    return " / ".join(m.groups()) if m else "?"
for key, k in keep.items():
    c = {m: modes[m][1][key]["cold_start_ratio"] for m in modes}
    base = k["cold_start_ratio"]
    def rec(none, mined):
        return f"{(none - mined) / (none - base):.0%}" if none > base else "—"
    print(f"| {key[0]} | {key[1]:g} | {key[2] / 1024:g} | {base:.4f} | {c['drop']:.4f} | {c['mine']:.4f} | {rec(c['drop'], c['mine'])} "
          f"| {c['drop-parents']:.4f} | {c['mine-parents']:.4f} | {rec(c['drop-parents'], c['mine-parents'])} "
          f"| {links(modes['mine'][0])} | {links(modes['mine-parents'][0])} |")
PY
