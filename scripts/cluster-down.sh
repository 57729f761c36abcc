#!/usr/bin/env bash
# Stops what scripts/cluster-up.sh started: each PID listed in $BATON_CLUSTER_DIR/pids
# (default .baton-cluster), and only while it is still the program that was started
# (a PID reused by another program is left alone). Data and logs stay.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BATON_CLUSTER_DIR:-.baton-cluster}
[ -s "$dir/pids" ] || { echo "nothing listed in $dir/pids"; exit 0; }
# Nodes first (they save a last snapshot on SIGTERM), the NATS server last.
tac "$dir/pids" | while read -r pid program; do
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$program" ]; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "stopped $program ($pid)"
  fi
done
: > "$dir/pids"
