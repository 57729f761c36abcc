#!/usr/bin/env python3
"""Writes a synthetic trace of chains in baton's execution log schema v1 (JSONL), for
cross-checking `baton sim` against dslab-faas on chained traffic (docs/sim/validation.md).

    scripts/synthetic-chains.py OUT.jsonl [--hours 8] [--seed 1]

Five chains, each a request whose steps call one another in turn (`parent` is the caller's
invocation, `trace` the request), each 1 ms after its caller ends:
- `shop`:    api -> auth -> cart -> db, Poisson arrivals, one every 40 s on average;
- `upload`:  ingest -> resize -> thumb -> notify, bursts of 5-20 every 15 min (+-2 min);
- `report`:  report -> aggregate, hourly at :00 plus 0-59 s;
- `ping`:    ping -> cache, every 10 s (+-1 s);
- `sparse`:  audit -> archive, Poisson, one every 25 min on average.
Durations are lognormal around each step's median; memory is fixed per step. Seeded: the
same arguments write the same file. The day is 2026-01-01 UTC, from 00:00.
"""
import json
import math
import random
import sys

CHAINS = {
    "shop": [("api", 40, 128), ("auth", 15, 64), ("cart", 30, 128), ("db", 20, 256)],
    "upload": [("ingest", 80, 256), ("resize", 400, 512), ("thumb", 150, 256), ("notify", 10, 64)],
    "report": [("report", 2000, 512), ("aggregate", 5000, 1024)],
    "ping": [("ping", 2, 64), ("cache", 3, 128)],
    "sparse": [("audit", 300, 256), ("archive", 800, 512)],
}
DAY_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def entries(rng, hours):
    end = hours * 3600.0
    t = rng.expovariate(1 / 40)
    while t < end:
        yield t, "shop"
        t += rng.expovariate(1 / 40)
    for k in range(int(end // 900)):
        start = k * 900 + rng.uniform(-120, 120)
        for _ in range(rng.randint(5, 20)):
            at = start + rng.uniform(0, 30)
            if 0 <= at < end:
                yield at, "upload"
    for h in range(hours):
        yield h * 3600 + rng.uniform(0, 59), "report"
    t = 0.0
    while t < end:
        yield max(0.0, t + rng.uniform(-1, 1)), "ping"
        t += 10
    t = rng.expovariate(1 / 1500)
    while t < end:
        yield t, "sparse"
        t += rng.expovariate(1 / 1500)


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    out, hours, seed = args[0], 8, 1
    rest = args[1:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--hours":
            hours = int(value)
        elif flag == "--seed":
            seed = int(value)
        else:
            sys.exit(f"unknown option {flag}")
    rng = random.Random(seed)
    records = []
    invocation = 0
    for request, (at, chain) in enumerate(sorted(entries(rng, hours))):
        start = max(at, 0.0)
        parent = None
        for task, median_ms, mib in CHAINS[chain]:
            invocation += 1
            duration_us = max(1000, int(median_ms * 1000 * math.exp(rng.gauss(0, 0.3))))
            record = {
                "ts": DAY_NS + int(start * 1e9),
                "task": task,
                "invocation": str(invocation),
                "trace": f"{chain}-{request}",
                "duration_us": duration_us,
                "mem_peak_mib": mib,
            }
            if parent is not None:
                record["parent"] = parent
            records.append(record)
            parent = str(invocation)
            start += 0.001 + duration_us / 1e6
    records.sort(key=lambda r: r["ts"])
    with open(out, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    print(f"{out}: {len(records)} invocations", file=sys.stderr)


if __name__ == "__main__":
    main()
