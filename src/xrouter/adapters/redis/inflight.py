"""A provider's in-flight limit shared in Redis by every worker and instance, with the same
FIFO wait as the process-local one (`adapters/providers/inflight.py`).

Keys of provider P, one hash tag so a cluster keeps them on one slot (every script touches
only them):

    xrouter:inflight:{P}:holders   ZSET token -> lease expiry (ms, Redis's clock)
    xrouter:inflight:{P}:queue     ZSET ticket -> arrival number: the waiters, oldest first
    xrouter:inflight:{P}:tickets   ZSET ticket -> expiry of the waiter's place (ms)
    xrouter:inflight:{P}:seq       the counter arrival numbers come from

Every decision is one Lua script run atomically on Redis's own clock (`TIME`), so clocks
that differ between machines never stretch or cut a lease:
- a call takes a slot at once when fewer than `max_inflight` are held and nobody waits (no
  barging); else it queues (or, with `queue_timeout_s` 0, is refused at once);
- a waiter polls every `poll_s` (a release in the same process wakes its oldest waiter at
  once); the first `free` waiters in arrival order take the `free` slots; the others keep
  their place and refresh it; after `queue_timeout_s` the waiter leaves and gets 429;
- a slot is a lease of `lease_s` (Settings.inflight_lease_s), renewed every `lease_s / 3` by
  one heartbeat per process while its calls run; a worker that dies stops renewing, and its
  slots free themselves `lease_s` later. A waiter that stops polling loses its place after
  `ticket_s`, so a dead process never blocks the queue for longer than that.

Redis unavailable (no answer within its timeout, or the circuit breaker open, which fails at
once): this process falls back to a LocalInflight with the same limit and timeout, logging a
rate-limited WARNING. Stateless traffic keeps working, with no added wait, while Redis is
down; the limit is then enforced per process (N processes may together run N times it), and
the leases taken before the outage free themselves after `lease_s`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, final

from redis.exceptions import NoScriptError

from xrouter.adapters.providers.inflight import (
    InflightFactory,
    InflightLimiter,
    Lease,
    LocalInflight,
    local_inflight,
    refusal,
)
from xrouter.adapters.providers.transport_settings import TransportSettings
from xrouter.adapters.redis.connection import RedisClient, RedisUnavailable, SharedRedis
from xrouter.adapters.redis.resp import Arg, Lane, Script
from xrouter.application.refusal_log import RefusalLog
from xrouter.domain.errors import Overloaded

log = logging.getLogger("xrouter.inflight")

POLL_S = 0.05
"""A waiter's longest pause between two looks at the shared queue."""
TICKET_S = 2.0
"""How long a waiter's place outlives its last look: a dead waiter blocks the ones behind it
for at most this long."""

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: holders, queue, tickets, seq. ARGV: token, limit, lease_ms, ticket_ms, may_wait (0|1),
# seq (0: a new arrival; else the waiter's arrival number), keep_ms (the keys' own expiry).
# Returns {status, holders, seq}: status 1 granted, 0 refused (no wait), 2 waiting.
_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local waiting = redis.call('ZCARD', KEYS[2])
if waiting > 0 then
    local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 256)
    if #gone > 0 then
        redis.call('ZREM', KEYS[2], unpack(gone))
        redis.call('ZREM', KEYS[3], unpack(gone))
        waiting = redis.call('ZCARD', KEYS[2])
    end
end
local token = ARGV[1]
local limit = tonumber(ARGV[2])
local keep = tonumber(ARGV[7])
local seq = tonumber(ARGV[6])
local holding = redis.call('ZCARD', KEYS[1])
local rank = redis.call('ZRANK', KEYS[2], token)
if not rank then
    if seq == 0 then
        if holding < limit and waiting == 0 then
            redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), token)
            redis.call('PEXPIRE', KEYS[1], keep)
            return {1, holding + 1, 0}
        end
        if ARGV[5] == '0' then
            return {0, holding, 0}
        end
        seq = redis.call('INCR', KEYS[4])
    end
    -- a new waiter joins at the back; one whose place expired while it lived (a long
    -- pause) rejoins at its arrival number
    redis.call('ZADD', KEYS[2], seq, token)
    rank = redis.call('ZRANK', KEYS[2], token)
