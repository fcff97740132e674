"""A running request as its reader sees it, and the signal of a client that left.

`Execution` is a channel from the generation task (producer: `send`, `end_with`, `close`,
`fail_before_output`, `settle`) to the one reader writing to the client (`events` for a
stream, `result` for a non-stream answer, `detach` when the client is gone). The channel is
bounded, so a slow client slows the provider down instead of growing memory. Detaching
empties it and wakes both sides: the reader's `events` ends, its `result` raises, and the
producer's later sends are dropped, so nobody waits on a client that left.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing

from xrouter.domain.errors import ClientDisconnected, GatewayError
from xrouter.domain.events import StreamEvent
from xrouter.domain.responses import Response


class DisconnectSignal:
    """Set by the transport when the client goes away. Cheap to create and to check."""

    __slots__ = ("_callbacks", "_event")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._callbacks: list[Callable[[], object]] = []

    def set(self) -> None:
        if self._event.is_set():
            return
        self._event.set()
        for callback in self._callbacks:
            callback()

    def on_set(self, callback: Callable[[], object]) -> None:
        """Call `callback` when the client goes away (at once if it already has)."""
        if self._event.is_set():
            callback()
        else:
            self._callbacks.append(callback)

    def remove(self, callback: Callable[[], object]) -> None:
        """Forget a callback registered with `on_set` (no error if it is gone)."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


def _gone() -> ClientDisconnected:
    return ClientDisconnected("The client disconnected before the response was ready.")


class Execution:
    """One admitted request in generate. Generation runs in its own task; read it with
    `events()` (stream) or `result()` (non-stream), from one reader."""

    __slots__ = (
        "_accepted",
        "_answer",
        "_batches",
        "_capacity",
        "_closed",
        "_detached",
        "_outcome",
        "_readable",
        "_streaming",
        "_writable",
        "on_detach",
        "request_id",
        "response_id",
    )

    def __init__(self, request_id: str, response_id: str, streaming: bool, buffer: int) -> None:
        self.request_id = request_id
        self.response_id = response_id
        self._streaming = streaming
        self._capacity = buffer
        self._batches: deque[list[StreamEvent] | GatewayError] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._closed = False
        self._detached = False
        loop = asyncio.get_running_loop()
        self._outcome: asyncio.Future[Response] = loop.create_future()  # generation's
        self._answer: asyncio.Future[Response] = loop.create_future()  # the reader's
        self._accepted: asyncio.Future[Response] = loop.create_future()  # background only
        self.on_detach: Callable[[], None] | None = None

    # --- producer side (the generation task) ---------------------------------------------------

    async def send(self, batch: list[StreamEvent]) -> None:
        """Queue a batch of events for the client (dropped once it is gone). A full channel
        waits until the reader takes a batch or leaves: backpressure up to the provider."""
        while self._open():
            if len(self._batches) < self._capacity:
                self._batches.append(batch)
                self._readable.set()
                return
            self._writable.clear()
            await self._writable.wait()

    def offer(self, batch: list[StreamEvent]) -> bool:
        """`send` without waiting, for the producer's hot path (no coroutine per delta):
        True when the batch is queued (or dropped: the reader is gone); False when the
        channel is full, and then the producer awaits `send`."""
        if not self._open():
            return True
        if len(self._batches) < self._capacity:
            self._batches.append(batch)
            self._readable.set()
            return True
        return False

    def _open(self) -> bool:
        return self._streaming and not self._detached and not self._closed

    def end_with(self, batch: list[StreamEvent]) -> None:
        """The terminal events, then the end. Never waits: they may exceed the bound by one
        batch, so a client that stopped reading cannot hold a finished generation (and its
        admission slot) forever."""
        if self._open():
            self._batches.append(batch)
        self.close()

    def close(self) -> None:
        """No more events: the reader stops after the queued ones. Never waits, so it can run
        in a `finally` even when the reader is slow or gone. Idempotent."""
        self._closed = True
        self._readable.set()

    def fail_before_output(self, error: GatewayError) -> None:
        """Generation failed before any output: the reader's `events` raises `error` (the
        caller answers with a JSON error). Closes the channel."""
        if self._open():
            self._batches.append(error)  # may exceed capacity by one: it is the last item
        self.close()

    def accept(self, snapshot: Response) -> None:
        """A background response is stored as in progress: its answer to the request that
        created it is this snapshot, at once (`result()` returns it; generation goes on)."""
        for future in (self._accepted, self._answer):
            if not future.done():
                future.set_result(snapshot)

    def settle(self, response: Response | None, error: GatewayError | None) -> None:
        """The outcome: the final response, or the failure. The first call wins."""
        for future in (self._outcome, self._answer, self._accepted):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
                future.exception()  # retrieved: nobody may be waiting (stream, detached)
            elif response is not None:
                future.set_result(response)

    # --- reader side ---------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[StreamEvent]:
        """The stream's events until its end or until the client is gone, whichever comes
        first. Raises the GatewayError when generation failed before any output; the engine
        releases nothing before the first output, so the first event tells which it is."""
        async with aclosing(self.batches()) as batches:
            async for batch in batches:
                for event in batch:
                    if self._detached:
                        return
                    yield event

    async def batches(self) -> AsyncGenerator[list[StreamEvent], None]:
        """The same events as `events()`, as lists: each is everything queued by the time the
        reader wakes (what the provider's last reads produced), so that a writer can send it
        in one write. Never holds an event back waiting for another: a list is yielded as soon
        as there is anything to read. Raises as `events()` does."""
        batches = self._batches
        while True:
            while not batches:
                if self._closed or self._detached:
                    return
                self._readable.clear()
                await self._readable.wait()
            first = batches.popleft()
            if isinstance(first, GatewayError):
                self._writable.set()
                raise first
            joined = first
            while batches:
                following = batches[0]
                if isinstance(following, GatewayError):
                    break  # raised on the next turn, after what came before it
                if joined is first:
                    joined = list(first)  # a new list: the producer's may be kept elsewhere
                joined += following
                batches.popleft()
            self._writable.set()
            if self._detached:
                return
            if joined:
                yield joined

    async def result(self) -> Response:
        """The final response. Raises the GatewayError when generation failed, and
        ClientDisconnected once the client is gone. Cancelling the wait cancels only the wait:
        generation runs in its own task regardless."""
        return await asyncio.shield(self._answer)

    async def accepted(self) -> Response:
        """A background response's in-progress snapshot once it is stored (so a poll finds
        it); raises the GatewayError when it failed before that."""
        return await asyncio.shield(self._accepted)

    async def outcome(self) -> Response:
        """How generation ended, whether or not the client stayed (for observers and tests)."""
        return await asyncio.shield(self._outcome)

    @property
    def settled(self) -> bool:
        return self._outcome.done()

    def detach(self) -> None:
        """The client is gone: stop writing to it, wake its reader, let generation reach its
        terminal state. Idempotent."""
        if self._detached:
            return
        self._detached = True
        self._batches.clear()
        self._readable.set()
        self._writable.set()
        if not self._answer.done():
            self._answer.set_exception(_gone())
            self._answer.exception()
        if self.on_detach is not None:
            self.on_detach()
