"""Http1Transport (the lean HTTP/1.1 transport under httpx) over real loopback: against the
fake upstream (tests/upstreams.py) and small raw servers written here for wire-level cases."""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.upstreams import End, FakeUpstream, Reply
from xrouter.adapters.providers.http1 import Http1Transport
from xrouter.adapters.providers.http1.connection import Connection
from xrouter.adapters.providers.http1.pool import Pool
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


async def test_a_reused_connection_closed_without_an_answer_is_retried_once(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.script(
        CHAT, [Reply.json({"n": 1}), Reply.hang_up(), Reply.json({"n": 2}), Reply.hang_up()]
    )
    async with client(fake_upstream.base_url) as http:
        assert (await http.post("/chat/completions", content=b"{}")).json() == {"n": 1}
        # reused connection, closed before a byte of answer: sent again on a new one
        assert (await http.post("/chat/completions", content=b"{}")).json() == {"n": 2}
        assert fake_upstream.connections == 2
        # a NEW connection closed without an answer is an error, not retried
        await http.aclose()
    async with client(fake_upstream.base_url) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.post("/chat/completions", content=b"{}")
    assert fake_upstream.hits(CHAT) == 4


async def test_a_streamed_upload_is_not_retried(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(CHAT, [Reply.json({"n": 1}), Reply.hang_up()])

    async def upload() -> AsyncIterator[bytes]:
        yield b"{}"

    async with client(fake_upstream.base_url) as http:
        await http.post("/chat/completions", content=b"{}")
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/chat/completions", content=upload())
    assert fake_upstream.hits(CHAT) == 2


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
