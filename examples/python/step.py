"""Example chain step: upper-cases its payload and names the next step.

The next step comes from the environment: NEXT (default none), or NEXT_ALT when the payload
starts with b"alt" (a branch). The output is an envelope `@next NAME\\n<payload>`, which
baton's director follows without a round trip."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baton_worker import serve  # noqa: E402

NEXT = os.environ.get("NEXT", "")
NEXT_ALT = os.environ.get("NEXT_ALT", "")


def handle(payload: bytes) -> bytes:
    following = NEXT_ALT if payload.startswith(b"alt") and NEXT_ALT else NEXT
    out = payload.upper() if not payload.startswith(b"alt") else payload
    return (b"@next " + following.encode() + b"\n" + out) if following else out


serve(handle)
