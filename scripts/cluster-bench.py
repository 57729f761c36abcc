#!/usr/bin/env python3
"""Throughput of one baton node against several, in one run, on this machine.

Starts nats-server (JetStream, monitoring on, only baton's users) and baton nodes on
loopback, deploys a wasm function, then measures for 1 node without a cluster, 1 node in a
cluster, N nodes in a cluster, and N nodes in an unsigned cluster (--cluster-insecure, on
an open nats-server of its own: what signing and checking cost):
  - synchronous invocations per second (wrk, POST, a fixed number of connections in all,
    spread over the nodes);
  - asynchronous invocations per second, from the first 202 until the work queue is empty;
  - NATS messages and bytes per invocation (the server's /varz, in and out).
Every process it starts is stopped by its PID at the end. Prints a table and the ratios.

  python3 scripts/cluster-bench.py [--bin target/release/baton] [--nodes 3] [--seconds 10]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=15.0):
    until = time.time() + limit
    while time.time() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def http(method, url, body=None, ctype="application/octet-stream"):
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


class Procs:
    """Processes started here, stopped by PID."""

    def __init__(self):
        self.procs = []

    def start(self, args, log):
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def cpu_s(pids):
    """CPU seconds (user + system) the processes used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def varz(mon):
    _, body = http("GET", f"http://127.0.0.1:{mon}/varz")
    v = json.loads(body)
    return v["in_msgs"] + v["out_msgs"], v["in_bytes"] + v["out_bytes"]


def work_queue_len(mon):
    _, body = http("GET", f"http://127.0.0.1:{mon}/jsz?streams=true")
    for account in json.loads(body).get("account_details", []):
        for stream in account.get("stream_detail", []):
            if stream["name"] == "BATON_INVOCATIONS":
                return stream["state"]["messages"]
    return 0


def start_nodes(procs, args, n, nats_url, work, tag, keys=None):
    """`keys` None: an unsigned cluster (--cluster-insecure, on an open NATS)."""
    urls = []
    for i in range(n):
        port = free_port()
        cmd = [args.bin, "serve", "--no-auth", "--listen", f"127.0.0.1:{port}",
               "--data-dir", os.path.join(work, f"{tag}-{i}"), "--queue-depth", "1024"]
        if nats_url:
            cmd += ["--cluster", nats_url, "--node-name", f"{tag}-{i}"]
            if keys:
                cmd += ["--cluster-creds", os.path.join(keys, "node.nk"),
                        "--cluster-signing-key", os.path.join(keys, "cluster.key")]
            else:
                cmd += ["--cluster-insecure"]
        log = open(os.path.join(work, f"{tag}-{i}.log"), "w")
        env_log = dict(os.environ, RUST_LOG="warn")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env_log)
        procs.procs.append(p)
        wait_port(port)
        urls.append(f"http://127.0.0.1:{port}")
    return urls


def deploy(args, url):
    manifest = os.path.join(ROOT, "crates/baton-cli/tests/cluster/upper.toml")
    subprocess.run([args.bin, "deploy", "--server", url, manifest], check=True,
                   stdout=subprocess.DEVNULL)


def wait_deployed(urls):
    for url in urls:
        until = time.time() + 30
        while True:
            try:
                if http("GET", f"{url}/v1/functions/upper")[0] == 200:
                    break
            except Exception:
                pass
            if time.time() > until:
                raise SystemExit(f"{url} never got `upper`")
            time.sleep(0.1)


