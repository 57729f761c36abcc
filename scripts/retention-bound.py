#!/usr/bin/env python3
"""Retention alone, without pre-warming: replays the arrivals `baton sim --export-arrivals`
wrote on a node of MEMORY_MIB, every call cold-starting in COLD_MS when no idle instance of
its function is left, running instances holding their memory (over the limit when nothing
idle is left to evict), and evicts idle instances by one of three rules:

- `lru`: least recently used (it reproduces `baton sim`'s `ttl` with a keep-alive past the
  replay: TrainTicket 15:00-16:00 at 4 GiB, 0.7639 of calls cold, 6,973 of them busy);
- `gap`: the instance used furthest ahead by the task's mean time between starts (first in
  line; surplus instances by that gap times their place, or their idle time);
- `belady`: the instance whose function is called again furthest in the future (knowing
  it), surplus instances first.

    scripts/retention-bound.py ARRIVALS.csv MEMORY_MIB [COLD_MS]

Prints each rule's cold-start ratio and its cold starts that found every instance busy
(docs/sim/README.md, 2026-12-07 evening).
"""
import collections
import csv
import heapq
import sys


def main():
    path, cap = sys.argv[1], float(sys.argv[2])
    cold_s = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.05
    seq = [(float(r["start_s"]), r["function"], float(r["memory_mib"]), float(r["duration_s"]))
           for r in csv.DictReader(open(path))]
    mem = {f: m for _, f, m, _ in seq}
    next_use = [0.0] * len(seq)
    last = {}
    for i in range(len(seq) - 1, -1, -1):
        f = seq[i][1]
        next_use[i] = seq[last[f]][0] if f in last else 1e18
        last[f] = i

    def run(rule):
        idle = collections.defaultdict(list)  # function -> idle-since times, oldest first
        ends = []
        used = cold = busy = 0
        last_start, gap, nxt = {}, {}, {}
        for i, (t, f, m, d) in enumerate(seq):
            while ends and ends[0][0] <= t:
                te, g = heapq.heappop(ends)
                idle[g].append(te)
            if f in last_start:
                s = t - last_start[f]
                gap[f] = s if f not in gap else gap[f] + (s - gap[f]) / 16
            last_start[f], nxt[f] = t, next_use[i]
            if idle[f]:
                idle[f].pop()  # the most recently idle
                heapq.heappush(ends, (t + d, f))
                continue
            cold += 1
            busy += any(e[1] == f for e in ends)

            def priority(g, since, ahead):
                if rule == "lru":
                    return since
                if rule == "gap":
                    g_gap = gap.get(g, 1e9)
                    return -(g_gap if ahead == 0 else max(t - since, g_gap * (ahead + 1))) * mem[g]
                return -(nxt[g] if ahead == 0 else 1e17 + ahead)

            while used + m > cap:
                candidates = [(priority(g, s, len(l) - 1 - j), g, j)
                              for g, l in idle.items() for j, s in enumerate(l)]
                if not candidates:
                    break
                _, g, j = min(candidates)
                idle[g].pop(j)
                used -= mem[g]
            used += m
            heapq.heappush(ends, (t + cold_s + d, f))
        return cold / len(seq), busy

    for rule in ["lru", "gap", "belady"]:
        ratio, busy = run(rule)
        print(f"{rule}: {ratio:.4f} of calls cold, {busy} busy")


if __name__ == "__main__":
    main()
