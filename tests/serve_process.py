"""`xrouter serve` as a real process on a free loopback port, for tests that need signals,
worker start-up or the process's own log output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    base_url: str
    output: list[bytes] = field(default_factory=list)

    def log(self) -> str:
        return b"".join(self.output).decode(errors="replace")


def gateway_processes() -> Iterator[Any]:
    """Yields `start(**env) -> Gateway`; kills what is still running afterwards."""
    started: list[Gateway] = []

    def start(**env: str) -> Gateway:
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "xrouter.entrypoints.cli", "serve", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "XR_LOG_LEVEL": "INFO", "XR_DISCOVERY": "false", **env},
        )
        gateway = Gateway(process, f"http://127.0.0.1:{port}")
        started.append(gateway)
        # Drain the output as it comes, so a full pipe never blocks the server.
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(
            target=lambda: gateway.output.extend(iter(lambda: stdout.read1(4096), b"")),
            daemon=True,
        ).start()
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{gateway.base_url}/ready", timeout=1).status_code == 200:
                    return gateway
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the gateway did not start:\n{gateway.log()}")
            time.sleep(0.05)

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait(5)
