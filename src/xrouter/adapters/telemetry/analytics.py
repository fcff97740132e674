"""Analytics persistence: every request outcome, off the request path, to a bounded store.

`AnalyticsSink.record` (the OutcomeSink the engine calls) only appends to a bounded queue:
when the queue is full the outcome is dropped and counted, never awaited, so a slow or dead
store cannot slow a request. One drain task moves the queue in batches to a backend:

- `MemoryRing`: the newest records of this process in a bounded deque;
- `RedisStream`: a Redis Stream (XADD ... MAXLEN ~ N), shared by every worker and instance,
  one entry per outcome with one field `r` holding the RequestOutcome as msgspec JSON. A batch
  is one Lua script (one round trip, one command to pack) that XADDs every record.

Records are analytics, not accounting: a record lost to a full queue, a dead Redis or a
shutdown is counted (`dropped`, `failed`) and logged, not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from xrouter.application.outcome import RequestOutcome

if TYPE_CHECKING:
    # The Redis adapters (and redis-py, about 0.1 s to import) are imported where a Redis
    # stream is built or has failed: a gateway without Redis never loads them.
    from xrouter.adapters.redis.connection import RedisClient, SharedRedis
    from xrouter.adapters.redis.resp import Arg

log = logging.getLogger("xrouter.analytics")

STREAM_KEY: Final = "xrouter:analytics"
BATCH: Final = 500
"""Records per write: one Redis script of this many XADDs stays well under a millisecond of
Redis time and far from the command timeout (a timeout would open the shared breaker)."""
LINGER_S: Final = 0.05
"""How long the drain lets records gather after the first one, so a busy gateway writes a
few batches a second rather than one per request."""
READ_PAGE: Final = 1000
READ_LIMIT: Final = 200_000
"""Most records one read returns (the newest); a summary over more says it was cut."""
WARN_EVERY_S: Final = 60.0

_XADD_ALL: Final = """
local n = 0
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', ARGV[i])
  n = n + 1
