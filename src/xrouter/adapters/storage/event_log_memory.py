"""Background responses' events and cancels in this process (the memory store's companion):
the `EventLog` and `CancelRequests` ports for one worker.

Bounded: per response `max_events` and `max_bytes` (encoded JSON; past either, events are
dropped but a terminal one, and a warning names the setting once), `max_logs` responses (the
oldest dropped first), and each log expires `ttl_s` after its last event. A follower waits on
an asyncio event that every append sets: it sees a new event at once.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from xrouter.domain.events import TERMINAL_EVENTS, StreamEvent

log = logging.getLogger("xrouter.background")

DEFAULT_MAX_EVENTS = 10_000
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_TTL_S = 86_400.0
DEFAULT_MAX_LOGS = 10_000


def _field_name(name: str) -> str:
    return name


@dataclass(slots=True, eq=False)
class _Log:
    events: list[StreamEvent] = field(default_factory=list)
    size: int = 0
    dropped: int = 0
    expires_at: float = 0.0
    changed: asyncio.Event | None = None


class MemoryEventLog:
    """Implements `EventLog` and `CancelRequests` (application/ports.py) in memory."""

    def __init__(
        self,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ttl_s: float = DEFAULT_TTL_S,
        max_logs: int = DEFAULT_MAX_LOGS,
        monotonic: Callable[[], float] = time.monotonic,
        setting_names: Callable[[str], str] = _field_name,
    ) -> None:
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._max_logs = max_logs
        self._now = monotonic
        self._setting_names = setting_names
        self._logs: OrderedDict[str, _Log] = OrderedDict()
        self._cancels: OrderedDict[str, float] = OrderedDict()
        self._encoder = msgspec.json.Encoder()

    # --- EventLog --------------------------------------------------------------------------

    async def append(self, response_id: str, events: Sequence[StreamEvent]) -> None:
        now = self._now()
        self._expire(now)
        entry = self._logs.pop(response_id, None) or _Log()
        self._logs[response_id] = entry  # the most recent last
        entry.expires_at = now + self._ttl_s
        for event in events:
            size = len(self._encoder.encode(event))
            over = len(entry.events) >= self._max_events or entry.size + size > self._max_bytes
            if over and not isinstance(event, TERMINAL_EVENTS):
                if entry.dropped == 0:
                    warn_dropped(
                        response_id, self._max_events, self._max_bytes, self._setting_names
                    )
                entry.dropped += 1
                continue
            entry.events.append(event)
            entry.size += size
        while len(self._logs) > self._max_logs:
            _, oldest = self._logs.popitem(last=False)
            _wake(oldest)
        _wake(entry)

    async def read(self, response_id: str, *, after: int, limit: int) -> list[StreamEvent] | None:
        self._expire(self._now())
        entry = self._logs.get(response_id)
        if entry is None:
            return None
        start = bisect.bisect_right(entry.events, after, key=_sequence)
        return entry.events[start : start + limit]

    async def wait(self, response_id: str, *, after: int, timeout_s: float) -> None:
        entry = self._logs.get(response_id)
        if entry is None:
            await asyncio.sleep(timeout_s)
            return
        if entry.events and entry.events[-1].sequence_number > after:
            return
        if entry.changed is None:
            entry.changed = asyncio.Event()
        try:
            async with asyncio.timeout(timeout_s):
                await entry.changed.wait()
        except TimeoutError:
            pass

    # --- CancelRequests --------------------------------------------------------------------

    async def request(self, response_id: str) -> None:
        now = self._now()
        self._cancels.pop(response_id, None)
        self._cancels[response_id] = now + self._ttl_s
        while len(self._cancels) > self._max_logs:
            self._cancels.popitem(last=False)

    async def requested(self, response_id: str) -> bool:
        expires = self._cancels.get(response_id)
        return expires is not None and expires > self._now()

    # --- internals -------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        while self._logs:
            response_id, oldest = next(iter(self._logs.items()))
            if oldest.expires_at > now:
                break
            del self._logs[response_id]
            _wake(oldest)


def warn_dropped(
    response_id: str, max_events: int, max_bytes: int, setting_names: Callable[[str], str]
) -> None:
    """The warning, once per response, that its events went past a bound: the same words from
    the memory and the Redis event log, naming the settings (`setting_names`)."""
    log.warning(
        "background response %s: events past %d or %d bytes are not kept for replay "
        "(%s, %s); the terminal event still is",
        response_id,
        max_events,
        max_bytes,
        setting_names("background_events_max"),
        setting_names("background_events_max_bytes"),
    )


def _sequence(event: StreamEvent) -> int:
    return event.sequence_number


def _wake(entry: _Log) -> None:
    """Wake the followers of `entry` (they read again)."""
    changed = entry.changed
    if changed is not None:
        entry.changed = None
        changed.set()
