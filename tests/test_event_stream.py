"""EventStream (entrypoints/http/event_stream.py) sends what Litestar's own Stream of the same
frames sends, ends quietly when the client leaves (the frames' generator sees it), and keeps
what a route declares (headers, cookies, a background task)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import Cookie, ResponseHeader
from litestar.response import Stream
from litestar.testing import TestClient
from litestar.types import Message

from xrouter.entrypoints.http.event_stream import EventStream

HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
FRAMES = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]
ran: list[str] = []


async def frames() -> AsyncIterator[bytes]:
    for frame in FRAMES:
        yield frame


@post("/litestar", status_code=200)
async def litestar_stream() -> Stream:
    return Stream(frames(), media_type="text/event-stream", headers=HEADERS)


@post("/ours", status_code=200)
async def our_stream() -> Response[bytes]:
    return EventStream(frames(), HEADERS)


@get(
    "/declared",
    response_headers=[ResponseHeader(name="x-route", value="yes")],
    response_cookies=[Cookie(key="k", value="v")],
    background=BackgroundTask(lambda: ran.append("background")),
)
async def declared() -> Response[bytes]:
    return EventStream(frames(), HEADERS)


def test_the_stream_is_litestars_own() -> None:
    app = Litestar([litestar_stream, our_stream, declared], logging_config=None)
    with TestClient(app) as client:
        theirs = client.post("/litestar")
        ours = client.post("/ours")
        assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content)
        assert ours.content == b"".join(FRAMES)
        assert ours.headers.multi_items() == theirs.headers.multi_items()
        assert ours.headers["content-type"] == "text/event-stream; charset=utf-8"

        kept = client.get("/declared")
        assert kept.content == b"".join(FRAMES)
        assert kept.headers["x-route"] == "yes"
        assert kept.cookies["k"] == "v"
        assert ran == ["background"]


async def test_a_client_leaving_ends_the_stream_quietly() -> None:
    """The frames' generator is cancelled where it waits, runs its cleanup, and the response
    returns normally; the messages sent before are the stream's head and first frame."""
    cleaned: list[str] = []
    waiting = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            waiting.set()
            await asyncio.sleep(3600)
            yield b"never"
        finally:
            cleaned.append("closed")

    sent: list[Message] = []
    leave = asyncio.Event()

    async def receive() -> Message:
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    app: Any = EventStream(endless(), HEADERS).to_asgi_response(None, None)
    answer = asyncio.create_task(app({"type": "http"}, receive, send))
    await asyncio.wait_for(waiting.wait(), 5)
    leave.set()
    await asyncio.wait_for(answer, 5)  # returns, not cancelled
    assert cleaned == ["closed"]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["body"] == b"data: first\n\n"


async def test_an_outer_cancellation_still_cancels() -> None:
    async def endless() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        await asyncio.sleep(3600)
        yield b"never"

    async def receive() -> Message:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        return None

    app: Any = EventStream(endless(), HEADERS).to_asgi_response(None, None)
    answer = asyncio.create_task(app({"type": "http"}, receive, send))
    await asyncio.sleep(0.01)
    answer.cancel()
    done, _ = await asyncio.wait({answer}, timeout=5)
    assert done and answer.cancelled()
