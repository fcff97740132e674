"""Per-key limits shared in Redis by every worker and instance (the KeyLimiter port).

Keys of gateway key K, one hash tag so a cluster keeps them on one slot (every script touches
only the keys of one K, and declares them):

    {xrouter:key:K}:window   HASH w (window index), r (requests), t (tokens) of the window
    {xrouter:key:K}:leases   ZSET lease token -> lease expiry (ms, Redis's clock)

Every admission is ONE Lua script run atomically on Redis's own clock (`TIME`), so "never more
than K" is exact across processes and machines, and clocks that differ between machines never
move a window or stretch a lease:
- windows are fixed, aligned to Redis's clock (`TIME` divided by the window's length): a
  window's counts are reset by the first script that sees a newer index, and the hash expires
  shortly after its window ends (nothing of a past window stays);
- the requests counter counts admitted requests only; the tokens counter is checked (refused
  once used >= limit) and charged by `charge_tokens` (input tokens at tokenize, output tokens
  at the end), so one request may take a key over its tokens limit, and the next is refused;
- the concurrency limit is a ZSET of leases scored by their expiry: expired ones are removed
  first, then a lease is added when fewer than the limit are held. A lease lasts `lease_s`
  and is renewed every `lease_s / 3` by one heartbeat per process while it is held; a worker
  that dies stops renewing, and its leases free themselves `lease_s` later;
- all or nothing: a refusal counts nothing and takes no lease.
Releases never wait: they are sent by a background task, together with those that came while
the previous batch was on the wire (one script for all keys on a plain Redis, one per key on a
cluster, whose slots differ by key).

Redis unavailable: `admit` raises StorageUnavailable (503). This FAILS CLOSED on purpose: a
key with limits must not go unlimited because Redis is down (an outage would otherwise lift
every limit at once). Keys without limits never reach Redis and keep working. A charge that
cannot be sent is logged and forgotten (that window undercounts it); a lease whose release
cannot be sent expires by itself.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Final

from xrouter.adapters.limits import (
    CONCURRENT,
    REQUESTS,
    TOKENS,
    UNLIMITED,
    WINDOW_S,
    rate_state,
    refusal,
)
from xrouter.adapters.redis.connection import RedisClient, RedisUnavailable, SharedRedis
from xrouter.adapters.redis.resp import Arg, Lane, Script
from xrouter.application.ports import KeyAdmission
from xrouter.application.refusal_log import RefusalLog
from xrouter.domain.errors import StorageUnavailable
from xrouter.domain.keys import GatewayKey

log = logging.getLogger("xrouter.limits")

MARGIN_MS: Final = 1000
"""How long a window's counts outlive its end (they are reset by index anyway)."""
RELEASE_BATCH: Final = 512
"""Most leases released by one script call."""

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

_WINDOW = """
local window_ms = tonumber(ARGV[1])
local index = math.floor(now / window_ms)
local reset_ms = (index + 1) * window_ms - now
local keep_ms = reset_ms + tonumber(ARGV[2])
"""

# KEYS: window, leases. ARGV: window_ms, margin_ms, rpm, tpm, concurrent (-1: no such limit),
# lease token, lease_ms, leases_keep_ms.
# Returns {refused (0 admitted, 1 requests, 2 tokens, 3 concurrent), requests, tokens,
# reset_ms}: the window's counts after this request.
_ADMIT = (
    _NOW
    + _WINDOW
    + """
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local concurrent = tonumber(ARGV[5])
local counts = redis.call('HMGET', KEYS[1], 'w', 'r', 't')
local current = tonumber(counts[1]) == index
local requests, tokens = 0, 0
if current then
    requests = tonumber(counts[2]) or 0
    tokens = tonumber(counts[3]) or 0
end
if rpm >= 0 and requests >= rpm then
    return {1, requests, tokens, reset_ms}
end
if tpm >= 0 and tokens >= tpm then
    return {2, requests, tokens, reset_ms}
end
if concurrent >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    if redis.call('ZCARD', KEYS[2]) >= concurrent then
        return {3, requests, tokens, reset_ms}
    end
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), ARGV[6])
    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[8]))
end
if rpm >= 0 or tpm >= 0 then
    if current then
        requests = redis.call('HINCRBY', KEYS[1], 'r', 1)
    else
        redis.call('HSET', KEYS[1], 'w', index, 'r', 1, 't', 0)
        requests = 1
    end
    redis.call('PEXPIRE', KEYS[1], keep_ms)
end
return {0, requests, tokens, reset_ms}
"""
)

