"""Http1Transport (the lean HTTP/1.1 transport under httpx) over real loopback: against the
fake upstream (tests/upstreams.py) and small raw servers written here for wire-level cases."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import itertools
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.scripted_server import Peer, Script, ScriptedServer
from tests.upstreams import End, FakeUpstream, Reply
from xrouter.adapters.providers import http1
from xrouter.adapters.providers.http1 import (
    Http1Transport,
    ResponseHeadTooLarge,
    environment_proxy_mounts,
)
from xrouter.adapters.providers.http1.connection import Connection, Stale
from xrouter.adapters.providers.http1.pool import Pool
from xrouter.adapters.providers.http1.proxies import environment_proxies
from xrouter.adapters.providers.transport import HttpTransport, TransportSettings

CHAT = "/v1/chat/completions"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def client(
    base_url: str,
    *,
    max_connections: int | None = 8,
    keepalive_expiry: float | None = 5.0,
    ssl_context: ssl.SSLContext | None = None,
    timeout: httpx.Timeout | float = 5.0,
) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
    )
    return httpx.AsyncClient(
        base_url=base_url,
        transport=Http1Transport(ssl_context=ssl_context, limits=limits),
        timeout=timeout,
        trust_env=False,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A loopback server in the test's own loop; yields its origin."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            tasks.discard(task)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


# -- keep-alive and pooling --------------------------------------------------------------


async def test_sequential_requests_reuse_one_connection(fake_upstream: FakeUpstream) -> None:
    async with client(fake_upstream.base_url) as http:
        for n in range(20):
            response = await http.post("/chat/completions", json=_chat(f"hello {n}"))
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == f"hello {n}"
            assert response.http_version == "HTTP/1.1"
            assert response.reason_phrase == "OK"
        streamed = await http.post("/chat/completions", json=_chat("one two", stream=True))
        assert streamed.text.endswith("data: [DONE]\n\n")
        assert (await http.get("/models")).json()["data"][0]["id"] == "gpt-test"
    assert fake_upstream.hits() == 22
    assert fake_upstream.connections == 1


async def test_concurrency_up_to_the_limit_then_pool_timeout(fake_upstream: FakeUpstream) -> None:
    stalled = Reply.sse([{"n": 1}], done=False, end="stall")
    fake_upstream.script(CHAT, [stalled, stalled])
    timeout = httpx.Timeout(5.0, pool=0.2)
    async with client(fake_upstream.base_url, max_connections=2, timeout=timeout) as http:
        first = await http.send(http.build_request("POST", "/chat/completions"), stream=True)
        second = await http.send(http.build_request("POST", "/chat/completions"), stream=True)
        started = time.monotonic()
        with pytest.raises(httpx.PoolTimeout):
            await http.post("/chat/completions", json=_chat("third"))
        assert 0.15 < time.monotonic() - started < 2.0
        # A waiter gets the slot freed by a closed (half-read) response.
        waiting = asyncio.ensure_future(http.post("/chat/completions", json=_chat("waited")))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await first.aclose()
        answer = await waiting
        assert answer.json()["choices"][0]["message"]["content"] == "waited"
        await second.aclose()
    assert fake_upstream.connections == 3


async def test_waiters_are_handed_released_connections(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(CHAT, Reply.sse([{"n": n} for n in range(3)], chunk_delay_s=0.05))
    async with client(fake_upstream.base_url, max_connections=1) as http:
        slow = asyncio.ensure_future(http.post("/chat/completions", json=_chat("slow")))
        await asyncio.sleep(0.02)
        quick = [
            asyncio.ensure_future(http.post("/chat/completions", json=_chat(f"q{n}")))
            for n in range(5)
        ]
        assert (await slow).text.count("data:") == 4
        answers = await asyncio.gather(*quick)
    assert [a.json()["choices"][0]["message"]["content"] for a in answers] == [
        f"q{n}" for n in range(5)
    ]
    assert fake_upstream.connections == 1


async def test_many_concurrent_requests_share_a_bounded_pool(fake_upstream: FakeUpstream) -> None:
    async with client(fake_upstream.base_url, max_connections=4) as http:

        async def one(n: int) -> str:
            response = await http.post("/chat/completions", json=_chat(f"n{n}"))
            return str(response.json()["choices"][0]["message"]["content"])

        answers = await asyncio.gather(*(one(n) for n in range(64)))
    assert answers == [f"n{n}" for n in range(64)]
    assert fake_upstream.connections <= 4


async def test_idle_connections_expire(fake_upstream: FakeUpstream) -> None:
    async with client(fake_upstream.base_url, keepalive_expiry=0.05) as http:
        await http.get("/models")
        await asyncio.sleep(0.15)
        await http.get("/models")
    assert fake_upstream.connections == 2


async def test_aclose_closes_pooled_connections() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if not await reader.read(1):
            closed.set()

    async with raw_server(handler) as origin:
        http = client(origin)
        assert (await http.get("/")).text == "ok"
        assert not closed.is_set()
        await http.aclose()
        await asyncio.wait_for(closed.wait(), 2)
        with pytest.raises(RuntimeError):
            await http.get("/")


# -- bodies ------------------------------------------------------------------------------


async def test_chunked_body_is_streamed_as_it_arrives(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(CHAT, Reply.sse([{"n": n} for n in range(4)], chunk_delay_s=0.2))
    async with client(fake_upstream.base_url) as http:
        started = time.monotonic()
        arrivals: list[float] = []
        parts: list[bytes] = []
        async with http.stream("POST", "/chat/completions", json=_chat("x")) as response:
            assert response.headers["transfer-encoding"] == "chunked"
            async for part in response.aiter_bytes():
                arrivals.append(time.monotonic() - started)
                parts.append(part)
        await http.get("/models")
    assert arrivals[0] < 0.15  # the first frame, long before the last one is even sent
    assert arrivals[-1] > 0.55
    assert len(parts) >= 4
    assert b"".join(parts).count(b"data: ") == 5
    assert fake_upstream.connections == 1  # the fully read stream went back to the pool


async def test_large_content_length_body_streams_in_parts(fake_upstream: FakeUpstream) -> None:
    body = bytes(range(256)) * 16_384  # 4 MiB
    fake_upstream.script(CHAT, Reply(body=body))
    async with client(fake_upstream.base_url) as http:
        parts: list[bytes] = []
        async with http.stream("POST", "/chat/completions", content=b"{}") as response:
            assert response.headers["content-length"] == str(len(body))
            async for part in response.aiter_raw():
                parts.append(part)
                if len(parts) == 1:
                    await asyncio.sleep(0.05)  # a slow reader: the socket is paused meanwhile
        assert len(parts) > 1
        assert b"".join(parts) == body
        assert (await http.get("/models")).status_code == 200
    assert fake_upstream.connections == 1


async def test_body_read_until_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"part two")
        await writer.drain()
        writer.close()

    async with raw_server(handler) as origin, client(origin) as http:
        assert (await http.get("/")).text == "part one, part two"
        assert (await http.get("/")).text == "part one, part two"  # on a new connection


async def test_interim_responses_are_skipped_and_headers_kept_in_order() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 201 Created Here\r\nX-A: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"content-length: 4\r\n\r\ndone"
        )
        await writer.drain()
        await reader.read(1)

    async with raw_server(handler) as origin, client(origin) as http:
        response = await http.get("/")
    assert (response.status_code, response.reason_phrase, response.text) == (
        201,
        "Created Here",
        "done",
    )
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert "link" not in response.headers
    assert response.headers["X-A"] == "1"


async def test_head_and_no_content_answers_have_no_body(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script("/v1/thing", [Reply(status=204), Reply(status=200, body=b"abc")])
    async with client(fake_upstream.base_url) as http:
        assert (await http.get("/thing")).status_code == 204
        head = await http.head("/thing")
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == "3"
        assert (await http.get("/models")).status_code == 200


PIECES = [b"data: a", b"\ndata: bb\n\ndata: cccccc\n", b"\nxy"]
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n%b\r\n" % (len(PIECES[0]), PIECES[0])
    + b"%x;ext=1\r\n%b\r\n" % (len(PIECES[1]), PIECES[1])
    + b"%X\r\n%b\r\n" % (len(PIECES[2]), PIECES[2])
    + b"0\r\nX-Trailer: t\r\n\r\n"
)
RESPONSE_BODY = b"".join(PIECES)


class _FakeTransport(asyncio.Transport):
    """Just enough of a socket transport to drive a Connection by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def _feed_and_read(segments: list[bytes]) -> tuple[httpx.Response, bytes, bool]:
    """Drive one exchange on a hand-made connection: the answer arrives in `segments`."""
    pool = Pool(asyncio.get_running_loop(), "example.test", 80, None, httpx.Limits())
    pool._total = 1
    conn = Connection(pool)
    wire = _FakeTransport()
    conn.connection_made(wire)
    request = httpx.Request("GET", "http://example.test/x")
    await conn.send(request, b"GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n", b"", False, 1.0)

    async def feed() -> None:
        for segment in segments:
            await asyncio.sleep(0)
            conn.data_received(segment)

    feeding = asyncio.ensure_future(feed())
    response = await conn.receive_head(1.0)
    body = b"".join([part async for part in response.aiter_raw()])
    await feeding
    return response, body, pool._idle == [conn]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(RESPONSE) - 1), max_size=12, unique=True))
