"""Example worker: upper-cases its payload. Control payloads for tests: b"crash" exits the
process, b"sleep:<seconds>" sleeps, b"alloc:<MiB>" allocates and touches that much memory,
b"fail" raises."""
import os
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
    if payload == b"fail":
        raise ValueError("asked to fail")
    return payload.upper()


serve(handle)
