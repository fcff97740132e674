"""`xrouter serve` imports Litestar without annotated_types (issue 16, start time:
entrypoints/optional_imports.py), and the gateway it builds documents the same API either way:
Litestar only reads annotated_types constraints, which the gateway's handlers do not use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SERVE = """
import json, sys
from xrouter.entrypoints.cli import main as cli

class Stop(Exception):
    pass

def stop(settings, workers):  # where `serve` would start the server: its imports are done
    raise Stop

cli.shared_metrics_dir = stop
try:
    cli.main(["serve", "--port", "0"])
except Stop:
    pass
else:
    raise SystemExit("serve did not reach the server")
from litestar.testing import TestClient
from xrouter.entrypoints.http.app import create_litestar
with TestClient(create_litestar()) as client:
    document = client.get("/openapi.json").json()
print(json.dumps({"loaded": "annotated_types" in sys.modules, "document": document}))
"""

PLAIN = """
import json, sys
import annotated_types  # as when the OpenAI SDK (pydantic) was imported first
from litestar.testing import TestClient
from xrouter.entrypoints.http.app import create_litestar
with TestClient(create_litestar()) as client:
    document = client.get("/openapi.json").json()
print(json.dumps({"loaded": "annotated_types" in sys.modules, "document": document}))
"""


def _run(script: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XR_", "OTEL_"))}
    env["XR_DISCOVERY"] = "false"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_serve_leaves_annotated_types_out_and_documents_the_same_api() -> None:
    served = _run(SERVE)
    plain = _run(PLAIN)
    assert served["loaded"] is False
    assert plain["loaded"] is True
    assert served["document"] == plain["document"]