def test_any_split_of_a_chunked_answer_parses_the_same(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(RESPONSE)]
    segments = [RESPONSE[a:b] for a, b in itertools.pairwise(points)]
    response, body, reused = asyncio.run(_feed_and_read(segments))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert "x-trailer" not in response.headers  # a trailer, however the bytes were split
    assert body == RESPONSE_BODY
    assert reused


@pytest.mark.parametrize("size", [1, 2, 5, 13, 64, 1000])
async def test_chunked_answer_split_on_the_wire(size: int) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            for start in range(0, len(RESPONSE), size):
                writer.write(RESPONSE[start : start + size])
                await writer.drain()
                await asyncio.sleep(0)

    async with raw_server(handler) as origin, client(origin) as http:
        for _ in range(3):
            response = await http.get("/")
            assert response.content == RESPONSE_BODY


# -- requests ----------------------------------------------------------------------------


async def test_request_head_is_sent_once_with_the_callers_headers() -> None:
    heads: list[bytes] = []
    bodies: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            heads.append(head)
            length = [
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if length:
                bodies.append(await reader.readexactly(length[0]))
            elif b"chunked" in head.lower():
                data = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    data += (await reader.readexactly(size + 2))[:-2]
                    if size == 0:
                        break
                bodies.append(data)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def upload() -> AsyncIterator[bytes]:
        yield b"part-1,"
        yield b""
        yield b"part-2"

    async with raw_server(handler) as origin, client(origin) as http:
        await http.post(
            "/v1/x?a=1&b=%20",
            content=b'{"k": 1}',
            headers={"HOST": "upstream.example", "X-Custom": "Value", "content-LENGTH": "8"},
        )
        await http.post("/up", content=upload())
        await http.get("/g")
        await http.post("/empty")
    first = heads[0].decode("latin-1").split("\r\n")
    assert first[0] == "POST /v1/x?a=1&b=%20 HTTP/1.1"
    lowered = [line.lower() for line in first[1:] if line]
    assert [line for line in lowered if line.startswith("host:")] == ["host: upstream.example"]
    assert [line for line in lowered if line.startswith("content-length:")] == ["content-length: 8"]
    assert "X-Custom: Value" in first
    assert bodies[0] == b'{"k": 1}'
    assert b"transfer-encoding: chunked" in heads[1].lower()
    assert bodies[1] == b"part-1,part-2"
    assert b"content-length" not in heads[2].lower()
    assert heads[2].startswith(b"GET /g HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"content-length: 0" in heads[3].lower()


async def test_header_injection_is_refused(fake_upstream: FakeUpstream) -> None:
    async with client(fake_upstream.base_url) as http:
        with pytest.raises(httpx.LocalProtocolError):
            await http.get("/models", headers={"X-Evil": "a\r\nX-Injected: 1"})
        assert (await http.get("/models")).status_code == 200
    assert all("x-injected" not in r.headers for r in fake_upstream.received)


# -- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("end", "errors"),
    [
        ("drop", (httpx.RemoteProtocolError,)),
        ("reset", (httpx.ReadError, httpx.RemoteProtocolError)),
    ],
)
async def test_a_connection_lost_mid_body_fails_the_read(
    fake_upstream: FakeUpstream, end: End, errors: tuple[type[Exception], ...]
) -> None:
    fake_upstream.script(CHAT, Reply.sse([{"n": 1}, {"n": 2}], done=False, end=end))
    async with client(fake_upstream.base_url) as http:
        async with http.stream("POST", "/chat/completions", content=b"{}") as response:
            with pytest.raises(errors):
                async for _ in response.aiter_bytes():
                    pass
        assert (await http.get("/models")).status_code == 200
    assert fake_upstream.connections == 2


async def test_a_truncated_content_length_body_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    async with raw_server(handler) as origin, client(origin) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            await http.get("/")


async def test_a_malformed_answer_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await reader.read(1)

    async with raw_server(handler) as origin, client(origin) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")


async def test_a_stall_is_a_read_timeout(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(CHAT, [Reply.stall(), Reply.sse([{"n": 1}], done=False, end="stall")])
    timeout = httpx.Timeout(5.0, read=0.2)
    async with client(fake_upstream.base_url, timeout=timeout) as http:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/chat/completions", content=b"{}")
        assert 0.15 < time.monotonic() - started < 1.0
        async with http.stream("POST", "/chat/completions", content=b"{}") as response:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                async for _ in response.aiter_bytes():
                    pass
            assert 0.15 < time.monotonic() - started < 1.0
        assert (await http.get("/models")).status_code == 200
    assert fake_upstream.connections == 3  # timed-out connections are never reused


async def test_connection_refused_is_a_connect_error() -> None:
    async with client(f"http://127.0.0.1:{closed_port()}") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/")
        with pytest.raises(httpx.ConnectError):
            await http.get("/")  # the failed attempt gave its slot back


async def test_a_connect_timeout_is_reported() -> None:
    # 192.0.2.0/24 (TEST-NET-1) is unroutable: connecting hangs or fails fast, per sandbox.
    async with client("http://192.0.2.1:81", timeout=httpx.Timeout(5.0, connect=0.2)) as http:
        with pytest.raises((httpx.ConnectTimeout, httpx.ConnectError)):
            await http.get("/")


async def test_aclose_mid_body_does_not_return_the_connection(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(CHAT, Reply.sse([{"n": 1}, {"n": 2}], done=False, end="stall"))
    async with client(fake_upstream.base_url) as http:
        async with http.stream("POST", "/chat/completions", content=b"{}") as response:
            async for part in response.aiter_bytes():
                assert b'"n":1' in part
                break
        assert await asyncio.to_thread(fake_upstream.wait_until, lambda u: u.client_aborts == 1)
        assert (await http.get("/models")).status_code == 200
    assert fake_upstream.connections == 2


async def test_a_server_closing_idle_connections_is_transparent(
    fake_upstream: FakeUpstream,
) -> None:
    # The fake closes a connection after answering a `Connection: close` request, while its
    # answer says nothing about it: to the client, a keep-alive connection closed while idle.
    async with client(fake_upstream.base_url) as http:
        for _ in range(3):
            response = await http.get("/models", headers={"Connection": "close"})
            assert response.status_code == 200
            await asyncio.sleep(0.05)
        for _ in range(3):  # back to back: the close may or may not be seen before reuse
            response = await http.get("/models", headers={"Connection": "close"})
            assert response.status_code == 200
    assert fake_upstream.hits() == 6
    assert fake_upstream.connections >= 6


OK_KEEP_ALIVE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def answer_once_then_hang_up(peer: Peer) -> None:
    """The first request on each connection is answered; the second is read, then the server
    closes without a byte of answer (what an upstream dying mid-request looks like)."""
    await peer.read_request()
    await peer.send(OK_KEEP_ALIVE)
    await peer.read_request()
    peer.close()


async def test_a_post_is_never_sent_twice_when_a_reused_connection_closes_unanswered() -> None:
    with ScriptedServer(answer_once_then_hang_up) as server:
        async with client(server.origin) as http:
            assert (await http.post("/v1/generate", content=b"{}")).text == "ok"
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await http.post("/v1/generate", content=b'{"bill": "once"}')
        assert await asyncio.to_thread(server.wait_until, lambda s: s.connections >= 1)
        await asyncio.sleep(0.05)  # a resent POST, if any, would have arrived by now
    assert [(r.method, r.body, r.connection) for r in server.requests] == [
        ("POST", b"{}", 1),
        ("POST", b'{"bill": "once"}', 1),
    ]
    assert server.connections == 1


async def test_an_idempotent_request_on_a_reused_connection_closed_unanswered_is_resent() -> None:
    with ScriptedServer(answer_once_then_hang_up) as server:
        async with client(server.origin) as http:
            assert (await http.get("/v1/models")).text == "ok"
            assert (await http.get("/v1/models")).text == "ok"  # resent on a new connection
    assert [(r.method, r.connection) for r in server.requests] == [
        ("GET", 1),
        ("GET", 1),
        ("GET", 2),
    ]


async def test_an_idempotent_streamed_upload_is_not_resent() -> None:
    async def upload() -> AsyncIterator[bytes]:
        yield b"{}"

    with ScriptedServer(answer_once_then_hang_up) as server:
        async with client(server.origin) as http:
            await http.put("/v1/thing", content=b"{}")
            with pytest.raises(httpx.RemoteProtocolError):
                await http.put("/v1/thing", content=upload())  # a one-shot body
    assert server.methods() == ["PUT", "PUT"]


async def test_a_connection_closed_while_idle_is_not_reused_even_before_the_loop_sees_it() -> None:
    # The server closes an idle keep-alive connection while the client's event loop is busy:
    # the FIN waits in the kernel, undelivered. Reusing the connection would send the POST
    # into a closed connection, and a POST that met a closed connection cannot be resent.
    async def answer_then_close_when_idle(peer: Peer) -> None:
        while await peer.read_request():
            await peer.send(OK_KEEP_ALIVE)
            if peer.number == 1:
                await asyncio.sleep(0.02)
                peer.close()
                return

    with ScriptedServer(answer_then_close_when_idle) as server:
        async with client(server.origin) as http:
            assert (await http.post("/v1/generate", content=b"1")).text == "ok"
            time.sleep(0.2)  # noqa: ASYNC251 - block the loop: the close arrives unprocessed
            assert (await http.post("/v1/generate", content=b"2")).text == "ok"
    assert [(r.body, r.connection) for r in server.requests] == [(b"1", 1), (b"2", 2)]


class _ResetTransport(_FakeTransport):
    """A socket the peer already reset: the first send fails and the transport closes."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.closing = True


async def test_a_first_write_the_kernel_refuses_counts_as_not_sent() -> None:
    pool = Pool(asyncio.get_running_loop(), "example.test", 80, None, httpx.Limits())
    conn = Connection(pool)
    conn.connection_made(_ResetTransport())
    request = httpx.Request("POST", "http://example.test/x", content=b"{}")
    with pytest.raises(Stale) as refused:
        await conn.send(request, b"POST /x HTTP/1.1\r\n\r\n", b"{}", False, 1.0)
    assert refused.value.unsent  # so the transport may send it elsewhere, even a POST


async def test_a_peer_that_does_not_read_is_a_write_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    timeout = httpx.Timeout(5.0, write=0.2)
    async with raw_server(handler) as origin, client(origin, timeout=timeout) as http:
        started = time.monotonic()
        with pytest.raises(httpx.WriteTimeout):
            await http.post("/", content=b"x" * (64 * 1024 * 1024))
        assert time.monotonic() - started < 3.0


async def test_a_cancelled_request_frees_its_connection(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(CHAT, Reply.stall())
    async with client(fake_upstream.base_url, max_connections=1) as http:
        stuck = asyncio.ensure_future(http.post("/chat/completions", content=b"{}"))
        await asyncio.sleep(0.1)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        response = await http.post("/chat/completions", json=_chat("after"))
        assert response.json()["choices"][0]["message"]["content"] == "after"
    assert fake_upstream.connections == 2


async def test_connection_close_answers_are_not_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read(1)

    async with raw_server(handler) as origin, client(origin) as http:
        for _ in range(3):
            assert (await http.get("/")).text == "ok"
    assert connections == 3


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_upstream(ca: trustme.CA) -> Any:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    with FakeUpstream(tls=server) as upstream:
        yield upstream


async def test_https_with_a_trusted_ca(tls_upstream: FakeUpstream, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with client(tls_upstream.base_url, ssl_context=context) as http:
        for n in range(5):
            response = await http.post("/chat/completions", json=_chat(f"secure {n}"))
            assert response.json()["choices"][0]["message"]["content"] == f"secure {n}"
        streamed = await http.post("/chat/completions", json=_chat("a b", stream=True))
        assert streamed.text.endswith("data: [DONE]\n\n")
    assert tls_upstream.connections == 1


async def test_https_with_an_untrusted_certificate_is_a_connect_error(
    tls_upstream: FakeUpstream,
) -> None:
    async with client(tls_upstream.base_url) as http:  # the default trust store
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get("/models")


# -- the gateway's transport ----------------------------------------------------------------


async def test_http_transport_builds_its_client_on_http1(fake_upstream: FakeUpstream) -> None:
    transport = HttpTransport(
        "fake", TransportSettings(base_url=fake_upstream.base_url, trust_env=False)
    )
    try:
        assert isinstance(transport._client._transport, Http1Transport)
        for _ in range(3):
            reply = await transport.post_json("/chat/completions", json_body("hi"), {})
            assert reply.json()["choices"][0]["message"]["content"] == "hi"
    finally:
        await transport.aclose()
    assert fake_upstream.connections == 1


def json_body(text: str) -> bytes:
    return httpx.Request("POST", "http://x", json=_chat(text)).content


def _chat(text: str, *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return body


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


async def test_environment_proxies_still_apply(
    fake_upstream: FakeUpstream, clean_proxy_env: pytest.MonkeyPatch
) -> None:
    # The fake upstream plays the proxy: it receives the absolute-form target.
    clean_proxy_env.setenv("HTTP_PROXY", fake_upstream.origin)
    transport = HttpTransport("fake", TransportSettings(base_url="http://upstream.invalid/v1"))
    try:
        models = await transport.get_json("/models", {})
    finally:
        await transport.aclose()
    assert models["data"][0]["id"] == "gpt-test"
    assert fake_upstream.received[0].path == "http://upstream.invalid/v1/models"


async def test_no_proxy_hosts_use_the_lean_transport(
    fake_upstream: FakeUpstream, clean_proxy_env: pytest.MonkeyPatch
) -> None:
    clean_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    clean_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    transport = HttpTransport("fake", TransportSettings(base_url=fake_upstream.base_url))
    try:
        models = await transport.get_json("/models", {})
    finally:
        await transport.aclose()
    assert models["data"][0]["id"] == "gpt-test"
    assert fake_upstream.received[0].path == "/v1/models"


# -- response heads and trailers -------------------------------------------------------------


async def test_trailers_are_not_merged_into_the_headers() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: h\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Trailer: t\r\nX-Head: forged\r\n\r\n"
    )

    async def trailers(peer: Peer) -> None:
        while await peer.read_request():
            await peer.send(answer)  # one write: the trailers parse before the head returns

    with ScriptedServer(trailers) as server:
        async with client(server.origin) as http:
            for _ in range(2):
                response = await http.get("/")
                assert response.content == b"hello"
                assert response.headers.raw == [
                    (b"Transfer-Encoding", b"chunked"),
                    (b"X-Head", b"h"),
                ]
    assert server.connections == 1  # the trailers ended the message cleanly


def big_header_answer(size: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * size + b"\r\nContent-Length: 2\r\n\r\nok"


async def test_an_oversized_response_head_is_a_protocol_error() -> None:
    async def big_head_first(peer: Peer) -> None:
        while request := await peer.read_request():
            size = 200 * 1024 if request.target == "/big" else 10
            for start in range(0, size, 16 * 1024):  # a head arriving in pieces
                await peer.send(big_header_answer(size)[start : start + 16 * 1024])
            await peer.send(big_header_answer(size)[size // (16 * 1024) * 16 * 1024 :])

    with ScriptedServer(big_head_first) as server:
        async with client(server.origin) as http:
            with pytest.raises(ResponseHeadTooLarge, match="larger than 102400 bytes") as big:
                await http.get("/big")
            assert big.value.limit == 102400
            assert (await http.get("/small")).text == "ok"
    assert server.connections == 2  # the oversized answer's connection was dropped


async def test_the_response_head_limit_is_a_constructor_setting() -> None:
    async def sized(peer: Peer) -> None:
        while request := await peer.read_request():
            await peer.send(big_header_answer(int(request.target[1:])))

    transport = Http1Transport(max_response_head_bytes=1024)
    with ScriptedServer(sized) as server:
        async with httpx.AsyncClient(base_url=server.origin, transport=transport) as http:
            assert (await http.get("/900")).text == "ok"
            with pytest.raises(httpx.RemoteProtocolError, match="larger than 1024 bytes"):
                await http.get("/2000")  # in one write: bounded by the parsed head's size


async def test_an_endless_trailer_is_cut_at_the_head_limit() -> None:
    async def endless_trailer(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: "
        )
        for _ in range(64):  # 4 MiB of one trailer line, never ended
            await peer.send(b"t" * 65536)
        await peer.until_client_leaves()

    with ScriptedServer(endless_trailer) as server:
        async with client(server.origin) as http:
            with pytest.raises(httpx.RemoteProtocolError, match="framing or trailers larger"):
                await http.get("/")


# -- reading raw bytes, and abandoning a body ------------------------------------------------


async def test_closing_a_half_read_raw_response_drops_the_connection() -> None:
    # How the gateway aborts an oversized upstream body: read raw parts, then close early.
    body = bytes(range(256)) * 8192  # 2 MiB
    left: list[int] = []

    async def big_then_small(peer: Peer) -> None:
        while request := await peer.read_request():
            if request.target == "/big":
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                await peer.send(body[:65536])
                await peer.until_client_leaves()
                left.append(peer.number)
                return
            await peer.send(OK_KEEP_ALIVE)

    with ScriptedServer(big_then_small) as server:
        async with client(server.origin) as http:
            async with http.stream("GET", "/big") as response:
                received = 0
                async for part in response.aiter_raw():
                    received += len(part)
                    break
                assert 0 < received < len(body)
            assert await asyncio.to_thread(server.wait_until, lambda s: left == [1])
            assert (await http.get("/small")).text == "ok"
            assert isinstance(http._transport, Http1Transport)
            assert http._transport.open_connections() == 1  # the new one, idle
    assert [(r.target, r.connection) for r in server.requests] == [("/big", 1), ("/small", 2)]


# -- connecting ------------------------------------------------------------------------------


def _addresses(*sockaddrs: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return [
        (
            socket.AF_INET6 if ":" in sockaddr[0] else socket.AF_INET,
            socket.SOCK_STREAM,
            6,
            "",
            sockaddr,
        )
        for sockaddr in sockaddrs
    ]


def resolve_to(
    monkeypatch: pytest.MonkeyPatch, name: str, addresses: list[tuple[Any, ...]]
) -> None:
    """Make the running loop resolve `name` to `addresses` (DNS is not ours to script)."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, **options: Any) -> list[tuple[Any, ...]]:
        if host != name:  # uvloop's sock_connect resolves the address it was given
            return await real(host, port, **options)
        return addresses

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


async def serve_ok(peer: Peer) -> None:
    while await peer.read_request():
        await peer.send(OK_KEEP_ALIVE)


async def test_happy_eyeballs_tries_the_next_address_while_the_first_one_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A listener with a full accept queue drops SYNs: connecting to it hangs, like a
    # black-holed address. Without happy eyeballs the connect waits for its timeout.
    with socket.socket() as hole, socket.socket() as filler, ScriptedServer(serve_ok) as server:
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        filler.connect(hole.getsockname())
        resolve_to(
            monkeypatch, "upstream.test", _addresses(hole.getsockname(), ("127.0.0.1", server.port))
        )
        timeout = httpx.Timeout(10.0, connect=5.0)
        async with client(f"http://upstream.test:{server.port}", timeout=timeout) as http:
            started = time.monotonic()
            assert (await http.get("/")).text == "ok"
            elapsed = time.monotonic() - started
    assert 0.2 < elapsed < 1.5  # the second address starts 0.25 s after the first


async def test_localhost_with_ipv6_refused_connects_over_ipv4(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with ScriptedServer(serve_ok) as server:  # listens on 127.0.0.1 only: ::1 refuses
        resolve_to(
            monkeypatch,
            "localhost",
            _addresses(("::1", server.port, 0, 0), ("127.0.0.1", server.port)),
        )
        async with client(f"http://localhost:{server.port}") as http:
            started = time.monotonic()
            assert (await http.get("/")).text == "ok"
            assert time.monotonic() - started < 1.0
    assert server.connections == 1


async def test_when_every_address_fails_the_error_names_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = closed_port()
    resolve_to(monkeypatch, "both.test", _addresses(("::1", port, 0, 0), ("127.0.0.1", port)))
    async with client(f"http://both.test:{port}") as http:
        started = time.monotonic()
        with pytest.raises(httpx.ConnectError) as refused:
            await http.get("/")
        assert time.monotonic() - started < 0.2  # a refusal starts the next address at once
    assert "::1" in str(refused.value)
    assert "127.0.0.1" in str(refused.value)


# -- slot accounting under cancellation --------------------------------------------------------

LIMIT = 3
CLOSE_OK = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"


async def answer_and_close(peer: Peer) -> None:
    if await peer.read_request():
        await peer.send(CLOSE_OK)


async def never_read(peer: Peer) -> None:
    await asyncio.sleep(3600)  # the request write fills the socket buffers and waits


async def read_and_stall(peer: Peer) -> None:
    await peer.read_request()
    await peer.until_client_leaves()


STAGES: dict[str, tuple[Script, bool, bytes]] = {
    # stage: (server script, TLS, request body)
    "connect": (answer_and_close, False, b""),
    "tls handshake": (answer_and_close, True, b""),
    "request write": (never_read, False, b"x" * (16 * 1024 * 1024)),
    "waiting for headers": (read_and_stall, False, b""),
}


@pytest.mark.parametrize("stage", list(STAGES))
async def test_cancellation_at_every_await_point_keeps_the_pool_within_its_limit(
    stage: str, ca: trustme.CA
) -> None:
    script, tls, body = STAGES[stage]
    server_tls = client_tls = None
    if tls:
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_tls)
        client_tls = ssl.create_default_context()
        ca.configure_trust(client_tls)
    seen: list[int] = []
    with ScriptedServer(script, tls=server_tls) as server:
        async with client(server.origin, max_connections=LIMIT, ssl_context=client_tls) as http:
            transport = http._transport
            assert isinstance(transport, Http1Transport)

            async def watch() -> None:
                while True:  # the count after every turn of the loop
                    seen.append(transport.open_connections())
                    await asyncio.sleep(0)

            async def cancelled_after(turns: int, delay: float) -> None:
                task = asyncio.ensure_future(http.post("/", content=body))
                for _ in range(turns):
                    await asyncio.sleep(0)
                if delay:
                    await asyncio.sleep(delay)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await task

            watcher = asyncio.ensure_future(watch())
            try:
                # Twice the limit at once, so some wait for a slot; each cancelled after a
                # different number of loop turns, which walks the cancellation through every
                # await of the connect (resolution, connect, handshake) and the exchange.
                for turns in range(40):
                    await asyncio.gather(*(cancelled_after(turns, 0) for _ in range(2 * LIMIT)))
                for delay in (0.001, 0.003, 0.01, 0.03):
                    await asyncio.gather(*(cancelled_after(0, delay) for _ in range(2 * LIMIT)))
                for _ in range(20):
                    await asyncio.sleep(0)  # connection_lost callbacks of the last aborts
                assert transport.open_connections() == 0
            finally:
                watcher.cancel()
    assert min(seen) == 0
    assert max(seen) == LIMIT


# -- proxies from the environment ------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "mounts"),
    [
        ({}, {}),
        (
            {"HTTP_PROXY": "proxy.local:3128", "HTTPS_PROXY": "https://secure.proxy:443"},
            {"http://": "http://proxy.local:3128", "https://": "https://secure.proxy:443"},
        ),
        (
            {
                "ALL_PROXY": "http://all.proxy",
                "NO_PROXY": " .internal, example.com,10.0.0.1,::1,localhost,http://x.test,,",
            },
            {
                "all://": "http://all.proxy",
                "all://*.internal": None,
                "all://*example.com": None,
                "all://10.0.0.1": None,
                "all://[::1]": None,
                "all://localhost": None,
                "http://x.test": None,
            },
        ),
        ({"HTTP_PROXY": "http://p", "NO_PROXY": "a.test,*"}, {}),
    ],
)
def test_environment_proxies_map_like_httpx(
    clean_proxy_env: pytest.MonkeyPatch,
    environment: dict[str, str],
    mounts: dict[str, str | None],
) -> None:
    for name, value in environment.items():
        clean_proxy_env.setenv(name, value)
    assert environment_proxies() == mounts
    built = environment_proxy_mounts(verify=True, limits=httpx.Limits())
    assert {pattern: transport is None for pattern, transport in built.items()} == {
        pattern: proxy is None for pattern, proxy in mounts.items()
    }


def test_the_transport_uses_no_private_httpx_api() -> None:
    # httpx's private names change without notice; a minor upgrade must not break the transport.
    package = Path(http1.__file__).parent
    private = []
    for source in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                names = [f"{node.value.id}.{node.attr}"]
            else:
                continue
            private += [
                f"{source.name}: {name}"
                for name in names
                if name.split(".")[0] in ("httpx", "httpcore")
                and any(part.startswith("_") for part in name.split(".")[1:])
            ]
    assert private == []


# -- on uvloop, the loop `xrouter serve` runs on --------------------------------------------


def _cancellation(
    stage: str,
) -> Callable[[pytest.MonkeyPatch, trustme.CA], Coroutine[Any, Any, None]]:
    return lambda mp, ca: test_cancellation_at_every_await_point_keeps_the_pool_within_its_limit(
        stage, ca
    )


ON_UVLOOP: dict[str, Callable[[pytest.MonkeyPatch, trustme.CA], Coroutine[Any, Any, None]]] = {
    "a POST is not resent": lambda mp, ca: (
        test_a_post_is_never_sent_twice_when_a_reused_connection_closes_unanswered()
    ),
    "a GET is resent": lambda mp, ca: (
        test_an_idempotent_request_on_a_reused_connection_closed_unanswered_is_resent()
    ),
    "an unread close is seen before reuse": lambda mp, ca: (
        test_a_connection_closed_while_idle_is_not_reused_even_before_the_loop_sees_it()
    ),
    "trailers": lambda mp, ca: test_trailers_are_not_merged_into_the_headers(),
    "head limit": lambda mp, ca: test_an_oversized_response_head_is_a_protocol_error(),
    "half-read raw body": lambda mp, ca: (
        test_closing_a_half_read_raw_response_drops_the_connection()
    ),
    "happy eyeballs": lambda mp, ca: (
        test_happy_eyeballs_tries_the_next_address_while_the_first_one_hangs(mp)
    ),
    "ipv6 refused, ipv4 listening": lambda mp, ca: (
        test_localhost_with_ipv6_refused_connects_over_ipv4(mp)
    ),
    **{f"cancellation: {stage}": _cancellation(stage) for stage in STAGES},
}


@pytest.mark.parametrize("name", list(ON_UVLOOP))
def test_on_uvloop(name: str, monkeypatch: pytest.MonkeyPatch, ca: trustme.CA) -> None:
    # uvloop differs from asyncio where this transport leans on the loop (create_connection
    # refuses happy_eyeballs_delay, for one), so the behaviours above run on it too.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(ON_UVLOOP[name](monkeypatch, ca))
