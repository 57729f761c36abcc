"""baton's worker helper: write `def handle(payload: bytes) -> bytes` and call `serve(handle)`.

The helper speaks baton's framed protocol on stdin/stdout (kind byte, big-endian u32
length, payload): it sends R (ready) once the importing module is loaded, then answers
each I (invoke) with O (the result) or E (the exception). print() goes to stderr, so
nothing but frames ever reaches stdout.

Template mode (baton sets BATON_TEMPLATE=1 and hands over a Unix socket as fd 3): the
process that called serve() has imported the module and everything it imports; instead of
serving, it says T on the socket and waits. For each F message (with three descriptors:
the new worker's stdin, stdout and stderr) it forks; the child takes those as its 0, 1, 2,
starts a session of its own, re-seeds its random state and serves as any worker (R, then
I/O frames); the template answers with the child's pid (big-endian u32). W and a pid
(big-endian u32) has it reap that child (answered w), which baton sends once it has read
how the child ended. The template makes itself non-dumpable first, so no worker forked
from it can read a sibling's memory through /proc (the jail's system-call filter refuses
ptrace). A template never runs handle() itself.

Each forked child gets a temporary directory of its own, /tmp/.baton-worker-<pid>, as its
TMPDIR and HOME (tempfile and most libraries write there), and the template removes it
when it reaps the child, so what a worker wrote is freed with it (its memory is charged to
the worker that wrote it). In a jail (BATON_TMP_SWEEP=1: /tmp is the jail's own tmpfs)
the template also removes what a child wrote straight into /tmp once no living child can
have written it: an entry changed before the oldest living child was forked, or any
entry when no child lives, but never what was there when the template became ready.
"""
import os
import random
import shutil
import socket
import struct
import sys
import tempfile
import time

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
    if os.environ.pop("BATON_TEMPLATE", None) == "1":
        _template(handle)
        return
    try:
        _serve(handle)
    except BrokenPipeError:
        # The host went away (it stopped, or dropped this worker): nothing to answer.
        os._exit(0)


def _not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: no other process of the same user (a sibling worker forked from
    the same template) may open this one's memory through /proc; forks inherit it."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_WORKER_TMP = "/tmp/.baton-worker-"
_CLOCK = "/tmp/.baton-template-clock"


def _own_tmp() -> None:
    """In a forked child: a temporary directory of its own, removed when it is reaped."""
    path = _WORKER_TMP + str(os.getpid())
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        shutil.rmtree(path, ignore_errors=True)  # a reused pid's leftovers
        os.mkdir(path, 0o700)
    except OSError:
        return  # no writable /tmp: the worker keeps what it had
    os.environ["TMPDIR"] = path
    os.environ["HOME"] = path
    tempfile.tempdir = path


class _Children:
    """The template's living children (pid -> when it was forked) and /tmp's baseline."""

    def __init__(self) -> None:
        self.living = {}
        self.sweep = os.environ.pop("BATON_TMP_SWEEP", None) == "1"
        self.baseline = set()
        if self.sweep:
            try:
                open(_CLOCK, "wb").close()
                self.baseline = set(os.listdir("/tmp"))
            except OSError:
                self.sweep = False

    def now(self) -> float:
        """The kernel's file clock (a tick coarser than time.time()): a file changed after
        this moment has a ctime no earlier than what this returns."""
        if self.sweep:
            try:
                os.utime(_CLOCK)
                return os.stat(_CLOCK).st_ctime
            except OSError:
                pass
        return time.time()

    def forked(self, pid: int, at: float) -> None:
        self.living[pid] = at

    def reaped(self, pid: int) -> None:
        self.living.pop(pid, None)
        shutil.rmtree(_WORKER_TMP + str(pid), ignore_errors=True)
        if self.sweep:
            self._sweep()

    def _sweep(self) -> None:
        # Both sides on the kernel's file clock; an entry changed in the tick a living
        # child was forked in is kept.
        cutoff = min(self.living.values()) if self.living else float("inf")
        mine = {(_WORKER_TMP + str(pid))[len("/tmp/"):] for pid in self.living}
        try:
            entries = list(os.scandir("/tmp"))
        except OSError:
            return
        for entry in entries:
            if entry.name in self.baseline or entry.name in mine:
                continue
            try:
                if entry.stat(follow_symlinks=False).st_ctime >= cutoff:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def _template(handle) -> None:
    _not_dumpable()
    children = _Children()
    control = socket.socket(fileno=3)
    control.settimeout(10)
    control.sendall(b"T")
    # Children are reaped only when baton says so (W): it reads how one ended from the
    # zombie first, so a child must not be reaped behind its back.
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1, 3)
        except socket.timeout:
            continue
        except OSError:
            os._exit(0)
        if not message:
            os._exit(0)  # the host went away
        if message == b"W":
            for fd in fds:
                os.close(fd)
            try:
                (pid,) = struct.unpack(">I", _recv_exact(control, 4))
            except (OSError, EOFError):
                os._exit(0)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            children.reaped(pid)
            control.sendall(b"w")
            continue
        if message != b"F" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            control.sendall(struct.pack(">I", 0))
            continue
        forked_at = children.now()
        pid = os.fork()
        if pid == 0:
            control.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.setsid()
            random.seed()
            _own_tmp()
            try:
                _serve(handle)
            except BrokenPipeError:
                pass
            os._exit(0)
        for fd in fds:
            os.close(fd)
        children.forked(pid, forked_at)
        control.sendall(struct.pack(">I", pid))


def _recv_exact(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except socket.timeout:
            continue
        if not chunk:
            raise EOFError
        data += chunk
    return data


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
