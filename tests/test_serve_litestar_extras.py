"""`xrouter serve` imports Litestar without annotated_types and PyYAML (issue 16, start time:
entrypoints/optional_imports.py), and the gateway it builds documents the same API either way:
Litestar only reads annotated_types constraints, which the gateway's handlers do not use, and
PyYAML loads when Litestar first uses it."""

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
loaded = [name for name in ("annotated_types", "yaml") if name in sys.modules]
import litestar.openapi.plugins
dumped = litestar.openapi.plugins.yaml.dump({"a": 1})  # the stand-in loads PyYAML now
print(json.dumps({"loaded": loaded, "document": document, "dumped": dumped}))
"""

PLAIN = """
import json, sys
import annotated_types, yaml  # as when a library that uses them was imported first
from litestar.testing import TestClient
from xrouter.entrypoints.http.app import create_litestar
with TestClient(create_litestar()) as client:
    document = client.get("/openapi.json").json()
loaded = [name for name in ("annotated_types", "yaml") if name in sys.modules]
print(json.dumps({"loaded": loaded, "document": document}))
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


def test_serve_leaves_litestar_extras_out_and_documents_the_same_api() -> None:
    served = _run(SERVE)
    plain = _run(PLAIN)
    assert served["loaded"] == []
    assert plain["loaded"] == ["annotated_types", "yaml"]
    assert served["document"] == plain["document"]
    assert served["dumped"] == "a: 1\n"
