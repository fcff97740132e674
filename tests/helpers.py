"""Helpers shared by the HTTP scenario tests: raw sockets, SSE parsing, trace lookups."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.fakes import SlowCatalog, WordCounter
from tests.log_audit import SESSION_AUDIT
from xrouter.application.registry import ModelRegistry
from xrouter.domain.lifecycle import Action


def sse_events(raw: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(events, data lines that are not JSON) of an SSE body."""
    events: list[dict[str, Any]] = []
    others: list[str] = []
    for block in raw.split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        for line in data:
            if line.startswith("{"):
                events.append(json.loads(line))
            else:
                others.append(line)
    return events, others


def raw_post(
    server: LiveServer, body: dict[str, Any], request_id: str, path: str = "/v1/responses"
) -> socket.socket:
    """Send a POST over a plain socket and return the socket, still open."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\n".encode()
        + b"host: test\r\ncontent-type: application/json\r\n"
        + f"x-request-id: {request_id}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def trace(server: LiveServer, request_id: str) -> list[Action]:
    return [event.action for event in server.listener.traces().get(request_id, [])]


def usage_records(server: LiveServer, request_id: str) -> list[Any]:
    analytics = server.container.analytics()
    return list(analytics.for_request(request_id))


def server_with_slow_stage(serve_with: Callable[..., LiveServer], stage: str) -> LiveServer:
    container = make_container()
    if stage == "ingest":
        container.catalog.override(
            providers.Singleton(
                SlowCatalog, providers.Singleton(ModelRegistry, container.model_providers), 3.0
            )
        )
    else:
        container.token_counter.override(providers.Object(WordCounter(delay_s=3.0)))
    return serve_with(container=container)


@contextmanager
def running_xrouter(env: dict[str, str], *, start_timeout: float = 15) -> Iterator[str]:
    """`xrouter serve` as a user runs it, on a free loopback port; yields its base URL. Its
    environment's secrets and its whole output go to the log audit (tests/log_audit.py)."""
    SESSION_AUDIT.add_env(env)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "xrouter"), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "XR_LOG_LEVEL": "WARNING", **env},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                httpx.get(f"{base_url}/health", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    output = process.stdout.read().decode() if process.stdout else ""
                    SESSION_AUDIT.add_text(output)
                    raise RuntimeError(f"xrouter did not start:\n{output}") from None
                time.sleep(0.05)
        yield base_url
    finally:
        process.terminate()
        # communicate() drains the pipe while waiting, so a chatty server never blocks on it.
        SESSION_AUDIT.add_text(process.communicate(timeout=15)[0].decode(errors="replace"))


class LogLines(logging.Handler):
    """Every record one logger emits, as "LEVEL message" lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@contextmanager
def captured_log(name: str) -> Iterator[LogLines]:
    """What logger `name` logs, at DEBUG, through a handler of its own (an app built earlier
    in the session may have reconfigured the root logger)."""
    logger = logging.getLogger(name)
    handler, level = LogLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
