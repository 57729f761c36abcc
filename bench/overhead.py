#!/usr/bin/env python3
"""Overhead of baton serve on the warm three-step wasm chain of bench/peers/baton.

Starts `baton serve` (the binary given, default target/release/baton) on a fresh data
directory, deploys wa -> wb -> wc, warms it, and prints in one run:
  - the director's timings.total_us, p50, in a tight loop and with the chain invoked on a
    keep-alive connection once every 10 ms, 100 ms and 1 s (sparse traffic);
  - wrk (one connection, --seconds) on the chain and on /healthz, p50 as wrk reports it.
Usage: bench/overhead.py [--baton PATH] [--tight N] [--sparse N] [--seconds S]
"""
import argparse, base64, http.client, json, os, re, shutil, socket, statistics
import subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baton", default=os.path.join(here, "..", "target", "release", "baton"))
    ap.add_argument("--tight", type=int, default=2000)
    ap.add_argument("--sparse", type=int, default=40)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="baton-overhead-")
    port = free_port()
    # Warnings only: the access log (one line per request) is not what is measured, and an
    # undrained pipe would stall the server.
    env = dict(os.environ, RUST_LOG="warn")
    server = subprocess.Popen([args.baton, "serve", "--no-auth", "--listen", f"127.0.0.1:{port}",
                               "--data-dir", data], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env)
    try:
        conn = None
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz"); conn.getresponse().read(); break
            except OSError:
                conn = None; time.sleep(0.05)
        if conn is None:
            sys.exit("baton serve did not come up: " + server.stderr.read(4000).decode())
        for name in "abc":
            wat = open(os.path.join(here, "peers", "baton", f"{name}.wat"), "rb").read()
            body = json.dumps({"manifest": f'name = "w{name}"\nkind = "wasm"\nmodule = "{name}.wat"\nmemory_mib = 16\npure = true\n',
                               "module_base64": base64.b64encode(wat).decode()})
            conn.request("PUT", f"/v1/functions/w{name}", body, {"Content-Type": "application/json"})
            r = conn.getresponse(); text = r.read()
            if r.status >= 300: sys.exit(f"deploy w{name}: {r.status} {text[:300]!r}")
        def invoke():
            conn.request("POST", "/v1/functions/wa/invoke", b"hello", {"Content-Type": "application/octet-stream"})
            r = conn.getresponse(); doc = json.loads(r.read())
            if r.status != 200: sys.exit(f"invoke: {r.status} {doc}")
            return doc["timings"]["total_us"]
        for _ in range(200): invoke()
        rows = []
        tight = [invoke() for _ in range(args.tight)]
        rows.append(("tight loop", statistics.median(tight)))
        for gap in (0.01, 0.1, 1.0):
            n = args.sparse if gap < 1 else max(5, args.sparse // 4)
            samples = []
            for _ in range(n):
                time.sleep(gap); samples.append(invoke())
            rows.append((f"every {int(gap*1000)} ms", statistics.median(samples)))
        conn.close()
        print("director timings.total_us, warm wa -> wb -> wc (3 wasm steps)")
        for label, p50 in rows:
            print(f"  {label:<14} p50 {p50:8.1f} us   {p50/rows[0][1]:5.2f}x tight")
        if shutil.which("wrk"):
            lua = os.path.join(data, "post.lua")
            open(lua, "w").write('wrk.method = "POST"\nwrk.body = "hello"\nwrk.headers["Content-Type"] = "application/octet-stream"\n')
            for label, path, script in (("chain", "/v1/functions/wa/invoke", ["-s", lua]), ("/healthz", "/healthz", [])):
                out = subprocess.run(["wrk", "-t1", "-c1", f"-d{args.seconds}s", "--latency", *script,
                                      f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
                m = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
                reqs = re.search(r"Requests/sec:\s+([\d.]+)", out)
                if m:
                    v = float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]
                    print(f"wrk -t1 -c1 {args.seconds}s {label:<9} p50 {v:8.1f} us   {float(reqs.group(1)):9.0f} req/s")
        else:
            print("wrk not installed: skipped (apt-get install wrk)")
    finally:
        server.terminate()
        try: server.wait(10)
        except subprocess.TimeoutExpired: server.kill()
        shutil.rmtree(data, ignore_errors=True)

if __name__ == "__main__":
    main()