# KEYS: window. ARGV: window_ms, margin_ms, tokens. Adds to the current window's tokens.
_CHARGE = (
    _NOW
    + _WINDOW
    + """
if tonumber(redis.call('HGET', KEYS[1], 'w')) == index then
    redis.call('HINCRBY', KEYS[1], 't', ARGV[3])
else
    redis.call('HSET', KEYS[1], 'w', index, 'r', 0, 't', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], keep_ms)
return 1
"""
)

# KEYS: leases of one or more keys. ARGV: lease_ms, keep_ms, then per key: n, n tokens.
# Extends the leases still held; returns the tokens whose lease had already expired (lost).
_RENEW = (
    _NOW
    + """
local expires = now + tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local lost = {}
local at = 3
for k = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
    local n = tonumber(ARGV[at])
    for i = at + 1, at + n do
        if redis.call('ZSCORE', KEYS[k], ARGV[i]) then
            redis.call('ZADD', KEYS[k], 'XX', expires, ARGV[i])
        else
            lost[#lost + 1] = ARGV[i]
        end
    end
    at = at + n + 1
    redis.call('PEXPIRE', KEYS[k], keep)
end
return lost
"""
)

# KEYS: leases of one or more keys. ARGV: per key: n, n tokens. Frees those leases.
_RELEASE = """
local at = 1
for k = 1, #KEYS do
    local n = tonumber(ARGV[at])
    for i = at + 1, at + n do
        redis.call('ZREM', KEYS[k], ARGV[i])
    end
    at = at + n + 1
end
return 1
"""

_REFUSED_BY: Final = {1: REQUESTS, 2: TOKENS, 3: CONCURRENT}


class _Script:
    """A Lua script on the lean client (resp.py) when the process has one, else on redis-py's
    (a cluster routes it by its keys' slot); both load it again after a Redis restart."""

    __slots__ = ("lean", "registered")

    def __init__(self, redis: SharedRedis, source: str) -> None:
        self.lean = Script(source)
        self.registered = redis.client.register_script(source)

    async def run(
        self, redis: SharedRedis, what: str, keys: Sequence[str], args: Sequence[Arg]
    ) -> Any:
        if redis.lean is not None:

            async def on_lane(lane: Lane) -> Any:
                return await self.lean(lane, keys, args)

            return await redis.run_lean(what, on_lane)

        async def on_client(client: RedisClient) -> Any:
            return await self.registered(keys=keys, args=args, client=client)

        return await redis.run(what, on_client)


