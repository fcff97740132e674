"""The baseline: a raw ASGI app with no framework and no gateway logic.

It answers POST /v1/responses with bytes captured from the gateway once (the same JSON body,
or the same SSE frames sent one ASGI message per frame, as the gateway does) and GET /health
with the same body as the gateway. Served by the same server stack, it stands in for "calling
the upstream directly": the cost of HTTP on this stack with nothing in between.

The captured bytes come from the JSON file named by BENCH_BASELINE_FILE:
{"json": "<response body>", "frames": ["event: ...\\ndata: ...\\n\\n", ...]}.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH = b'{"status":"ok"}'


def _headers(content_type: bytes, length: int | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return headers


def create_app() -> ASGIApp:
    """The ASGI app, serving the bytes in BENCH_BASELINE_FILE."""
    with open(os.environ["BENCH_BASELINE_FILE"], "rb") as file:
        captured = msgspec.json.decode(file.read())
    body: bytes = captured["json"].encode()
    frames: list[bytes] = [frame.encode() for frame in captured["frames"]]
    json_start = {"type": "http.response.start", "status": 200,
                  "headers": _headers(b"application/json", len(body))}  # fmt: skip
    health_start = {"type": "http.response.start", "status": 200,
                    "headers": _headers(b"application/json", len(HEALTH))}  # fmt: skip
    sse_start = {"type": "http.response.start", "status": 200,
                 "headers": _headers(b"text/event-stream; charset=utf-8", None)}  # fmt: skip

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        request = b""
        more = True
        while more:
            message = await receive()
            request += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/health":
            await send(health_start)
            await send({"type": "http.response.body", "body": HEALTH})
        elif b'"stream":true' in request:
            await send(sse_start)
            for frame in frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send(json_start)
            await send({"type": "http.response.body", "body": body})

    return app
