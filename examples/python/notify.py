"""Order pipeline, last step: tells the customer (here: returns the final message)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baton_worker import serve  # noqa: E402


def handle(payload: bytes) -> bytes:
    order = json.loads(payload)
    order["notified"] = True
    return json.dumps(order, separators=(",", ":")).encode()


serve(handle)