def _keys(key_id: str) -> tuple[str, str]:
    tag = f"{{xrouter:key:{key_id}}}"
    return f"{tag}:window", f"{tag}:leases"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisKeyLimiter:
    """KeyLimiter shared through the process's SharedRedis (see the module docstring); fails
    closed: `admit` raises StorageUnavailable for a limited key while Redis is unavailable."""

    def __init__(
        self,
        redis: SharedRedis,
        lease_s: float,
        *,
        window_s: float = WINDOW_S,
        setting_names: Callable[[str], str] = lambda name: name,
    ) -> None:
        """`lease_s`: how long a concurrency lease outlives its last renewal (a dead worker's
        leases free themselves after it); `window_s`: a window's length (a minute; tests
        shorten it); `setting_names` names the gateway's settings in log lines."""
        self._redis = redis
        self._lease_s = lease_s
        self._names = setting_names
        self._window_ms = str(_ms(window_s))
        self._margin_ms = str(MARGIN_MS)
        self._lease_ms = str(_ms(lease_s))
        self._keep_ms = str(_ms(2 * lease_s) + MARGIN_MS)
        self._per_key_calls = redis.settings.cluster
        """A cluster runs a script on one slot: renewals and releases go key by key."""
        self._admit = _Script(redis, _ADMIT)
        self._charge = _Script(redis, _CHARGE)
        self._renew = _Script(redis, _RENEW)
        self._release = _Script(redis, _RELEASE)
        self._refusals = RefusalLog(log)
        self._held: dict[str, str] = {}
        """Lease token -> key id, for the leases this process holds (the heartbeat renews
        them)."""
        self._heartbeat: asyncio.Task[None] | None = None
        self._releasing: list[tuple[str, str]] = []
        """(key id, token) of leases to free, sent together by one background task."""
        self._releaser: asyncio.Task[None] | None = None
        self._charging: dict[str, int] = {}
        """Window key -> tokens to add, sent by one background task: a charge never waits
        for Redis, and the charges of many requests of one key go as one script call."""
        self._charger: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RedisKeyLimiter({self._redis!r}, held={len(self._held)})"

    async def admit(self, key: GatewayKey) -> KeyAdmission:
        limits = key.limits
        if not limits.any:
            return UNLIMITED
        token = secrets.token_hex(10) if limits.concurrent is not None else ""
        args = (
            self._window_ms,
            self._margin_ms,
            _limit(limits.requests_per_minute),
            _limit(limits.tokens_per_minute),
            _limit(limits.concurrent),
            token,
            self._lease_ms,
            self._keep_ms,
        )
        try:
            refused, requests, tokens, reset_ms = await self._admit.run(
                self._redis, "check a key's limits", _keys(key.id), args
            )
        except RedisUnavailable as exc:
            if token:
                self._free(key.id, token)  # in case the script ran before the answer was lost
            raise StorageUnavailable(
                f"The limits of key '{key.name}' cannot be checked: {exc} Requests of keys "
                "with limits are refused until Redis answers again; retry shortly.",
                retry_after=1.0,
            ) from None
        except BaseException:  # cancelled: the script may have run all the same
            if token:
                self._free(key.id, token)
            raise
        reset_s = int(reset_ms) / 1000
        state = rate_state(
            limits, requests_used=int(requests), tokens_used=int(tokens), reset_s=reset_s
        )
        if refused:
            return refusal(_REFUSED_BY[int(refused)], state, reset_s)
        if not token:
            return KeyAdmission(allowed=True, state=state)
        self._hold(key.id, token)
        return KeyAdmission(allowed=True, state=state, lease=token)

    async def charge_tokens(self, key: GatewayKey, tokens: int) -> None:
        """Queued, not awaited: the request does not wait a round trip for its count. The
        charge lands in Redis within one round trip; until then an admission of the same
        key sees the tokens before it (tokens per minute may admit one more request than an
        instant count would, as it already may by one request's output)."""
        if key.limits.tokens_per_minute is None or tokens <= 0:
            return
        window, _ = _keys(key.id)
        self._charging[window] = self._charging.get(window, 0) + tokens
        if self._charger is None or self._charger.done():
            self._charger = asyncio.get_running_loop().create_task(self._charge_pending())

    async def flush(self) -> None:
        """Wait until the queued charges have reached Redis (tests; shutdown does it too)."""
        while self._charger is not None and not self._charger.done():
            await asyncio.gather(self._charger, return_exceptions=True)

    async def _charge_pending(self) -> None:
        while self._charging:
            pending, self._charging = self._charging, {}
            for window, tokens in pending.items():
                try:
                    await self._charge.run(
                        self._redis,
                        "charge a key's tokens",
                        (window,),
                        (self._window_ms, self._margin_ms, tokens),
                    )
                except RedisUnavailable as exc:
                    self._refusals.refused(
                        "charge",
                        "cannot charge %d tokens to %s (%s): its tokens per minute undercount them",
                        tokens,
                        window,
                        exc,
                    )

    def release(self, key: GatewayKey, lease: str) -> None:
        self._held.pop(lease, None)
        self._free(key.id, lease)

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self._releaser is not None:
            await asyncio.gather(self._releaser, return_exceptions=True)
        if self._charger is not None:
            await asyncio.gather(self._charger, return_exceptions=True)

    # -- internals -----------------------------------------------------------------------

    def _hold(self, key_id: str, token: str) -> None:
        self._held[token] = key_id
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew_while_held())

    async def _renew_while_held(self) -> None:
        interval = self._lease_s / 3
        while self._held:
            await asyncio.sleep(interval)
            held = list(self._held.items())
            if not held:
                return
            lost: list[str] = []
            for keys, args in self._calls([(key_id, token) for token, key_id in held]):
                try:
                    answer = await self._renew.run(
                        self._redis,
                        "renew key leases",
                        keys,
                        (self._lease_ms, self._keep_ms, *args),
                    )
                except RedisUnavailable as exc:
                    self._refusals.refused(
                        "renew",
                        "cannot renew %d leases of gateway keys (%s); they expire %s s after "
                        "their last renewal (%s)",
                        len(held),
                        exc,
                        self._lease_s,
                        self._names("inflight_lease_s"),
                    )
                    break
                lost.extend(t.decode() if isinstance(t, bytes) else str(t) for t in answer)
            still_held = [token for token in lost if token in self._held]
            if still_held:
                log.warning(
                    "%d leases of gateway keys expired while their requests ran (not renewed "
                    "within %s s, %s): other gateways may admit requests over those keys' "
                    "concurrency limits until they end",
                    len(still_held),
                    self._lease_s,
                    self._names("inflight_lease_s"),
                )

    def _free(self, key_id: str, token: str) -> None:
        """Free a lease in the background (a release never waits for Redis, never raises);
        leases freed while a batch is on the wire go together in the next one. If Redis does
        not answer, the lease expires by itself."""
        self._releasing.append((key_id, token))
        if self._releaser is not None and not self._releaser.done():
            return
        try:
            self._releaser = asyncio.get_running_loop().create_task(self._release_pending())
        except RuntimeError:  # no event loop (interpreter shutdown): the lease expires
            self._releasing.clear()

    async def _release_pending(self) -> None:
        while self._releasing:
            batch = self._releasing[:RELEASE_BATCH]
            del self._releasing[:RELEASE_BATCH]
            for keys, args in self._calls(batch):
                try:
                    await self._release.run(self._redis, "release key leases", keys, args)
                except RedisUnavailable:
                    break  # they expire by themselves; the breaker makes the rest fail fast

    def _calls(self, leases: Sequence[tuple[str, str]]) -> list[tuple[list[str], list[Arg]]]:
        """The script calls for `leases` ((key id, token) pairs): KEYS are the keys' lease
        sets, ARGV per key its count then its tokens. One call on a plain Redis; one per key
        on a cluster (a script runs on one slot)."""
        by_key: dict[str, list[str]] = {}
        for key_id, token in leases:
            by_key.setdefault(key_id, []).append(token)
        calls: list[tuple[list[str], list[Arg]]] = []
        keys: list[str] = []
        args: list[Arg] = []
        for key_id, tokens in by_key.items():
            keys.append(_keys(key_id)[1])
            args.append(len(tokens))
            args.extend(tokens)
            if self._per_key_calls:
                calls.append((keys, args))
                keys, args = [], []
        if keys:
            calls.append((keys, args))
        return calls
