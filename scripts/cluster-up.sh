#!/usr/bin/env bash
# Starts a baton cluster on this machine's loopback: nats-server with JetStream, TLS and
# only baton's users, and three `baton serve --cluster` nodes, and prints their URLs.
# `scripts/cluster-down.sh` stops exactly what this started (the PIDs are in $DIR/pids).
#
# The first run writes, in $DIR/keys, the cluster's signing key and its NATS users
# (`baton cluster init`: node.nk for the nodes, reader.nk for dashboards) and, with
# openssl, a CA and nats-server's certificate for 127.0.0.1 (ca.pem is what a client
# trusts); later runs reuse them. An anonymous NATS client is refused, and a node believes
# nothing read from NATS that the signing key did not sign.
#
# Settings (environment): BATON_CLUSTER_DIR (default .baton-cluster: keys, data, logs,
# pids), NATS_PORT (default 4222), BATON_PORTS (default "18081 18082 18083"), BATON_BIN
# (default: target/release/baton, built when missing), BATON_TOKEN (default: none,
# --no-auth).
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
keys="$dir/keys"
if [ ! -s "$keys/cluster.key" ]; then
  "$bin" cluster init "$keys" >/dev/null
  echo "== wrote the cluster's signing key and NATS users in $keys"
fi
if [ ! -s "$keys/server.pem" ]; then
  command -v openssl >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q openssl >/dev/null; }
  (
    cd "$keys"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -keyout ca.key -out ca.pem -subj "/CN=baton cluster CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout server.key -out server.csr -subj "/CN=baton nats" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem 2>/dev/null
    chmod 644 ca.pem server.pem
  )
  echo "== made a CA and nats-server's certificate in $keys (clients trust $keys/ca.pem)"
fi
abs() { (cd "$(dirname "$1")" && echo "$PWD/$(basename "$1")"); }
cat > "$dir/nats.conf" <<EOF
listen: "127.0.0.1:$nats_port"
jetstream { store_dir: "$(abs "$dir")/jetstream" }
tls {
  cert_file: "$(abs "$keys/server.pem")"
  key_file: "$(abs "$keys/server.key")"
  timeout: 5
}
include "keys/nats-auth.conf"
EOF
: > "$dir/pids"
"$nats" -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 &
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
    --cluster "tls://127.0.0.1:$nats_port" --cluster-ca "$keys/ca.pem" \
    --cluster-creds "$keys/node.nk" --cluster-signing-key "$keys/cluster.key" \
    --node-name "node$n" > "$dir/node$n.log" 2>&1 &
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
echo "nats:  tls://127.0.0.1:$nats_port (CA $keys/ca.pem; users in $keys/nats-auth.conf; logs and data in $dir; stop with scripts/cluster-down.sh)"
