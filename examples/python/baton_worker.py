"""baton's worker helper: write `def handle(payload: bytes) -> bytes` and call `serve(handle)`.

The helper speaks baton's framed protocol on stdin/stdout (kind byte, big-endian u32
length, payload): it sends R (ready) once the importing module is loaded, then answers
each I (invoke) with O (the result) or E (the exception). print() goes to stderr, so
nothing but frames ever reaches stdout.
"""
import os
import struct
import sys

_FRAMES_OUT = sys.stdout.buffer
_FRAMES_IN = sys.stdin.buffer
sys.stdout = sys.stderr  # user prints must not corrupt the frame stream


def _write(kind: bytes, payload: bytes) -> None:
    _FRAMES_OUT.write(kind + struct.pack(">I", len(payload)) + payload)
    _FRAMES_OUT.flush()


def _read_exact(n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = _FRAMES_IN.read(n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def serve(handle) -> None:
    try:
        _serve(handle)
    except BrokenPipeError:
        # The host went away (it stopped, or dropped this worker): nothing to answer.
        os._exit(0)


def _serve(handle) -> None:
    _write(b"R", b"")
    while True:
        try:
            head = _read_exact(5)
        except EOFError:
            return
        kind, length = head[:1], struct.unpack(">I", head[1:])[0]
        payload = _read_exact(length)
        if kind != b"I":
            _write(b"E", b"unexpected frame kind " + kind)
            continue
        try:
            result = handle(payload)
            if not isinstance(result, (bytes, bytearray)):
                raise TypeError("handle() must return bytes, got " + type(result).__name__)
            _write(b"O", bytes(result))
        except MemoryError:
            _write(b"E", b"MemoryError: out of memory")
        except Exception as error:  # the function failed; the worker lives on
            _write(b"E", f"{type(error).__name__}: {error}".encode())
