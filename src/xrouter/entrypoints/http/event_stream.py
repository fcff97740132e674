"""An SSE answer handed to Litestar ready to send: the API routes' `text/event-stream` responses.

`litestar.response.Stream` builds a Response (header and cookie containers), converts it into
an `ASGIStreamingResponse` (its `MutableScopeHeaders`), then runs the frames and the disconnect
listener in an anyio task group: about a tenth of the CPU a short stream costs the gateway, and
all of it before the first frame leaves (issue 16, docs/benchmarks.md "the request path").
`EventStream` sends the same messages (status line, headers in the same order, one
`http.response.body` per frame, the empty last one) with one asyncio task listening for the
client's disconnect, which cancels the frames as Litestar's cancel scope did: the frames'
generator sees the cancellation where it waits, and the response ends normally. A route that
declares response headers, cookies or a background task gets Litestar's own `Stream`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar import Response
from litestar.response import Stream
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from xrouter.entrypoints.http.ready_response import ReadyResponse

__all__ = ["EventStream"]

MEDIA_TYPE = "text/event-stream"
_LAST: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class EventStream(ReadyResponse):
    """`Stream(frames, media_type="text/event-stream", headers=headers)`, sent directly."""

    __slots__ = ("_frames", "_headers")

    def __init__(self, frames: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        self._frames = frames
        self._headers = headers

    def as_litestar(self) -> Response[Any]:
        return Stream(self._frames, media_type=MEDIA_TYPE, headers=self._headers)

    def ready(self) -> ASGIApp:
        # Litestar's order: the response's own headers, then its content type.
        encoded = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self._headers.items()
        ]
        encoded.append((b"content-type", b"text/event-stream; charset=utf-8"))
        return _SendFrames(self._frames, encoded)


class _SendFrames:
    """The ASGI app of one event stream."""

    __slots__ = ("_frames", "_headers")

    def __init__(self, frames: AsyncIterator[bytes], headers: list[tuple[bytes, bytes]]) -> None:
        self._frames = frames
        self._headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        task = asyncio.current_task()
        assert task is not None  # an ASGI app always runs in a task
        # [streaming, disconnected]: the listener cancels this task only while it streams.
        state = [True, False]
        listener = asyncio.get_running_loop().create_task(_listen(receive, task, state))
        try:
            async for frame in self._frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send(_LAST)
        except asyncio.CancelledError:
            # The client left: its cancellation ends the stream as Litestar's cancel scope
            # did (quietly); any other cancellation goes on.
            if not state[1] or task.uncancel() > 0:
                raise
        finally:
            state[0] = False
            listener.cancel()


async def _listen(receive: Receive, streaming: asyncio.Task[Any], state: list[bool]) -> None:
    """Wait for `http.disconnect` (other messages are ignored, as Litestar does) and cancel
    the streaming task if it is still sending."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if state[0]:
                state[1] = True
                streaming.cancel()
            return