end
return n
"""


class RecordWindow(msgspec.Struct, frozen=True):
    """What a read found: the records, oldest first, and whether older ones were left out
    (more than the read's limit)."""

    records: list[RequestOutcome]
    cut: bool = False


class AnalyticsBackend(Protocol):
    """Where the drain puts records and where summaries read them."""

    name: str

    async def write(self, batch: Sequence[RequestOutcome]) -> None:
        """Keep `batch`; raise RedisUnavailable (or any error) when it could not."""
        ...

    async def window(self, since: float, limit: int = READ_LIMIT) -> RecordWindow:
        """The records that finished at or after `since` (unix seconds), at most `limit`
        (the newest)."""
        ...


class MemoryRing:
    """The newest `max_records` outcomes of this process."""

    name = "memory"

    def __init__(self, max_records: int = 50_000) -> None:
        self.ring: deque[RequestOutcome] = deque(maxlen=max_records)

    async def write(self, batch: Sequence[RequestOutcome]) -> None:
        self.ring.extend(batch)

    async def window(self, since: float, limit: int = READ_LIMIT) -> RecordWindow:
        found = [record for record in self.ring if record.finished_at >= since]
        if len(found) > limit:
            return RecordWindow(found[-limit:], cut=True)
        return RecordWindow(found)


class RedisStream:
    """A capped Redis Stream: `MAXLEN ~ maxlen` lets Redis trim whole nodes (cheap), so the
    stream holds at least `maxlen` entries and a little more."""

    name = "redis"

    def __init__(self, redis: SharedRedis, *, maxlen: int = 1_000_000, key: str = STREAM_KEY):
        self._redis = redis
        self._maxlen = maxlen
        self.key = key
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(RequestOutcome).decode
        from xrouter.adapters.redis.scripts import RedisScript

        self._script = RedisScript(redis, _XADD_ALL)

    def __repr__(self) -> str:
        return f"RedisStream({self.key!r}, {self._redis!r})"

    async def write(self, batch: Sequence[RequestOutcome]) -> None:
        args: list[Arg] = [self._maxlen, *(self._encode(record) for record in batch)]
        await self._script.run("write analytics records", [self.key], args)

    async def window(self, since: float, limit: int = READ_LIMIT) -> RecordWindow:
        """Newest first in pages (XREVRANGE from the end down to the stream id of `since`),
        so a cut keeps the recent records. An entry's id is Redis's clock when it was
        written, a little after the outcome's own `finished_at`: the id range can only take
        too many, and `finished_at` decides."""
        low = f"{max(0, int(since * 1000))}-0"
        high = "+"
        found: list[RequestOutcome] = []
        while True:
            page = await self._page(high, low)
            for _id, fields in page:
                blob = fields.get(b"r")
                if blob is None:
                    continue
                record = self._decode(blob)
                if record.finished_at >= since:
                    found.append(record)
                if len(found) > limit:
                    found.reverse()
                    return RecordWindow(found[-limit:], cut=True)
            if len(page) < READ_PAGE:
                break
            high = "(" + _text(page[-1][0])
        found.reverse()
        return RecordWindow(found)

    async def _page(self, high: str, low: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        async def on_client(client: RedisClient) -> Any:
            return await client.xrevrange(self.key, high, low, count=READ_PAGE)

        page: list[tuple[bytes, dict[bytes, bytes]]] = await self._redis.run(
            "read analytics records", on_client
        )
        return page


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _RateLimitedWarning:
    """A WARNING at most once per `every_s`, saying how many times it happened meanwhile."""

    __slots__ = ("_every_s", "_last", "_monotonic", "_suppressed")

    def __init__(self, every_s: float, monotonic: Callable[[], float]) -> None:
        self._every_s = every_s
        self._monotonic = monotonic
        self._last = -float("inf")
        self._suppressed = 0

    def __call__(self, message: str, *args: object) -> None:
        now = self._monotonic()
        if now - self._last < self._every_s:
            self._suppressed += 1
            return
        if self._suppressed:
            message += " (%d more like this in the last minute)"
            args = (*args, self._suppressed)
        self._last = now
        self._suppressed = 0
        log.warning(message, *args)


class AnalyticsSink:
    """The OutcomeSink of analytics: a bounded queue in front of a backend.

    `backend=None` is analytics off: `record` keeps nothing and counts nothing.
    Counters (for metrics and /admin/usage): `dropped` (queue full), `failed` (records in
    batches the backend refused), `written`.
    """

    def __init__(
        self,
        backend: AnalyticsBackend | None,
        *,
        queue_size: int = 10_000,
        batch: int = BATCH,
        linger_s: float = LINGER_S,
        setting_names: Callable[[str], str] = lambda name: name,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`setting_names`: the operator's name of a setting (`analytics_queue_size` -> its
        variable), for the warning that says which limit acted."""
        self.backend = backend
        self._queue: deque[RequestOutcome] = deque()
        self._queue_size = queue_size
        self._batch = batch
        self._linger_s = linger_s
        self._names = setting_names
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._warn_dropped = _RateLimitedWarning(WARN_EVERY_S, monotonic)
        self._warn_failed = _RateLimitedWarning(WARN_EVERY_S, monotonic)
        self.dropped = 0
        self.failed = 0
        self.written = 0

    def __repr__(self) -> str:
        return f"AnalyticsSink({self.name!r}, queued={len(self._queue)})"

    @property
    def name(self) -> str:
        return "off" if self.backend is None else self.backend.name

    @property
    def queued(self) -> int:
        return len(self._queue)

    def record(self, outcome: RequestOutcome) -> None:
        if self.backend is None:
            return
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
            self._warn_dropped(
                "analytics queue full (%d records, %s): outcome of %s dropped; %d dropped so "
                "far. The analytics store does not keep up: check it, or raise the setting.",
                self._queue_size,
                self._names("analytics_queue_size"),
                outcome.request_id,
                self.dropped,
            )
            return
        self._queue.append(outcome)
        if not self._wake.is_set():
            self._wake.set()

    def for_request(self, request_id: str) -> list[RequestOutcome]:
        """The outcomes of `request_id` this process holds, written or still queued (tests
        and embedding; a Redis backend's written records are not searched)."""
        held: list[RequestOutcome] = list(self._queue)
        if isinstance(self.backend, MemoryRing):
            held = [*self.backend.ring, *held]
        return [record for record in held if record.request_id == request_id]

    async def window(self, since: float, limit: int = READ_LIMIT) -> RecordWindow:
        """The records since `since` the backend holds (queued ones join at the next drain)."""
        if self.backend is None:
            return RecordWindow([])
        return await self.backend.window(since, limit)

    async def records(self, since: float) -> list[RequestOutcome]:
        found = await self.window(since)
        if found.cut:
            log.warning("analytics read cut to the newest %d records since %s", READ_LIMIT, since)
        return found.records

    async def start(self) -> None:
        """Start the drain task (once; on the running loop)."""
        if self.backend is None or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="analytics drain")

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (within `timeout_s`), then stop the drain."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._queue:
            log.warning(
                "analytics: %d queued records not written at shutdown (the store did not "
                "take them within %s s)",
                len(self._queue),
                timeout_s,
            )
            self.failed += len(self._queue)
            self._queue.clear()

    async def _drain(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                if not self._closing:
                    await asyncio.sleep(self._linger_s)
            while self._queue:
                count = min(self._batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
                await self._write(batch)

    async def _write(self, batch: list[RequestOutcome]) -> None:
        assert self.backend is not None
        try:
            await self.backend.write(batch)
        except asyncio.CancelledError:
            self.failed += len(batch)
            raise
        except Exception as exc:  # the drain must outlive any store failure
            from xrouter.adapters.redis.connection import RedisUnavailable

            self.failed += len(batch)
            reason = str(exc) if isinstance(exc, RedisUnavailable) else repr(exc)
            self._warn_failed(
                "analytics: %d records not written to the %s store (%s); %d lost so far",
                len(batch),
                self.backend.name,
                reason,
                self.failed,
            )
            return
        self.written += len(batch)
