"""An idle timeout for a stream: fail when no event arrived for `idle_s` seconds.

`asyncio.timeout().reschedule()` on every event costs a timer handle and a heap push per
chunk; this keeps one timer per idle period and, per event, only stores the time.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class IdleTimeout:
    """Async context manager: raises TimeoutError in the current task after `idle_s` seconds
    without `touch()`. While `paused` (waiting on a slow client), time does not count."""

    __slots__ = ("_handle", "_idle_s", "_last", "_loop", "_task", "expired", "paused")

    def __init__(self, idle_s: float) -> None:
        self._idle_s = idle_s
        self.expired = False
        self.paused = False

    async def __aenter__(self) -> IdleTimeout:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "IdleTimeout needs a task"
        self._task = task
        self._last = self._loop.time()
        self._handle = self._loop.call_at(self._last + self._idle_s, self._check)
        return self

    def touch(self) -> None:
        self._last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        if self.paused:
            self._last = now
        due = self._last + self._idle_s
        if now >= due:
            self.expired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(due, self._check)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        if self.expired and exc_type is asyncio.CancelledError and self._task.uncancel() == 0:
            raise TimeoutError from exc
