"""A hostile worker for the sandbox tests: each payload is an escape attempt, answered with
"ok ..." when it worked and "denied <errno name>" when it did not.

read:PATH  write:PATH  procs  signal:PID  connect:PORT  fork:N  forkwait:N:SECONDS  uid
flood:BYTES (that many bytes on stderr)  say:TEXT (one line on stderr)
random (a draw from `random`, which a forked worker must not share with its siblings)
"""
import errno
import os
import random
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baton_worker import serve  # noqa: E402


def denied(e: OSError) -> bytes:
    return b"denied " + errno.errorcode.get(e.errno, str(e.errno)).encode()


def spawn_children(n: int, linger: float) -> int:
    made = 0
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(linger)
            os._exit(0)
        made += 1
    return made


def handle(payload: bytes) -> bytes:
    verb, _, arg = payload.decode().partition(":")
    try:
        if verb == "read":
            with open(arg, "rb") as f:
                f.read(16)
            return b"ok read"
        if verb == "write":
            with open(arg, "wb") as f:
                f.write(b"x")
            return b"ok wrote"
        if verb == "procs":
            return " ".join(p for p in os.listdir("/proc") if p.isdigit()).encode()
        if verb == "signal":
            os.kill(int(arg), 0)
            return b"ok signalled"
        if verb == "connect":
            with socket.create_connection(("127.0.0.1", int(arg)), timeout=2):
                return b"ok connected"
        if verb == "fork":
            return b"forked %d" % spawn_children(int(arg), 30)
        if verb == "forkwait":
            n, _, seconds = arg.partition(":")
            made = spawn_children(int(n), 600)
            time.sleep(float(seconds))
            return b"forked %d" % made
        if verb == "flood":
            sys.stderr.write("x" * int(arg))
            sys.stderr.flush()
            return b"flooded"
        if verb == "say":
            print(arg, file=sys.stderr, flush=True)
            return b"said"
        if verb == "random":
            return repr(random.random()).encode()
        if verb == "uid":
            return b"%d %d" % (os.getuid(), os.getgid())
    except OSError as e:
        return denied(e)
    return b"unknown"


serve(handle)
