#!/usr/bin/env python3
"""The memory-bound frontier table of docs/sim/README.md, from `baton sim` results.csv files.

    scripts/frontier.py LABEL=DIR[,DIR...] [LABEL=DIR...]

For each label (a trace window) and each node memory found in its folders' results.csv:
`chain`'s best point (lowest cold-start ratio), the best baseline point holding no more
idle memory (`oracle` and `none` are not baselines), their ratio, and how many `chain`
points some baseline point beats on both cold starts and idle memory.
"""
import csv
import sys

NOT_BASELINES = {"chain", "oracle", "none"}


def rows(dirs):
    out = []
    for d in dirs:
        with open(f"{d}/results.csv") as f:
            for r in csv.DictReader(f):
                out.append(
                    {
                        "policy": r["policy"],
                        "knob": r["knob"],
                        "gib": int(r["memory_mib"]) // 1024,
                        "cold": float(r["cold_start_ratio"]),
                        "idle": float(r["idle_gb_s"]),
                    }
                )
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("| trace | GiB | chain's best point (cold ratio at idle GB·s) "
          "| best baseline point holding no more | ratio | chain points dominated |")
    print("|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        label, _, dirs = arg.partition("=")
        data = rows(dirs.split(","))
        for gib in sorted({r["gib"] for r in data}):
            at = [r for r in data if r["gib"] == gib]
            chain = [r for r in at if r["policy"] == "chain"]
            base = [r for r in at if r["policy"] not in NOT_BASELINES]
            if not chain or not base:
                continue
            best = min(chain, key=lambda r: (r["cold"], r["idle"]))
            under = [r for r in base if r["idle"] <= best["idle"]]
            rival = min(under, key=lambda r: (r["cold"], r["idle"])) if under else None
            dominated = sum(
                1
                for c in chain
                if any(
                    b["cold"] <= c["cold"]
                    and b["idle"] <= c["idle"]
                    and (b["cold"] < c["cold"] or b["idle"] < c["idle"])
                    for b in base
                )
            )

            def point(r):
                return f"{r['policy']} {r['knob']}: {r['cold']:.4f} at {r['idle'] / 1000:.1f}k"

            ratio = f"{best['cold'] / rival['cold']:.2f}" if rival and rival["cold"] else "—"
            print(
                f"| {label} | {gib} | {point(best)} | {point(rival) if rival else 'none'} "
                f"| {ratio} | {dominated} of {len(chain)} |"
            )


if __name__ == "__main__":
    main()
