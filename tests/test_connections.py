"""Connection limits of `xrouter serve` (entrypoints/http/connections.py), with real sockets
against the server as the CLI runs it: slow heads, idle keep-alive, oversized heads, too many
connections. Each refusal answers a JSON error, closes, and logs a line naming its setting."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (monotonic)."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic()


def error_of(raw: bytes) -> dict[str, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    error: dict[str, Any] = json.loads(body)["error"]
    return error


def health_ok(server: LiveServer) -> bool:
    with server.client() as http:
        return http.get("/health").status_code == 200


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def connection_log() -> Iterator[Lines]:
    """The lines `xrouter.connections` logs. A handler of its own: Litestar reconfigures the
    root logger when an app is built, which drops pytest's caplog handler."""
    logger = logging.getLogger("xrouter.connections")
    lines, level = Lines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(lines)
    logger.setLevel(level)


def lines_naming(log: Lines, setting: str) -> list[str]:
    return [line for line in log.lines if setting in line]


# --- the request head must arrive in time ----------------------------------------------------


def test_slowloris_client_is_cut_after_the_header_timeout(
    serve_as_cli: Any, connection_log: Lines
) -> None:
    server = serve_as_cli(header_timeout_s=1.0)
    sock = connect(server)
    started = time.monotonic()
    sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\n")
    # One header byte every 0.2 s: always sending, never finishing.
    sock.settimeout(0.2)
    answer = b""
    while time.monotonic() - started < 5:
        try:
            sock.sendall(b"X")
            answer = sock.recv(65536)
            break  # the server spoke (or closed)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    rest, closed_at = read_until_closed(sock)
    sock.close()
    answer += rest
    assert 0.9 <= closed_at - started < 3.0, closed_at - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    error = error_of(answer)
    assert error["code"] == "request_timeout"
    assert "XR_HEADER_TIMEOUT_S" in error["message"]
    assert lines_naming(connection_log, "XR_HEADER_TIMEOUT_S")
    assert health_ok(server)


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    serve_as_cli: Any,
) -> None:
    server = serve_as_cli(header_timeout_s=0.5)
    sock = connect(server)
    started = time.monotonic()
    answer, closed_at = read_until_closed(sock)
    sock.close()
    assert 0.4 <= closed_at - started < 2.5, closed_at - started
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_a_slow_request_body_is_not_cut_by_the_header_timeout(serve_as_cli: Any) -> None:
    """The deadline is for the head: a body may take its time once the headers are in."""
    server = serve_as_cli(header_timeout_s=0.5)
    body = json.dumps({"model": "local/echo", "input": "slow body"}).encode()
    sock = connect(server)
    sock.sendall(
        b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    for i in range(0, len(body), 10):
        time.sleep(0.1)
        sock.sendall(body[i : i + 10])
    sock.settimeout(10)
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"slow body" in answer


# --- idle keep-alive -------------------------------------------------------------------------


def test_idle_keepalive_connection_is_closed_after_the_idle_timeout(
    serve_as_cli: Any, connection_log: Lines
) -> None:
    server = serve_as_cli(keepalive_timeout_s=0.5, header_timeout_s=30.0)
    sock = connect(server)
    sock.sendall(HEALTH)
    sock.settimeout(5)
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    # A second request on the same connection works while it is fresh...
    sock.sendall(HEALTH)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    idle_from = time.monotonic()
    # ...then, idle, the server closes it.
    rest, closed_at = read_until_closed(sock)
    sock.close()
    assert rest == b""
    assert 0.4 <= closed_at - idle_from < 2.0, closed_at - idle_from
    assert lines_naming(connection_log, "XR_KEEPALIVE_TIMEOUT_S")


# --- head size and header count --------------------------------------------------------------


def test_one_megabyte_header_gets_431_quickly_and_others_are_served(
    serve_as_cli: Any, connection_log: Lines
) -> None:
    server = serve_as_cli()
    sock = connect(server)
    started = time.monotonic()
    # The server may stop reading before all of it is sent.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    answer, closed_at = read_until_closed(sock)
    sock.close()
    assert closed_at - started < 3.0
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    error = error_of(answer)
    assert error["code"] == "request_header_fields_too_large"
    assert "XR_MAX_HEADER_BYTES" in error["message"]
    assert lines_naming(connection_log, "XR_MAX_HEADER_BYTES")
    assert health_ok(server)


def test_head_under_the_byte_limit_is_served(serve_as_cli: Any) -> None:
    server = serve_as_cli(max_header_bytes=4096)
    with server.client() as http:
        assert http.get("/health", headers={"x-fits": "a" * 3000}).status_code == 200
        # The limit counts the head: 3000 bytes fit, 5000 do not.
        try:
            response = http.get("/health", headers={"x-too-big": "a" * 5000})
        except httpx.TransportError:
            pytest.fail("the server must answer 431, not just drop the connection")
        assert response.status_code == 431


def test_header_count_over_the_limit_gets_431(serve_as_cli: Any) -> None:
    server = serve_as_cli(max_header_count=100)
    with server.client() as http:
        fine = http.get("/health", headers={f"x-h{i}": "v" for i in range(90)})
        assert fine.status_code == 200
        over = http.get("/health", headers={f"x-h{i}": "v" for i in range(200)})
    assert over.status_code == 431
    assert over.headers["connection"] == "close"
    error = over.json()["error"]
    assert "XR_MAX_HEADER_COUNT" in error["message"]
    assert "100 headers" in error["message"]


# --- connection limit ------------------------------------------------------------------------


def test_connections_over_the_limit_are_refused_while_existing_ones_work(
    serve_as_cli: Any, connection_log: Lines
) -> None:
    server = serve_as_cli(max_connections=4, header_timeout_s=30.0)
    held = [connect(server) for _ in range(4)]
    time.sleep(0.2)  # let the server register them
    refused = []
    for _ in range(20):
        extra = connect(server)
        started = time.monotonic()
        answer, closed_at = read_until_closed(extra)
        extra.close()
        assert closed_at - started < 1.0, "a refusal is immediate"
        refused.append(answer)
    assert all(a.startswith(b"HTTP/1.1 503") for a in refused), refused[0]
    error = error_of(refused[0])
    assert error["code"] == "too_many_connections"
    assert "XR_MAX_CONNECTIONS" in error["message"]
    # Rate-limited: twenty refusals, one log line.
    assert len(lines_naming(connection_log, "XR_MAX_CONNECTIONS")) == 1
    # The connections already open keep working.
    for sock in held:
        sock.sendall(HEALTH)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    # One closes; a new one gets in.
    held.pop().close()
    time.sleep(0.2)
    assert health_ok(server)
    for sock in held:
        sock.close()
