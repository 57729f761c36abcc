"""The bench's three-step chain on Google's functions-framework: one process per function
(`functions-framework --target a|b|c`); a calls b and b calls c over HTTP (NEXT_URL)."""
import json
import os
import urllib.request

import functions_framework

NEXT_URL = os.environ.get("NEXT_URL", "")


def _forward(request):
    data = request.get_data()
    req = urllib.request.Request(NEXT_URL, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as response:
        return response.read(), response.status, {"content-type": "application/json"}


@functions_framework.http
def a(request):
    return _forward(request)


@functions_framework.http
def b(request):
    return _forward(request)


@functions_framework.http
def c(request):
    order = json.loads(request.get_data() or b"{}")
    order["done"] = True
    return json.dumps(order), 200, {"content-type": "application/json"}
