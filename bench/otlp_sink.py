"""A cheap OTLP/HTTP sink for the telemetry benchmark: a raw ASGI app (no framework), for
uvicorn, that accepts what a collector accepts and throws it away.

- `POST /v1/traces`, `POST /v1/metrics` (any POST path): reads the body, answers 200 with an
  empty body, and decodes nothing, so exporting costs the gateway what it would cost against
  a real collector while the sink itself stays cheap (it shares a core with the load
  generator and the fake upstream). tests/otlp_collector.py is the decoding one, for tests.
- `GET /stats`: how many POSTs and body bytes arrived per path, as JSON, so the benchmark can
  show that spans really went out.
- `GET /health`: for bench/servers.py to know it is up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

EMPTY_HEADERS = ((b"content-type", b"application/x-protobuf"), (b"content-length", b"0"))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _drain(receive: Receive) -> int:
    """Read the request body without keeping it; its size in bytes."""
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    return size


async def _json(send: Send, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app() -> ASGIApp:
    """The ASGI app (a factory, for `uvicorn --factory`). Its counters live in this closure:
    one app, one process, one set of counts."""
    posts: dict[str, int] = {}
    sizes: dict[str, int] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path = scope["path"]
        size = await _drain(receive)
        if scope["method"] == "POST":
            posts[path] = posts.get(path, 0) + 1
            sizes[path] = sizes.get(path, 0) + size
            headers = list(EMPTY_HEADERS)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/stats":
            await _json(send, msgspec.json.encode({"posts": posts, "bytes": sizes}))
        else:
            await _json(send, b'{"status":"ok"}')

    return app
