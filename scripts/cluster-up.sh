#!/usr/bin/env bash
# Starts a baton cluster on this machine's loopback: nats-server with JetStream and three
# `baton serve --cluster` nodes, and prints their URLs. `scripts/cluster-down.sh` stops
# exactly what this started (the PIDs are in $DIR/pids).
#
# Settings (environment): BATON_CLUSTER_DIR (default .baton-cluster: data, logs, pids),
# NATS_PORT (default 4222), BATON_PORTS (default "18081 18082 18083"), BATON_BIN (default:
# target/release/baton, built when missing), BATON_TOKEN (default: none, --no-auth).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${BATON_CLUSTER_DIR:-.baton-cluster}
nats_port=${NATS_PORT:-4222}
ports=${BATON_PORTS:-"18081 18082 18083"}
bin=${BATON_BIN:-target/release/baton}

if [ -s "$dir/pids" ]; then
  echo "a cluster started from $dir is still listed in $dir/pids: run scripts/cluster-down.sh first" >&2
  exit 1
fi

nats=$(command -v nats-server || true)
[ -z "$nats" ] && [ -x /usr/sbin/nats-server ] && nats=/usr/sbin/nats-server
if [ -z "$nats" ]; then
  echo "== installing nats-server (Debian's package)"
  apt-get update -q >/dev/null && apt-get install -y -q nats-server >/dev/null
  nats=$(command -v nats-server || echo /usr/sbin/nats-server)
fi
if [ ! -x "$bin" ]; then
  echo "== building baton (cargo build --release)"
  cargo build --release -q -p baton-cli
fi

mkdir -p "$dir"
: > "$dir/pids"
"$nats" -js -a 127.0.0.1 -p "$nats_port" -sd "$dir/jetstream" > "$dir/nats.log" 2>&1 &
echo "$! nats-server" >> "$dir/pids"
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
  sleep 0.1
done

if [ -n "${BATON_TOKEN:-}" ]; then auth=(--token "$BATON_TOKEN"); else auth=(--no-auth); fi
n=0
for port in $ports; do
  n=$((n + 1))
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/node$n" "${auth[@]}" \
    --cluster "nats://127.0.0.1:$nats_port" --node-name "node$n" > "$dir/node$n.log" 2>&1 &
  echo "$! baton" >> "$dir/pids"
done

n=0
for port in $ports; do
  n=$((n + 1))
  for _ in $(seq 100); do
    grep -q "baton listening on" "$dir/node$n.log" 2>/dev/null && break
    if ! kill -0 "$(awk -v n=$((n + 1)) 'NR == n {print $1}' "$dir/pids")" 2>/dev/null; then
      echo "node$n stopped: see $dir/node$n.log" >&2
      tail -n 5 "$dir/node$n.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "node$n: http://127.0.0.1:$port"
done
echo "nats:  nats://127.0.0.1:$nats_port (logs and data in $dir; stop with scripts/cluster-down.sh)"
