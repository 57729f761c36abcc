#!/usr/bin/env bash
# The Python tools the checks use, pinned, in .ci/.venv: Schemathesis (HTTP fuzzing) and
# opentelemetry-proto (the OTLP test decodes baton's spans with the real definitions).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.ci/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get install -y -q python3-venv >/dev/null && python3 -m venv "$venv"
  }
fi
if ! "$venv/bin/python" -c "import schemathesis, opentelemetry.proto" 2>/dev/null; then
  "$venv/bin/pip" install -q "schemathesis==4.32.5" "opentelemetry-proto==1.45.2"
fi
