#!/usr/bin/env bash
# Cross-checks `baton sim` against dslab-faas (github.com/osukhoroslov/dslab, an independent
# FaaS simulator) on exactly the same arrivals, for docs/sim/validation.md.
#
#   scripts/dslab-check.sh TRACE [--cold-start-ms 1000] [--train-until HH:MM] [--test-until HH:MM]
#
# For each arrival mode (even, random) baton expands TRACE (an Azure 2019 invocations file,
# durations and memory beside it) into arrivals, replays them through its `ttl` and
# `histogram` policies with memory unbounded, and writes them out (--export-arrivals);
# tools/dslab-check runs dslab-faas's FixedTimeColdStartPolicy (10 min, restarted by every
# invocation) and HybridHistogramPolicy(4 h, 60 s, 2.0, 0.5, 0.15, 0.1) on the same file.
# Prints one table row per policy and mode, with baton/dslab ratios.
#
# dslab is not on crates.io and never a dependency of baton: it is checked out at
# DSLAB_COMMIT from DSLAB_GIT (a clone or a bare mirror of the repository; default: the
# library's mirror beside this checkout, else github) into target/dslab.
set -euo pipefail
cd "$(dirname "$0")/.."
DSLAB_COMMIT=a6c155e8db4b3704dbaa3f4b3e99d987ad0da2d2
DSLAB_GIT=${DSLAB_GIT:-}
if [[ -z "$DSLAB_GIT" ]]; then
    for candidate in ../.mirror/osukhoroslov+dslab/repo /work/.mirror/osukhoroslov+dslab/repo; do
        [[ -d "$candidate" ]] && DSLAB_GIT=$candidate && break
    done
fi
trace=${1:?usage: scripts/dslab-check.sh TRACE [--cold-start-ms MS] [--train-until HH:MM] [--test-until HH:MM]}
shift
cold_ms=1000 train_until= test_until=
while (($#)); do
    case $1 in
    --cold-start-ms) cold_ms=$2; shift 2 ;;
    --train-until) train_until=$2; shift 2 ;;
    --test-until) test_until=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

if [[ ! -f target/dslab/.commit || $(cat target/dslab/.commit) != "$DSLAB_COMMIT" ]]; then
    rm -rf target/dslab && mkdir -p target/dslab
    if [[ -n "$DSLAB_GIT" ]]; then
        git -C "$DSLAB_GIT" archive "$DSLAB_COMMIT" crates/dslab-faas | tar -x -C target/dslab
    else
        git clone -q https://github.com/osukhoroslov/dslab target/dslab/clone
        git -C target/dslab/clone archive "$DSLAB_COMMIT" crates/dslab-faas | tar -x -C target/dslab
        rm -rf target/dslab/clone
    fi
    echo "$DSLAB_COMMIT" >target/dslab/.commit
fi
export CARGO_TARGET_DIR=$PWD/target/dslab-check
(cd tools/dslab-check && cargo build -q --release 2>/dev/null || cargo build --release)
driver=$CARGO_TARGET_DIR/release/dslab-check
[[ -x target/release/baton ]] || cargo build -q --release -p baton-cli
baton=target/release/baton

# The replay starts at the trace's first minute unless told: both simulators learn online.
window=(--train-until "${train_until:-00:00}")
[[ -n "$test_until" ]] && window+=(--test-until "$test_until")
name=$(basename "$trace"); out=target/dslab-check/runs/${name%%.*}
mkdir -p "$out"
printf '| arrivals | reuse: baton / dslab | policy | invocations | baton cold | dslab cold | cold baton/dslab | baton idle GB·s | dslab idle GB·s | idle baton/dslab |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for mode in even random; do
    for reuse in recent oldest; do
        export_args=()
        [[ $reuse == recent ]] && export_args=(--export-arrivals "$out/arrivals-$mode.csv")
        "$baton" sim --trace "$trace" "${window[@]}" --arrivals "$mode" --reuse "$reuse" \
            --policies ttl,histogram --memory-gib 1048576 --cold-start-ms "$cold_ms" \
            "${export_args[@]}" --out "$out/baton-$mode-$reuse" >/dev/null 2>"$out/baton-$mode-$reuse.log"
    done
    for reuse in dslab recent oldest; do
        "$driver" "$out/arrivals-$mode.csv" --cold-start-ms "$cold_ms" --reuse "$reuse" >"$out/dslab-$mode-$reuse.jsonl"
    done
    for pair in recent:dslab recent:recent oldest:oldest; do
        python3 - "$mode" "${pair%%:*}" "${pair##*:}" "$out" <<'PY'
import json, sys
mode, ours, theirs, out = sys.argv[1:]
baton = {r["policy"]: r for r in json.load(open(f"{out}/baton-{mode}-{ours}/results.json"))["results"]}
for line in open(f"{out}/dslab-{mode}-{theirs}.jsonl"):
    d = json.loads(line)
    b = baton[d["policy"]]
    invocations = b["stats"]["invocations"]
    cold = b["stats"]["cold_starts"] / invocations
    print(f"| {mode} | {ours} / {theirs} | {d['policy']} | {invocations} | {cold:.5f} | "
          f"{d['cold_ratio']:.5f} | {cold / d['cold_ratio']:.3f} | {b['idle_gb_s']:.0f} | "
          f"{d['idle_gb_s']:.0f} | {b['idle_gb_s'] / d['idle_gb_s']:.3f} |")
PY
    done
done
