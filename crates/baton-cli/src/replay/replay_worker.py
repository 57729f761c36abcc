"""baton load's replay function: one step of a chain a trace became (see `baton load --help`).

Its payload is a line per step left, `NAME OWN_US`, its own first. It sleeps its own time
(the trace's run time of the step less what its callees covered, compressed) and hands the
lines after its own to the next step as an envelope (`@next NAME`), which baton's director
follows without a round trip. A worker holds BATON_REPLAY_TOUCH_MIB of memory it has
written (the trace's memory is what the manifest declares: what the server admits and
counts)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baton_worker import serve  # noqa: E402

_HELD = b"\x01" * (int(os.environ.get("BATON_REPLAY_TOUCH_MIB", "0")) << 20)


def handle(payload: bytes) -> bytes:
    own, _, rest = payload.partition(b"\n")
    try:
        us = int(own.rsplit(b" ", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"replay step: expected `NAME OWN_US`, got {own[:80]!r}") from None
    if us > 0:
        time.sleep(us / 1e6)
    if rest.strip():
        return b"@next " + rest.split(b" ", 1)[0] + b"\n" + rest
    return b"ok"


serve(handle)
