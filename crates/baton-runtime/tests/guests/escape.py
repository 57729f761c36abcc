"""A hostile worker for the sandbox tests: each payload is an escape attempt, answered with
"ok ..." when it worked and "denied <errno name>" when it did not.

read:PATH  write:PATH  tmpfile:NAME (a file in tempfile's directory; answers its path)  procs  signal:PID  connect:PORT  fork:N  forkwait:N:SECONDS  uid
flood:BYTES (that many bytes on stderr)  say:TEXT (one line on stderr)
random (a draw from `random`, which a forked worker must not share with its siblings)
spin:SECONDS (a busy loop that long by the wall clock; answers the CPU seconds it got)
peek (ptrace and /proc/PID/mem on every other visible process)  newuser (a user namespace)
thread (a thread started and joined: must work)
connectto:HOST:PORT  send:HOST:PORT:SECONDS (zeros as fast as the network takes them)
"""
import ctypes
import errno
import os
import threading
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


_LIBC = ctypes.CDLL(None, use_errno=True)


def _errno_name() -> str:
    code = ctypes.get_errno()
    return errno.errorcode.get(code, str(code))


def peek() -> bytes:
    results = []
    for p in sorted(os.listdir("/proc")):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/mem", "rb"):
                results.append(f"mem:{p}:ok")
        except OSError as e:
            results.append(f"mem:{p}:{errno.errorcode.get(e.errno, e.errno)}")
        if _LIBC.ptrace(16, int(p), None, None) == 0:  # PTRACE_ATTACH
            results.append(f"ptrace:{p}:ok")
            _LIBC.ptrace(17, int(p), None, None)  # PTRACE_DETACH
        else:
            results.append(f"ptrace:{p}:{_errno_name()}")
    return " ".join(results).encode()


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
        if verb == "tmpfile":
            import tempfile

            path = os.path.join(tempfile.gettempdir(), arg)
            with open(path, "wb") as f:
                f.write(b"x" * 4096)
            return path.encode()
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
        if verb == "spin":
            start, cpu = time.monotonic(), time.process_time()
            while time.monotonic() - start < float(arg):
                pass
            return b"%.3f" % (time.process_time() - cpu)
        if verb == "connectto":
            host, _, port = arg.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=2):
                return b"ok connected"
        if verb == "send":
            host, port, seconds = arg.split(":")
            block = bytes(65536)
            sent = 0
            with socket.create_connection((host, int(port)), timeout=5) as conn:
                end = time.monotonic() + float(seconds)
                while time.monotonic() < end:
                    conn.sendall(block)
                    sent += len(block)
            return b"sent %d" % sent
        if verb == "peek":
            return peek()
        if verb == "newuser":
            if _LIBC.unshare(0x10000000) == 0:  # CLONE_NEWUSER
                return b"ok unshared"
            return b"denied " + _errno_name().encode()
        if verb == "thread":
            ran = []
            worker = threading.Thread(target=lambda: ran.append(1))
            worker.start()
            worker.join()
            return b"ok thread" if ran else b"no thread"
        if verb == "uid":
            return b"%d %d" % (os.getuid(), os.getgid())
    except OSError as e:
        return denied(e)
    return b"unknown"


serve(handle)
