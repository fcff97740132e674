"""A running request as its reader sees it, and the signal of a client that left.

`Execution` connects the generation task (producer: `send`, `close`, `fail_before_output`,
`settle`) with the transport writing to the client (consumer: `first_events`, `events`,
`result`, `detach`). The queue between them is bounded, so a slow client slows the provider
down instead of growing memory; once the client is gone, events are dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from xrouter.application.idle_timeout import IdleTimeout
from xrouter.domain.errors import GatewayError
from xrouter.domain.events import StreamEvent
from xrouter.domain.lifecycle import Lifecycle
from xrouter.domain.responses import Response

_END = object()  # closes an execution's event channel


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


class Execution:
    """One admitted request in generate. Read it with `first_events` then `events` (stream),
    or `result` (non-stream). Generation runs in its own task either way."""

    def __init__(self, request_id: str, response_id: str, streaming: bool, buffer: int) -> None:
        self.request_id = request_id
        self.response_id = response_id
        self._streaming = streaming
        self._queue: asyncio.Queue[object] = asyncio.Queue(buffer) if streaming else None  # type: ignore[assignment]
        self._result: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._detached = False
        self.task: asyncio.Task[None] | None = None
        self.lifecycle: Lifecycle | None = None
        self.on_detach: Callable[[], None] | None = None

    # --- producer side (the generation task) ---------------------------------------------------

    async def send(self, item: object, idle: IdleTimeout | None = None) -> None:
        """Queue a batch of events for the client (dropped once it is gone). A full queue
        waits: backpressure up to the provider, with the idle clock paused meanwhile."""
        if not self._streaming or self._detached:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            # A slow client is not a slow provider: stop the idle clock while we wait.
            if idle is not None:
                idle.paused = True
            await self._queue.put(item)
            if idle is not None:
                idle.paused = False
                idle.touch()

    async def close(self) -> None:
        """The stream is complete: the client's reader stops after the queued events."""
        await self.send(_END)

    async def fail_before_output(self, error: GatewayError) -> None:
        """Generation failed before any output: the reader raises `error` (a JSON error)."""
        await self.send(error)

    def settle(self, response: Response | None, error: GatewayError | None) -> None:
        """The outcome for `result()`: the final response, or the failure."""
        if self._result.done():
            return
        if error is not None:
            self._result.set_exception(error)
            # Mark retrieved: nobody may be waiting (a detached or streaming client).
            self._result.exception()
        elif response is not None:
            self._result.set_result(response)

    # --- consumer side ---------------------------------------------------------------------------

    async def first_events(self) -> list[StreamEvent]:
        """The opening events (through the first output). Raises the GatewayError when
        generation failed before any output: the caller answers with a JSON error."""
        item = await self._queue.get()
        if isinstance(item, GatewayError):
            raise item
        assert isinstance(item, list)
        return item

    async def events(self) -> AsyncIterator[StreamEvent]:
        """The remaining events, through the terminal one."""
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            assert isinstance(item, list)
            for event in item:
                yield event

    async def result(self) -> Response:
        """The final response; raises the GatewayError when generation failed. Cancelling
        the wait cancels only the wait: generation runs in its own task regardless."""
        return await self._result

    def detach(self) -> None:
        """The client is gone: stop writing to it, let generation reach its terminal state."""
        if self._detached:
            return
        self._detached = True
        if self.on_detach is not None:
            self.on_detach()
        if self._streaming:
            # Unblock a producer waiting on a full queue; later puts are dropped.
            while not self._queue.empty():
                self._queue.get_nowait()

    @property
    def detached(self) -> bool:
        return self._detached