def sync_rate(args, urls, lua):
    """wrk on every node at once, the connections split among them; requests/s in all."""
    per = max(1, args.connections // len(urls))
    runs = [subprocess.Popen(["wrk", "-t1", f"-c{per}", f"-d{args.seconds}s", "-s", lua,
                              f"{u}/v1/functions/upper/invoke"],
                             stdout=subprocess.PIPE, text=True) for u in urls]
    total, requests = 0.0, 0
    for r in runs:
        out, _ = r.communicate()
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                total += float(line.split()[1])
            if "requests in" in line:
                requests += int(line.split()[0])
    return total, requests


def async_rate(args, urls, mon):
    """`args.async_count` asynchronous invocations from 8 threads over the nodes; per second
    from the first submission until the work queue is empty."""
    count = args.async_count
    done = [0]
    lock = threading.Lock()

    def submit(k):
        for j in range(k, count, 8):
            url = urls[j % len(urls)]
            status, _ = http("POST", f"{url}/v1/functions/upper/invoke?async=true", b"hi")
            assert status == 202, status
            with lock:
                done[0] += 1

    start = time.time()
    threads = [threading.Thread(target=submit, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submitted = time.time() - start
    while work_queue_len(mon) > 0:
        time.sleep(0.02)
    return count / (time.time() - start), count / submitted


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/baton"))
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=12)
    ap.add_argument("--async-count", type=int, default=3000)
    args = ap.parse_args()
    for tool in ["wrk"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (apt-get install {tool})")
    nats = shutil.which("nats-server") or "/usr/sbin/nats-server"
    work = tempfile.mkdtemp(prefix="baton-cluster-bench-")
    lua = os.path.join(work, "post.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = "hi"\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n')
    procs = Procs()
    rows = []
    try:
        port, mon = free_port(), free_port()
        # As a cluster runs: nats-server admits only baton's users, and every entry and
        # message is signed (TLS is left out: it costs the same with and without baton).
        keys = os.path.join(work, "keys")
        subprocess.run([args.bin, "cluster", "init", keys], check=True, stdout=subprocess.DEVNULL)
        conf = os.path.join(work, "nats.conf")
        with open(conf, "w") as f:
            f.write('include "keys/nats-auth.conf"\n')
        nats_proc = procs.start([nats, "-c", conf, "-js", "-a", "127.0.0.1", "-p", str(port),
                                 "-m", str(mon), "-sd", os.path.join(work, "js")],
                                open(os.path.join(work, "nats.log"), "w"))
        wait_port(port)
        # The same cluster unsigned, on an open NATS of its own: what trust costs.
        open_port, open_mon = free_port(), free_port()
        open_proc = procs.start([nats, "-js", "-a", "127.0.0.1", "-p", str(open_port),
                                 "-m", str(open_mon), "-sd", os.path.join(work, "js-open")],
                                open(os.path.join(work, "nats-open.log"), "w"))
        wait_port(open_port)
        signed = (f"nats://127.0.0.1:{port}", mon, nats_proc, keys)
        unsigned = (f"nats://127.0.0.1:{open_port}", open_mon, open_proc, None)
        for label, n, cluster, (nats_url, mon, nats_proc, setup_keys) in [
                ("1 node, no cluster", 1, False, signed),
                ("1 node, cluster", 1, True, signed),
                (f"{args.nodes} nodes, cluster", args.nodes, True, signed),
                # The same order as signed: the N nodes then learn the 1-node phase's
                # records too, as the signed ones do.
                ("1 node, unsigned", 1, True, unsigned),
                (f"{args.nodes} nodes, unsigned", args.nodes, True, unsigned)]:
            tag = label.split(",")[0].replace(" ", "") + ("c" if cluster else "")
            tag += "" if setup_keys else "u"
            before = len(procs.procs)
            urls = start_nodes(procs, args, n, nats_url if cluster else None, work, tag,
                               setup_keys)
            deploy(args, urls[0])
            wait_deployed(urls)
            for u in urls:  # warm every node
                http("POST", f"{u}/v1/functions/upper/invoke", b"hi")
            nodes = [p.pid for p in procs.procs[before:]]
            m0, b0 = varz(mon)
            n0, c0 = cpu_s([nats_proc.pid]), cpu_s(nodes)
            rate, requests = sync_rate(args, urls, lua)
            time.sleep(0.5)  # records published after the last response
            m1, b1 = varz(mon)
            n1, c1 = cpu_s([nats_proc.pid]), cpu_s(nodes)
            per = max(1, requests)
            row = {"setup": label, "sync_per_s": rate,
                   "sync_msgs": (m1 - m0) / per, "sync_bytes": (b1 - b0) / per,
                   "sync_nats_us": (n1 - n0) / per * 1e6, "sync_baton_us": (c1 - c0) / per * 1e6}
            if cluster:
                a_rate, submit_rate = async_rate(args, urls, mon)
                time.sleep(0.5)
                m2, b2 = varz(mon)
                n2, c2 = cpu_s([nats_proc.pid]), cpu_s(nodes)
                per = args.async_count
                row.update({"async_per_s": a_rate, "async_submit_per_s": submit_rate,
                            "async_msgs": (m2 - m1) / per, "async_bytes": (b2 - b1) / per,
                            "async_nats_us": (n2 - n1) / per * 1e6,
                            "async_baton_us": (c2 - c1) / per * 1e6})
            rows.append(row)
            for p in procs.procs[before:]:
                procs.stop(p)
            # Leave the shared buckets to the next setup, but not its functions.
    finally:
        procs.stop_all()
    print("per invocation: NATS messages and bytes (in + out), CPU µs of nats-server and of "
          "the baton nodes (all of them)")
    print(f"{'setup':<20} {'sync/s':>7} {'msgs':>5} {'bytes':>6} {'nats':>5} {'baton':>6} | "
          f"{'async/s':>7} {'submit/s':>8} {'msgs':>5} {'bytes':>6} {'nats':>5} {'baton':>6}")
    for r in rows:
        a = (f"{r['async_per_s']:>7.0f} {r['async_submit_per_s']:>8.0f} {r['async_msgs']:>5.1f} "
             f"{r['async_bytes']:>6.0f} {r['async_nats_us']:>5.0f} {r['async_baton_us']:>6.0f}"
             ) if "async_per_s" in r else "-"
        print(f"{r['setup']:<20} {r['sync_per_s']:>7.0f} {r['sync_msgs']:>5.2f} "
              f"{r['sync_bytes']:>6.0f} {r['sync_nats_us']:>5.0f} {r['sync_baton_us']:>6.0f} | {a}")
    base, one, many, bare_one, bare = rows
    print(f"sync: cluster/no cluster on 1 node {one['sync_per_s'] / base['sync_per_s']:.2f}x, "
          f"{args.nodes} nodes/1 node {many['sync_per_s'] / one['sync_per_s']:.2f}x; "
          f"async: {args.nodes} nodes/1 node {many['async_per_s'] / one['async_per_s']:.2f}x "
          f"(all on {os.cpu_count()} cores)")
    for n, signed_row, bare_row in [(1, one, bare_one), (args.nodes, many, bare)]:
        print(f"trust ({n} node{'s' if n > 1 else ''}, signed/unsigned): "
              f"sync {signed_row['sync_per_s'] / bare_row['sync_per_s']:.2f}x, "
              f"async {signed_row['async_per_s'] / bare_row['async_per_s']:.2f}x, baton CPU per "
              f"invocation {signed_row['sync_baton_us'] - bare_row['sync_baton_us']:+.0f} µs sync, "
              f"{signed_row['async_baton_us'] - bare_row['async_baton_us']:+.0f} µs async")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
