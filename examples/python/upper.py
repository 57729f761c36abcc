"""Example worker: upper-cases its payload. Control payloads for tests: b"crash" exits the
process, b"sleep:<seconds>" sleeps, b"alloc:<MiB>" allocates and touches that much memory,
b"fail" raises; hostile ones: b"close-stdin" closes the worker's end of its input pipe,
b"kill-template" kills the template it was forked from (its parent, when that is Python)."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baton_worker import serve  # noqa: E402


def handle(payload: bytes) -> bytes:
    if payload == b"crash":
        os._exit(3)
    if payload.startswith(b"sleep:"):
        time.sleep(float(payload[6:]))
        return b"slept"
    if payload.startswith(b"alloc:"):
        block = bytearray(int(payload[6:]) << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return b"allocated %d MiB" % (len(block) >> 20)
    if payload == b"close-stdin":
        os.close(0)
        return b"closed"
    if payload == b"kill-template":
        parent = os.getppid()
        with open(f"/proc/{parent}/comm", "rb") as comm:
            if not comm.read().startswith(b"python"):
                return b"no template"
        os.kill(parent, signal.SIGKILL)
        return b"killed"
    if payload == b"fail":
        raise ValueError("asked to fail")
    return payload.upper()


serve(handle)
