"""Example chain step: upper-cases its payload and names the next step.

The next step comes from the environment: NEXT (default none), or NEXT_ALT when the payload
starts with b"alt" (a branch). SLEEP_MS makes each call take that long. The output is an envelope `@next NAME\\n<payload>`, which
baton's director follows without a round trip."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baton_worker import serve  # noqa: E402

NEXT = os.environ.get("NEXT", "")
NEXT_ALT = os.environ.get("NEXT_ALT", "")
SLEEP_S = int(os.environ.get("SLEEP_MS", "0")) / 1000


def handle(payload: bytes) -> bytes:
    if SLEEP_S:
        time.sleep(SLEEP_S)
    following = NEXT_ALT if payload.startswith(b"alt") and NEXT_ALT else NEXT
    out = payload.upper() if not payload.startswith(b"alt") else payload
    return (b"@next " + following.encode() + b"\n" + out) if following else out


serve(handle)
