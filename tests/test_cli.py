"""The `xrouter` console script, run as a user runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from xrouter import __version__

XROUTER = str(Path(sys.executable).parent / "xrouter")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_version() -> None:
    result = subprocess.run([XROUTER, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"xrouter {__version__}"


def test_bad_configuration_exits_2_with_the_variable_named() -> None:
    env = {**os.environ, "XR_PORT": "not-a-port"}
    result = subprocess.run([XROUTER, "serve"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "XR_PORT" in result.stderr


def test_a_default_provider_nobody_serves_exits_2_before_serving() -> None:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("XR_")}
    env = {**clean, "XR_DEFAULT_PROVIDER": "nope"}
    result = subprocess.run(
        [XROUTER, "serve", "--port", str(_free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 2
    assert "XR_DEFAULT_PROVIDER='nope' names no provider" in result.stderr
    assert "served: local" in result.stderr and "Traceback" not in result.stderr


def test_serve_answers_and_shuts_down_cleanly() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [XROUTER, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "XR_LOG_LEVEL": "WARNING"},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        assert health.status_code == 200
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/responses",
            json={"model": "local/echo", "input": "from the cli"},
        ).json()
        assert answer["output"][0]["content"][0]["text"] == "from the cli"
    finally:
        process.terminate()
        code = process.wait(timeout=15)
    output = process.stdout.read().decode() if process.stdout else ""
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert code in (0, -15), output
    assert "Traceback" not in output