end
if rank < limit - holding then
    redis.call('ZREM', KEYS[2], token)
    redis.call('ZREM', KEYS[3], token)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), token)
    redis.call('PEXPIRE', KEYS[1], keep)
    return {1, holding + 1, seq}
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), token)
for i = 1, 4 do
    redis.call('PEXPIRE', KEYS[i], keep)
end
return {2, holding, seq}
"""
)

# KEYS: holders, queue, tickets. ARGV: tokens. Frees each one's slot or place, whichever it has.
_FORGET = """
redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('ZREM', KEYS[2], unpack(ARGV))
redis.call('ZREM', KEYS[3], unpack(ARGV))
return 1
"""
_FORGET_BATCH = 512
"""Most tokens freed by one script call (Lua's `unpack` has a stack limit)."""

# KEYS: holders. ARGV: lease_ms, keep_ms, token... Extends the leases still held; returns the
# tokens whose lease had already expired (lost).
_RENEW = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lost = {}
local expires = now + tonumber(ARGV[1])
for i = 3, #ARGV do
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
        redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i])
    else
        lost[#lost + 1] = ARGV[i]
    end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return lost
"""
)


class _Script:
    """A Lua script run by its SHA (EVALSHA), loaded on first use on each server: on the lean
    client (resp.py, a plain Redis: about a tenth of redis-py's CPU per command) when the
    process has one, else on redis-py's client (a cluster routes it by its keys' slot)."""

    __slots__ = ("lean", "sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.lean = Script(source)

    async def run(
        self, redis: SharedRedis, what: str, keys: Sequence[str], args: Sequence[Arg]
    ) -> Any:
        if redis.lean is not None:

            async def on_lane(lane: Lane) -> Any:
                return await self.lean(lane, keys, args)

            return await redis.run_lean(what, on_lane)

        async def on_client(client: RedisClient) -> Any:
            try:
                return await client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:  # a restarted or new server: EVAL loads it
                return await client.eval(self.source, len(keys), *keys, *args)

        return await redis.run(what, on_client)


_ACQUIRE_SCRIPT = _Script(_ACQUIRE)
_FORGET_SCRIPT = _Script(_FORGET)
_RENEW_SCRIPT = _Script(_RENEW)

_GRANTED, _REFUSED = 1, 0


@final
class _RedisLease(Lease):
    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


class _Waiter:
    """One waiting call of this process: the future its pause sleeps on, and whether a
    release asked it to look again at once."""

    __slots__ = ("kicked", "wake")

    def __init__(self) -> None:
        self.wake: asyncio.Future[None] | None = None
        self.kicked = False


def _keys(provider: str) -> tuple[str, str, str, str]:
    tag = f"xrouter:inflight:{{{provider}}}"
    return f"{tag}:holders", f"{tag}:queue", f"{tag}:tickets", f"{tag}:seq"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RedisInflight:
    """InflightLimiter shared through the process's SharedRedis (timeouts and breaker
    included), falling back to this process's own LocalInflight while Redis is unavailable
    (see the module docstring)."""

    def __init__(
        self,
        provider: str,
        settings: TransportSettings,
        redis: SharedRedis,
        *,
        lease_s: float,
        setting_names: Callable[[str], str] = lambda name: name,
        poll_s: float = POLL_S,
        ticket_s: float = TICKET_S,
    ) -> None:
        """`setting_names` names the gateway's own settings (`inflight_lease_s`,
        `redis_url`) in log lines; the provider's come from `settings.setting_names`."""
        self._provider = provider
        self._settings = settings
        self._redis = redis
        self._names = setting_names
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._keys = _keys(provider)
        self._limit = str(settings.max_inflight)
        self._lease_ms = str(_ms(lease_s))
        self._ticket_ms = str(_ms(ticket_s))
        self._keep_ms = str(_ms(2 * lease_s + ticket_s))
        self._refusals = RefusalLog(log)
        self._local = LocalInflight(provider, settings, refusals=self._refusals)
        self._held: dict[str, None] = {}
        """Tokens of the shared slots this process holds (the heartbeat renews them)."""
        self._waiting: dict[str, _Waiter] = {}
        """This process's waiters, in arrival order (a dict keeps insertion order)."""
        self._heartbeat: asyncio.Task[None] | None = None
        self._forgetting: list[str] = []
        """Tokens to free in Redis, sent together by one background task."""
        self._wakes = 0
        """How many of those are releases (each wakes one waiter of this process)."""
        self._forgetter: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RedisInflight({self._provider!r}, {self._redis!r}, held={len(self._held)})"

    @property
    def inflight(self) -> int:
        return len(self._held) + self._local.inflight

    @property
    def waiting(self) -> int:
        return len(self._waiting) + self._local.waiting

    async def acquire(self) -> Lease:
        token = secrets.token_hex(10)
        may_wait = self._settings.queue_timeout_s > 0
        try:
            status, holding, seq = await self._acquire(token, may_wait, 0)
        except RedisUnavailable as exc:
            self._forget(token)  # in case the script ran before the answer was lost
            return await self._fall_back(exc, self._settings.queue_timeout_s)
        except BaseException:  # cancelled: the script may have run all the same
            self._forget(token)
            raise
        if status == _GRANTED:
            return self._hold(token)
        if status == _REFUSED:
            raise self._refuse(holding, waited=False)
        return await self._wait(token, seq)

    def acquire_now(self) -> Lease:
        if self.inflight >= self._settings.max_inflight:
            raise self._refuse(self.inflight, waited=False, who="The gateway has")
        return self._local.acquire_now()

    def release(self, lease: Lease) -> None:
        if not isinstance(lease, _RedisLease):
            self._local.release(lease)
            return
        self._held.pop(lease.token, None)
        self._forget(lease.token, wake=True)

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._forgetter is not None:
            await asyncio.gather(self._forgetter, return_exceptions=True)

    # -- internals -----------------------------------------------------------------------

    async def _acquire(self, token: str, may_wait: bool, seq: int) -> tuple[int, int, int]:
        args = (
            token,
            self._limit,
            self._lease_ms,
            self._ticket_ms,
            "1" if may_wait else "0",
            str(seq),
            self._keep_ms,
        )

        status, holding, seq = await _ACQUIRE_SCRIPT.run(
            self._redis, "acquire an in-flight lease", self._keys, args
        )
        return int(status), int(holding), int(seq)

    async def _wait(self, token: str, seq: int) -> Lease:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.queue_timeout_s
        waiter = self._waiting[token] = _Waiter()
        granted = False
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise self._refuse(self.inflight, waited=True)
                await self._pause(waiter, min(self._poll_s, remaining))
                try:
                    status, _, seq = await self._acquire(token, True, seq)
                except RedisUnavailable as exc:
                    return await self._fall_back(exc, deadline - loop.time())
                if status == _GRANTED:
                    granted = True
                    return self._hold(token)
        finally:
            del self._waiting[token]
            if not granted:
                # Timed out, fell back, or cancelled (perhaps granted in an answer never
                # read): the token's place or slot is freed, never leaked.
                self._forget(token)

    async def _pause(self, waiter: _Waiter, seconds: float) -> None:
        if waiter.kicked:
            waiter.kicked = False
            return
        loop = asyncio.get_running_loop()
        wake = waiter.wake = loop.create_future()
        timer = loop.call_later(seconds, _wake, wake)
        try:
            await wake
        finally:
            timer.cancel()
            waiter.wake = None
            waiter.kicked = False

    def _kick(self, freed: int) -> None:
        """`freed` slots were freed by this process: its `freed` oldest waiters look again at
        once (if waiters here may take them, they are the oldest)."""
        if not freed:
            return
        for waiter in self._waiting.values():
            if waiter.wake is not None:
                _wake(waiter.wake)
            else:
                waiter.kicked = True  # mid-look: look once more without pausing
            freed -= 1
            if freed == 0:
                return

    def _hold(self, token: str) -> Lease:
        self._held[token] = None
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew_while_held())
        return _RedisLease(token)

    async def _renew_while_held(self) -> None:
        interval = self._lease_s / 3
        while self._held:
            await asyncio.sleep(interval)
            tokens = list(self._held)
            if not tokens:
                return
            args = (self._lease_ms, self._keep_ms, *tokens)
            try:
                lost = await _RENEW_SCRIPT.run(
                    self._redis, "renew in-flight leases", self._keys[:1], args
                )
            except RedisUnavailable as exc:
                self._refusals.refused(
                    "renew",
                    "cannot renew %d in-flight leases of %s (%s); they expire %s s after "
                    "their last renewal (%s)",
                    len(tokens),
                    self._provider,
                    exc,
                    self._lease_s,
                    self._names("inflight_lease_s"),
                )
                continue
            still_held = [
                token
                for token in (t.decode() if isinstance(t, bytes) else str(t) for t in lost)
                if token in self._held
            ]
            if still_held:
                log.warning(
                    "%d in-flight leases of %s expired while their calls ran (not renewed "
                    "within %s s, %s): other gateways may admit calls over %s until they end",
                    len(still_held),
                    self._provider,
                    self._lease_s,
                    self._names("inflight_lease_s"),
                    self._settings.setting_names("max_inflight"),
                )

    def _forget(self, token: str, *, wake: bool = False) -> None:
        """Free `token`'s slot or place in the background (a release never waits for Redis);
        then, for a release, wake this process's oldest waiter. Tokens freed while a batch is
        on the wire go together in the next one, so under load a release costs a fraction of
        a round trip. If Redis does not answer, the lease or place expires by itself."""
        self._forgetting.append(token)
        if wake:
            self._wakes += 1
        if self._forgetter is None or self._forgetter.done():
            self._forgetter = asyncio.get_running_loop().create_task(self._forget_pending())

    async def _forget_pending(self) -> None:
        while self._forgetting:
            tokens = self._forgetting[:_FORGET_BATCH]
            del self._forgetting[:_FORGET_BATCH]
            wakes, self._wakes = self._wakes, 0
            try:
                await _FORGET_SCRIPT.run(
                    self._redis, "release in-flight leases", self._keys[:3], tokens
                )
            except RedisUnavailable:
                continue
            self._kick(wakes)

    async def _fall_back(self, exc: RedisUnavailable, timeout_s: float) -> Lease:
        self._refusals.refused(
            "fallback",
            "%s; limiting calls to %s in this process alone (%s each) until Redis answers",
            str(exc).rstrip("."),
            self._provider,
            self._settings.setting_names("max_inflight"),
        )
        return await self._local.acquire(timeout_s=timeout_s)

    def _refuse(self, inflight: int, *, waited: bool, who: str = "") -> Overloaded:
        return refusal(
            self._provider,
            self._settings,
            self._refusals,
            inflight=inflight,
            waited=waited,
            who=who or "The gateways sharing Redis have",
        )


def build_inflight_factory(
    redis: SharedRedis | None, lease_s: float, setting_names: Callable[[str], str]
) -> InflightFactory:
    """Each provider's limiter: shared on `redis`, or this process's own without Redis."""
    if redis is None:
        return local_inflight

    def shared(provider: str, settings: TransportSettings) -> InflightLimiter:
        return RedisInflight(
            provider, settings, redis, lease_s=lease_s, setting_names=setting_names
        )

    return shared
