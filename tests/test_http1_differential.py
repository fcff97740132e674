"""Differential test: httpx's default transport (httpcore + h11) and Http1Transport, driven
through the same scripted server behaviours, must show the caller the same thing: status,
reason, headers (raw, in order), body bytes, or the same httpx exception type, and the server
must see the same requests on the same number of connections. Exception messages are not
compared (each library words its own), and a subclass Http1Transport raises counts as its
httpx class (`httpx_type`).

Where the two differ on purpose, the difference is pinned in its own test below, with why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from tests.scripted_server import Peer, Script, ScriptedServer
from xrouter.adapters.providers.http1 import Http1Transport

LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=5.0)
TIMEOUT = httpx.Timeout(5.0, read=0.3)

TRANSPORTS: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
    "httpcore": lambda: httpx.AsyncHTTPTransport(limits=LIMITS),
    "http1": lambda: Http1Transport(limits=LIMITS),
}


@dataclass(frozen=True)
class Seen:
    """What the caller of `client.request(...)` sees."""

    status: int | None = None
    reason: str | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    error: type[Exception] | None = None


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes | None = None


@dataclass(frozen=True)
class Outcome:
    seen: tuple[Seen, ...]
    requests: tuple[tuple[str, str, bytes, int], ...]
    """What the server received: method, target, body, connection number."""
    connections: int


def httpx_type(exc: Exception) -> type[Exception]:
    """The exception's httpx class. Http1Transport raises a subclass of httpx's where it has
    more to say (ResponseHeadTooLarge carries the limit): a caller catching httpx's class
    sees no difference, so that is what is compared."""
    return next(cls for cls in type(exc).__mro__ if cls.__module__ == "httpx")


async def run(transport_name: str, script: Script, calls: list[Call]) -> Outcome:
    seen = []
    with ScriptedServer(script) as server:
        async with httpx.AsyncClient(
            base_url=server.origin,
            transport=TRANSPORTS[transport_name](),
            timeout=TIMEOUT,
            trust_env=False,
        ) as http:
            for call in calls:
                try:
                    response = await http.request(call.method, call.path, content=call.body)
                except httpx.HTTPError as exc:
                    seen.append(Seen(error=httpx_type(exc)))
                else:
                    seen.append(
                        Seen(
                            response.status_code,
                            response.reason_phrase,
                            tuple(response.headers.raw),
                            response.content,
                        )
                    )
        await asyncio.sleep(0.05)  # a request sent again, if any, has arrived by now
    return Outcome(
        tuple(seen),
        tuple((r.method, r.target, r.body, r.connection) for r in server.requests),
        server.connections,
    )


async def both(script: Script, calls: list[Call]) -> tuple[Outcome, Outcome]:
    return await run("httpcore", script, calls), await run("http1", script, calls)


# -- the scripted behaviours ---------------------------------------------------------------


def answering(*answers: bytes, then: str = "serve") -> Script:
    """Each request on a connection gets the next answer (the last one repeats); `then`:
    what to do after writing each answer ("serve": keep reading, "close": close (FIN),
    "stall": read nothing more and wait for the client to leave)."""

    async def script(peer: Peer) -> None:
        count = 0
        while await peer.read_request():
            answer = answers[min(count, len(answers) - 1)]
            count += 1
            for start in range(0, len(answer), 32 * 1024):  # large answers arrive in pieces
                await peer.send(answer[start : start + 32 * 1024])
            if then == "close":
                peer.close()
                return
            if then == "stall":
                await peer.until_client_leaves()
                return

    return script


JSON = b'{"id": "x", "choices": [{"message": {"content": "hi"}}]}'
JSON_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: r1\r\n"
    b"Content-Length: %d\r\n\r\n%b" % (len(JSON), JSON)
)
CHUNKED_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"7\r\ndata: a\r\n"
    b"b;ext=1\r\n\n\ndata: bbb\r\n"
    b"A\r\n\n\ndata: cc\r\n"
    b"0\r\n\r\n"
)
TRAILERS_ANSWER = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: h\r\n\r\n"
    b"5\r\nhello\r\n0\r\nX-Trailer: t\r\nX-Head: forged\r\n\r\n"
)
BIG = bytes(range(256)) * 4096  # 1 MiB
LENGTH_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(BIG), BIG)
SET_COOKIES = (
    b"HTTP/1.1 201 Created Here\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 0\r\n\r\n"
)


async def hang_up(peer: Peer) -> None:
    """Read the request, close without a byte of answer."""
    await peer.read_request()
    peer.close()


async def answer_once_then_hang_up(peer: Peer) -> None:
    await peer.read_request()
    await peer.send(JSON_ANSWER)
    await peer.read_request()
    peer.close()


def raw(data: bytes, *, close: bool) -> Script:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(data)
        if close:
            peer.close()
        else:
            await peer.until_client_leaves()

    return script


async def stall(peer: Peer) -> None:
    await peer.read_request()
    await peer.until_client_leaves()


async def stall_mid_body(peer: Peer) -> None:
    await peer.read_request()
    await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive!")
    await peer.until_client_leaves()


GET = Call("GET", "/v1/models")
POST = Call("POST", "/v1/chat/completions", b'{"model": "m"}')

SCENARIOS: dict[str, tuple[Script, list[Call]]] = {
    "normal JSON": (answering(JSON_ANSWER), [POST]),
    "chunked body": (answering(CHUNKED_ANSWER), [POST]),
    "chunked body with trailers": (answering(TRAILERS_ANSWER), [GET, GET]),
    "content-length body": (answering(LENGTH_ANSWER), [GET]),
    "repeated headers, custom reason": (answering(SET_COOKIES), [POST]),
    "keep-alive reuse": (answering(JSON_ANSWER), [POST, GET, POST, GET]),
    "server closes before answering": (hang_up, [POST]),
    "reused connection closes before answering a POST": (answer_once_then_hang_up, [POST, POST]),
    "server closes mid content-length body": (
        raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..", close=True),
        [GET],
    ),
    "server closes mid chunked body": (
        raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", close=True),
        [GET],
    ),
    "server closes mid head": (raw(b"HTTP/1.1 200 OK\r\nContent-Le", close=True), [GET]),
    "malformed status line": (raw(b"HTTP/1.1 two hundred OK\r\n\r\n", close=False), [GET]),
    "not HTTP at all": (raw(b"SMTP ready\r\n\r\n", close=False), [GET]),
    "204 without body": (
        answering(b"HTTP/1.1 204 No Content\r\n\r\n", JSON_ANSWER),
        [POST, GET],
    ),
    "304 with a Content-Length but no body": (
        answering(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: e\r\n\r\n", JSON_ANSWER
        ),
        [GET, GET],
    ),
    "Connection: close": (
        answering(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", then="close"
        ),
        [GET, POST, GET],
    ),
    "body delimited by the close": (
        answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", then="close"),
        [GET, GET],
    ),
    "HTTP/1.0 answer": (
        answering(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", then="close"),
        [GET, GET],
    ),
    "interim 100 Continue before the answer": (
        answering(b"HTTP/1.1 100 Continue\r\n\r\n" + JSON_ANSWER),
        [POST, POST],
    ),
    "slow server: read timeout before the head": (stall, [GET]),
    "slow server: read timeout mid body": (stall_mid_body, [GET]),
    "oversized header": (
        answering(
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (200 * 1024) + b"\r\nContent-Length: 0\r\n\r\n"
        ),
        [GET],
    ),
    "header just under the limit": (
        answering(
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (90 * 1024) + b"\r\nContent-Length: 2\r\n\r\nok"
        ),
        [GET, GET],
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_both_transports_show_the_caller_the_same(name: str) -> None:
    script, calls = SCENARIOS[name]
    reference, ours = await both(script, calls)
    assert ours == reference
    assert len(ours.seen) == len(calls)


async def test_the_scenarios_exercise_what_they_name() -> None:
    # The comparison above is only as good as the behaviours: check a few of them landed.
    outcomes = {
        name: await run("http1", *SCENARIOS[name])
        for name in (
            "chunked body with trailers",
            "keep-alive reuse",
            "reused connection closes before answering a POST",
            "slow server: read timeout mid body",
            "oversized header",
            "Connection: close",
        )
    }
    trailers = outcomes["chunked body with trailers"].seen[0]
    assert (trailers.body, trailers.headers) == (
        b"hello",
        ((b"Transfer-Encoding", b"chunked"), (b"X-Head", b"h")),
    )
    assert outcomes["keep-alive reuse"].connections == 1
    hung_up = outcomes["reused connection closes before answering a POST"]
    assert hung_up.seen[1].error is httpx.RemoteProtocolError
    assert [request[0] for request in hung_up.requests] == ["POST", "POST"]  # never resent
    assert outcomes["slow server: read timeout mid body"].seen[0].error is httpx.ReadTimeout
    assert outcomes["oversized header"].seen[0].error is httpx.RemoteProtocolError
    assert outcomes["Connection: close"].connections == 3


# -- where the two differ on purpose -----------------------------------------------------------


async def test_difference_an_idempotent_request_is_resent_after_an_idle_close_race() -> None:
    # A GET on a reused connection that the server closes without answering: httpcore raises
    # at once; Http1Transport sends it once more on a new connection, because a GET may be
    # repeated (RFC 9110 9.2.2) and this is what a keep-alive connection closed by the server
    # just as the request went out looks like. A POST is never resent (the scenario above).
    reference, ours = await both(answer_once_then_hang_up, [GET, GET])
    assert reference.seen[1].error is httpx.RemoteProtocolError
    assert ours.seen[1].status == 200
    assert ours.seen[1].body == JSON
    assert [(r[0], r[3]) for r in ours.requests] == [("GET", 1), ("GET", 1), ("GET", 2)]
    assert [(r[0], r[3]) for r in reference.requests] == [("GET", 1), ("GET", 1)]
