"""Background responses' events and cancels on Redis: the `EventLog` and `CancelRequests`
ports shared by every worker and instance on one Redis (plain or cluster).

Keys of one response share the hash tag `{<response id>}` (one cluster slot, like the
response store's):

    xr:{<id>}:e    a Redis stream of the events, entry id `<sequence_number>-1`, field `e` the
                   event's JSON: a read after sequence N is one XRANGE from `(N-1`
    xr:{<id>}:em   a hash: `n` events and `b` bytes kept, `d` dropped, `l` last sequence
    xr:{<id>}:c    set by a cancel (`POST /v1/responses/{id}/cancel`)

Bounded per response by `max_events` and `max_bytes` (past either, events are dropped but a
terminal one, so followers still see the end; a warning names the setting), and every key
expires `ttl_s` after the last write. An append is one script (atomic: bounds, order and TTL
together); an event already kept (a sequence number not above `l`) is skipped, so the
stream's ids always increase.
Scripts and commands run as the stores' do (scripts.py): on the lean client for a plain
Redis, on redis-py's cluster client otherwise.

Followers poll (no XREAD BLOCK: a blocking read would hold a pooled connection and stall the
lean client's pipeline); the application bounds the interval (`background_poll_s`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from xrouter.adapters.redis.connection import RedisUnavailable, SharedRedis
from xrouter.adapters.redis.hash_tags import check_key_prefix, tagged_base
from xrouter.adapters.redis.resp import Arg
from xrouter.adapters.redis.scripts import RedisScript, run_command
from xrouter.adapters.storage.event_log_memory import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    DEFAULT_TTL_S,
    warn_dropped,
)
from xrouter.domain.errors import StorageUnavailable
from xrouter.domain.events import TERMINAL_EVENTS, StreamEvent

# KEYS: stream, meta. ARGV: ttl_ms, max_events, max_bytes, then per event: sequence number,
# '1' for a terminal event else '0', its JSON. Returns {dropped now, dropped before}.
_APPEND = """
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[2], 'b') or '0')
local last = tonumber(redis.call('HGET', KEYS[2], 'l') or '-1')
local before = tonumber(redis.call('HGET', KEYS[2], 'd') or '0')
local max_n = tonumber(ARGV[2])
local max_b = tonumber(ARGV[3])
local dropped = 0
for i = 4, #ARGV, 3 do
    local seq = tonumber(ARGV[i])
    if seq > last then
        local size = #ARGV[i + 2]
        if ARGV[i + 1] == '1' or (n < max_n and bytes + size <= max_b) then
            redis.call('XADD', KEYS[1], ARGV[i] .. '-1', 'e', ARGV[i + 2])
            n = n + 1
            bytes = bytes + size
        else
            dropped = dropped + 1
        end
        last = seq
    end
end
redis.call('HSET', KEYS[2], 'n', n, 'b', bytes, 'l', last, 'd', before + dropped)
redis.call('PEXPIRE', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {dropped, before}
"""

# KEYS: stream, meta. ARGV: the XRANGE start, count. nil when the response has no log.
_READ = """
if redis.call('EXISTS', KEYS[2]) == 0 then return false end
return redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
"""


def _field_name(name: str) -> str:
    return name


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisEventLog:
    """Implements `EventLog` and `CancelRequests` (application/ports.py) on the process's
    SharedRedis (its timeouts and breaker)."""

    def __init__(
        self,
        redis: SharedRedis,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ttl_s: float = DEFAULT_TTL_S,
        key_prefix: str = "xr",
        setting_names: Callable[[str], str] = _field_name,
    ) -> None:
        check_key_prefix(key_prefix)
        self._redis = redis
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._ttl_ms = _ms(ttl_s)
        self._prefix = key_prefix
        self._setting_names = setting_names
        self._encoder = msgspec.json.Encoder()
        self._decoder: msgspec.json.Decoder[StreamEvent] = msgspec.json.Decoder(StreamEvent)
        self._append = RedisScript(redis, _APPEND)
        self._read = RedisScript(redis, _READ)

    def __repr__(self) -> str:
        return f"RedisEventLog({self._redis!r})"

    # --- EventLog --------------------------------------------------------------------------

    async def append(self, response_id: str, events: Sequence[StreamEvent]) -> None:
        keys = self._keys(response_id)
        if keys is None or not events:
            return
        args: list[Arg] = [self._ttl_ms, self._max_events, self._max_bytes]
        for event in events:
            terminal = "1" if isinstance(event, TERMINAL_EVENTS) else "0"
            args.extend((event.sequence_number, terminal, self._encoder.encode(event)))
        dropped, before = await self._run(self._append.run("log background events", keys[:2], args))
        if int(dropped) and not int(before):
            warn_dropped(response_id, self._max_events, self._max_bytes, self._setting_names)

    async def read(self, response_id: str, *, after: int, limit: int) -> list[StreamEvent] | None:
        keys = self._keys(response_id)
        if keys is None:
            return None
        start = "-" if after < 0 else f"({after}-1"
        found = await self._run(self._read.run("read background events", keys[:2], [start, limit]))
        if found is None:
            return None
        decode = self._decoder.decode
        return [decode(_field(fields, b"e")) for _, fields in found]

    async def wait(self, response_id: str, *, after: int, timeout_s: float) -> None:
        """Polling: the caller reads again after `timeout_s` (its poll interval)."""
        await asyncio.sleep(timeout_s)

    # --- CancelRequests --------------------------------------------------------------------

    async def request(self, response_id: str) -> None:
        keys = self._keys(response_id)
        if keys is None:
            return
        what = "ask to cancel a background response"
        await self._run(run_command(self._redis, what, "SET", keys[2], b"1", "PX", self._ttl_ms))

    async def requested(self, response_id: str) -> bool:
        keys = self._keys(response_id)
        if keys is None:
            return False
        return bool(
            await self._run(run_command(self._redis, "look for a cancel", "EXISTS", keys[2]))
        )

    # --- internals -------------------------------------------------------------------------

    def _keys(self, response_id: str) -> tuple[str, str, str] | None:
        """The response's keys, or None for an id that cannot name one (hash_tags.py)."""
        base = tagged_base(self._prefix, response_id)
        if base is None:
            return None
        return base + "e", base + "em", base + "c"

    async def _run(self, call: Awaitable[Any]) -> Any:
        """`call` (a script or command not yet awaited), StorageUnavailable for Redis's
        failure."""
        try:
            return await call
        except RedisUnavailable as exc:
            raise StorageUnavailable(
                f"The background event log (Redis) is unavailable: {exc}"
            ) from None


def _field(fields: Any, name: bytes) -> bytes:
    """A stream entry's field: redis-py gives a dict (RESP2 parsing) or a flat list."""
    if isinstance(fields, dict):
        value = fields.get(name)
        if value is None:
            value = fields.get(name.decode())
        return value if isinstance(value, bytes) else str(value).encode()
    for index in range(0, len(fields) - 1, 2):
        key = fields[index]
        if key == name or key == name.decode():
            value = fields[index + 1]
            return value if isinstance(value, bytes) else str(value).encode()
    raise ValueError("a background event entry without its event")
