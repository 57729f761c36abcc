"""Order pipeline, step 2: prices the order and decides the branch.

Imports a realistic set of heavy standard modules (asyncio, decimal, email, http, xml,
json, logging, statistics), so its cold start is a real interpreter start plus imports:
exactly what a pre-warm hides. An order whose total exceeds the customer's credit goes to
`reject`, every other one to `reserve`."""
import asyncio  # noqa: F401  (the weight of a typical service's imports)
import decimal
import email.mime.text  # noqa: F401
import http.client  # noqa: F401
import json
import logging
import os
import statistics  # noqa: F401
import sys
import xml.etree.ElementTree  # noqa: F401

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baton_worker import serve  # noqa: E402

PRICES = {"book": decimal.Decimal("12.50"), "lamp": decimal.Decimal("40.00"),
          "desk": decimal.Decimal("310.00")}
log = logging.getLogger("price")


def handle(payload: bytes) -> bytes:
    order = json.loads(payload)
    unit = PRICES.get(order["item"], decimal.Decimal("99.99"))
    total = unit * int(order["qty"])
    order["total"] = str(total)
    branch = "reject" if total > decimal.Decimal(str(order.get("credit", 1000))) else "reserve"
    return b"@next " + branch.encode() + b"\n" + json.dumps(order, separators=(",", ":")).encode()


serve(handle)
