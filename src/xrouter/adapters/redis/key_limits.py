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
Releases and token charges never wait: one background task settles them, together with those
that came while the previous batch was on the wire (one script for all keys on a plain Redis,
one per key on a cluster, whose slots differ by key). A release is sent at once; a charge
alone waits up to CHARGE_DELAY_S for company: the request's own release (its input and output
tokens and its lease then go in one call), or the next admission of the same key in this
process, whose script adds the pending tokens before it checks the limit. So a process's own
admissions always see its charges; another process sees them within CHARGE_DELAY_S.

Admission ahead (keys with large limits only: every limit set is at least PREFETCH_MIN_LIMIT
requests or concurrent requests, PREFETCH_MIN_TOKENS tokens): after admitting a request, the
process admits the key's next request in the background, by the same script, and keeps that
admission (its request counted, its lease taken) for the next request of the key, which then
waits for no round trip (made only while no request of the process waits for the script: under
load the round trips overlap anyway). So the limits are never exceeded; what a held admission
costs is at most one request of the window and one concurrent slot per key and process that
others cannot use, for at most PREFETCH_TTL_S (it is given back unused after that, or when its
window ends). A held admission is used only while the key's tokens, as the script saw them plus
this process's charges since, are under the tokens limit; else the request is admitted by the
script as usual. Keys with small limits are always admitted by the script.

Redis unavailable: `admit` raises StorageUnavailable (503). This FAILS CLOSED on purpose: a
key with limits must not go unlimited because Redis is down (an outage would otherwise lift
every limit at once). Keys without limits never reach Redis and keep working. A charge that
cannot be sent is logged and forgotten (that window undercounts it); a lease whose release
cannot be sent expires by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from xrouter.adapters.limits import (
    CONCURRENT,
    REQUESTS,
    TOKENS,
    UNLIMITED,
    WINDOW_S,
    rate_state,
    refusal,
)
from xrouter.adapters.redis.connection import RedisUnavailable, SharedRedis
from xrouter.adapters.redis.resp import Arg
from xrouter.adapters.redis.scripts import RedisScript
from xrouter.application.ports import KeyAdmission
from xrouter.application.refusal_log import RefusalLog
from xrouter.domain.errors import StorageUnavailable
from xrouter.domain.keys import GatewayKey

log = logging.getLogger("xrouter.limits")

MARGIN_MS: Final = 1000
"""How long a window's counts outlive its end (they are reset by index anyway)."""
RELEASE_BATCH: Final = 512
"""Most leases released by one script call."""
PREFETCH_MIN_LIMIT: Final = 100
"""Admission ahead only for keys whose requests and concurrent limits are at least this."""
PREFETCH_MIN_TOKENS: Final = 100_000
"""... and whose tokens per minute limit is at least this."""
PREFETCH_TTL_S: Final = 1.0
"""How long an admission made ahead waits for its request before it is given back."""
CHARGE_DELAY_S: Final = 0.05
"""How long a token charge may wait to be sent with a release or an admission."""

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
# lease_ms, leases_keep_ms, tokens charged before the checks (this process's pending charges
# of the key), then one lease token per request to admit ("" without a concurrency limit).
# The requests are decided one after the other, as separate calls would be. Returns, per
# request, {refused (0 admitted, 1 requests, 2 tokens, 3 concurrent), requests, tokens,
# reset_ms}: the window's counts after it.
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
local pending = tonumber(ARGV[8])
if pending > 0 then
    if current then
        tokens = redis.call('HINCRBY', KEYS[1], 't', pending)
    else
        redis.call('HSET', KEYS[1], 'w', index, 'r', 0, 't', pending)
        current = true
        tokens = pending
    end
    redis.call('PEXPIRE', KEYS[1], keep_ms)
end
local held = -1
if concurrent >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    held = redis.call('ZCARD', KEYS[2])
end
local answers = {}
for i = 9, #ARGV do
    local refused = 0
    if rpm >= 0 and requests >= rpm then
        refused = 1
    elseif tpm >= 0 and tokens >= tpm then
        refused = 2
    elseif concurrent >= 0 and held >= concurrent then
        refused = 3
    else
        if concurrent >= 0 then
            redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[i])
            redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[7]))
            held = held + 1
        end
        if rpm >= 0 or tpm >= 0 then
            if current then
                requests = redis.call('HINCRBY', KEYS[1], 'r', 1)
            else
                redis.call('HSET', KEYS[1], 'w', index, 'r', 1, 't', 0)
                current = true
                requests = 1
            end
            redis.call('PEXPIRE', KEYS[1], keep_ms)
        end
    end
    answers[#answers + 1] = refused
    answers[#answers + 1] = requests
    answers[#answers + 1] = tokens
    answers[#answers + 1] = reset_ms
end
return answers
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

# KEYS: per key its window and its leases. ARGV: window_ms, margin_ms, then per key: tokens to
# add to its current window (0: none), n, n lease tokens to free.
_SETTLE = (
    _NOW
    + _WINDOW
    + """
local at = 3
for k = 1, #KEYS, 2 do
    local tokens = tonumber(ARGV[at])
    if tokens > 0 then
        if tonumber(redis.call('HGET', KEYS[k], 'w')) == index then
            redis.call('HINCRBY', KEYS[k], 't', tokens)
        else
            redis.call('HSET', KEYS[k], 'w', index, 'r', 0, 't', tokens)
        end
        redis.call('PEXPIRE', KEYS[k], keep_ms)
    end
    local n = tonumber(ARGV[at + 1])
    for i = at + 2, at + n + 1 do
        redis.call('ZREM', KEYS[k + 1], ARGV[i])
    end
    at = at + n + 2
end
return 1
"""
)

_REFUSED_BY: Final = {1: REQUESTS, 2: TOKENS, 3: CONCURRENT}


def _keys(key_id: str) -> tuple[str, str]:
    tag = f"{{xrouter:key:{key_id}}}"
    return f"{tag}:window", f"{tag}:leases"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _limit(value: int | None) -> int:
    return -1 if value is None else value


@dataclass(slots=True)
class _Ahead:
    """An admission made ahead for a key's next request (module docstring)."""

    admission: KeyAdmission
    tokens_seen: int
    """The window's tokens as the script saw them."""
    charged_before: int
    """This process's charges of the key (`_charged`) when the script ran."""
    usable_until: float
    """Loop time after which it is given back: PREFETCH_TTL_S, or its window's end."""
    expiry: asyncio.TimerHandle | None = None


def _prefetchable(key: GatewayKey) -> bool:
    limits = key.limits
    return (
        (limits.requests_per_minute is None or limits.requests_per_minute >= PREFETCH_MIN_LIMIT)
        and (limits.concurrent is None or limits.concurrent >= PREFETCH_MIN_LIMIT)
        and (limits.tokens_per_minute is None or limits.tokens_per_minute >= PREFETCH_MIN_TOKENS)
    )


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
        self._admit = RedisScript(redis, _ADMIT)
        self._renew = RedisScript(redis, _RENEW)
        self._settle = RedisScript(redis, _SETTLE)
        self._refusals = RefusalLog(log)
        self._lease_prefix = secrets.token_hex(8)
        self._lease_numbers = itertools.count()
        """Lease tokens are this process's random prefix and a counter: unique across
        processes without reading the system's random source per request (13 us here)."""
        self._held: dict[str, str] = {}
        """Lease token -> key id, for the leases this process holds (the heartbeat renews
        them)."""
        self._heartbeat: asyncio.Task[None] | None = None
        self._releasing: list[tuple[str, str]] = []
        """(key id, token) of leases to free."""
        self._charging: dict[str, int] = {}
        """Key id -> tokens to add to its window."""
        self._settler: asyncio.Task[None] | None = None
        """The one background task that sends releases and charges (module docstring)."""
        self._delayed: asyncio.TimerHandle | None = None
        """A charge's wait for company (CHARGE_DELAY_S), when one is pending."""
        self._asking: dict[
            str, tuple[GatewayKey, list[tuple[str, asyncio.Future[tuple[KeyAdmission, int]]]]]
        ] = {}
        """Key id -> the requests asking for admission in this turn of the event loop."""
        self._admitting: set[asyncio.Task[None]] = set()
        self._closing = False
        self._waiting = 0
        """Requests of this process waiting for the admission script now."""
        self._ahead: dict[str, _Ahead] = {}
        """Key id -> the admission made ahead for its next request."""
        self._admitting_ahead: dict[str, asyncio.Task[None]] = {}
        self._charged: dict[str, int] = {}
        """Key id -> every token this process charged it (for a held admission's check)."""

    def __repr__(self) -> str:
        return f"RedisKeyLimiter({self._redis!r}, held={len(self._held)})"

    async def admit(self, key: GatewayKey) -> KeyAdmission:
        if not key.limits.any:
            return UNLIMITED
        ahead = self._take_ahead(key)
        if ahead is not None:
            self._admit_ahead(key)
            return ahead
        self._waiting += 1
        try:
            admission, _ = await self._run_admit(key)
        finally:
            self._waiting -= 1
        if admission.allowed and _prefetchable(key):
            self._admit_ahead(key)
        return admission

    def _take_ahead(self, key: GatewayKey) -> KeyAdmission | None:
        """The admission made ahead for `key`, if there is one still good to use."""
        ahead = self._ahead.pop(key.id, None)
        if ahead is None:
            return None
        if ahead.expiry is not None:
            ahead.expiry.cancel()
        tpm = key.limits.tokens_per_minute
        tokens = ahead.tokens_seen + self._charged.get(key.id, 0) - ahead.charged_before
        if asyncio.get_running_loop().time() < ahead.usable_until and (tpm is None or tokens < tpm):
            return ahead.admission
        self._give_back(key.id, ahead)
        return None

    def _admit_ahead(self, key: GatewayKey) -> None:
        """Admit the key's next request in the background (one at a time per key), when no
        request of this process is waiting for its admission: under load the round trips of
        many requests overlap anyway (and go out together), and admitting ahead would only
        add calls of its own."""
        if self._waiting or key.id in self._ahead or key.id in self._admitting_ahead:
            return
        self._admitting_ahead[key.id] = asyncio.get_running_loop().create_task(self._ahead_of(key))

    async def _ahead_of(self, key: GatewayKey) -> None:
        loop = asyncio.get_running_loop()
        try:
            charged = self._charged.get(key.id, 0)
            admission, tokens = await self._run_admit(key)
        except (StorageUnavailable, asyncio.CancelledError):
            return  # the next request is admitted by the script, with its own answer
        finally:
            self._admitting_ahead.pop(key.id, None)
        if not admission.allowed:
            return
        window_left = admission.state.reset_requests_s or admission.state.reset_tokens_s
        usable = PREFETCH_TTL_S if window_left is None else min(PREFETCH_TTL_S, window_left)
        ahead = _Ahead(admission, tokens, charged, loop.time() + usable)
        if key.id in self._ahead or self._closing:
            self._give_back(key.id, ahead)
            return
        ahead.expiry = loop.call_later(usable, self._expire_ahead, key.id, ahead)
        self._ahead[key.id] = ahead

    def _expire_ahead(self, key_id: str, ahead: _Ahead) -> None:
        if self._ahead.get(key_id) is ahead:
            del self._ahead[key_id]
            self._give_back(key_id, ahead)

    def _give_back(self, key_id: str, ahead: _Ahead) -> None:
        """An admission made ahead and not used: its lease goes back (its request stays
        counted in its window)."""
        if ahead.expiry is not None:
            ahead.expiry.cancel()
        lease = ahead.admission.lease
        if lease is not None:
            self._held.pop(lease, None)
            self._free(key_id, lease)

    async def _run_admit(self, key: GatewayKey) -> tuple[KeyAdmission, int]:
        """The admission script's decision for one request, and the window's tokens as the
        script saw them. The requests of one key that ask in the same turn of the event loop
        go in one script call (decided in order, as separate calls would be)."""
        token = (
            f"{self._lease_prefix}{next(self._lease_numbers):x}"
            if key.limits.concurrent is not None
            else ""
        )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[KeyAdmission, int]] = loop.create_future()
        batch = self._asking.get(key.id)
        if batch is None:
            batch = self._asking[key.id] = (key, [])
            loop.call_soon(self._send_admissions, key.id)
        batch[1].append((token, waiter))
        return await waiter

    def _send_admissions(self, key_id: str) -> None:
        key, asking = self._asking.pop(key_id)
        task = asyncio.get_running_loop().create_task(self._admit_all(key, asking))
        self._admitting.add(task)
        task.add_done_callback(self._admitting.discard)

    async def _admit_all(
        self, key: GatewayKey, asking: list[tuple[str, asyncio.Future[tuple[KeyAdmission, int]]]]
    ) -> None:
        limits = key.limits
        pending = self._charging.pop(key.id, 0)
        args: list[Arg] = [
            self._window_ms,
            self._margin_ms,
            _limit(limits.requests_per_minute),
            _limit(limits.tokens_per_minute),
            _limit(limits.concurrent),
            self._lease_ms,
            self._keep_ms,
            pending,
            *(token for token, _ in asking),
        ]
        try:
            answers = await self._admit.run("check a key's limits", _keys(key.id), args)
        except BaseException as exc:  # unavailable, or cancelled: the script may have run
            self._recharge(key.id, pending)
            for token, waiter in asking:
                if token:
                    self._free(key.id, token)
                if waiter.done():
                    continue
                if isinstance(exc, RedisUnavailable):
                    waiter.set_exception(
                        StorageUnavailable(
                            f"The limits of key '{key.name}' cannot be checked: {exc} Requests "
                            "of keys with limits are refused until Redis answers again; retry "
                            "shortly.",
                            retry_after=1.0,
                        )
                    )
                else:
                    waiter.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for number, (token, waiter) in enumerate(asking):
            refused, requests, tokens, reset_ms = answers[4 * number : 4 * number + 4]
            decided = self._decided(
                key, token, int(refused), int(requests), int(tokens), int(reset_ms)
            )
            if waiter.done():  # its caller gave up: a lease it was given goes back
                if decided.lease is not None:
                    self.release(key, decided.lease)
                continue
            waiter.set_result((decided, int(tokens)))

    def _decided(
        self, key: GatewayKey, token: str, refused: int, requests: int, tokens: int, reset_ms: int
    ) -> KeyAdmission:
        """One request's answer from the script, as the admission the caller gets."""
        reset_s = reset_ms / 1000
        state = rate_state(key.limits, requests_used=requests, tokens_used=tokens, reset_s=reset_s)
        if refused:
            return refusal(_REFUSED_BY[refused], state, reset_s)
        if not token:
            return KeyAdmission(allowed=True, state=state)
        self._hold(key.id, token)
        return KeyAdmission(allowed=True, state=state, lease=token)

    async def charge_tokens(self, key: GatewayKey, tokens: int) -> None:
        """Queued, not awaited: the request does not wait a round trip for its count. The
        charge goes with the next admission of the key here, with a release, or alone after
        CHARGE_DELAY_S, whichever comes first (module docstring)."""
        if key.limits.tokens_per_minute is None or tokens <= 0:
            return
        self._charging[key.id] = self._charging.get(key.id, 0) + tokens
        self._charged[key.id] = self._charged.get(key.id, 0) + tokens
        if self._delayed is None and (self._settler is None or self._settler.done()):
            self._delayed = asyncio.get_running_loop().call_later(CHARGE_DELAY_S, self._settle_soon)

    async def flush(self) -> None:
        """Send what is queued now and wait until it has reached Redis (tests, shutdown)."""
        if self._charging or self._releasing:
            self._settle_soon()
        while self._settler is not None and not self._settler.done():
            await asyncio.gather(self._settler, return_exceptions=True)

    def release(self, key: GatewayKey, lease: str) -> None:
        self._held.pop(lease, None)
        self._free(key.id, lease)

    async def aclose(self) -> None:
        self._closing = True
        if self._admitting:  # admissions on the wire: their leases are held or given back
            await asyncio.gather(*self._admitting, return_exceptions=True)
        for task in list(self._admitting_ahead.values()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for key_id, ahead in list(self._ahead.items()):
            self._give_back(key_id, ahead)
        self._ahead.clear()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        await self.flush()

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

    def _recharge(self, key_id: str, tokens: int) -> None:
        """Tokens an admission carried when its answer was lost: queued again (counted twice
        if the script ran; a limit counts over rather than under)."""
        if tokens > 0:
            self._charging[key_id] = self._charging.get(key_id, 0) + tokens
            self._settle_soon()

    def _free(self, key_id: str, token: str) -> None:
        """Free a lease in the background (a release never waits for Redis, never raises);
        leases freed while a batch is on the wire go together in the next one. If Redis does
        not answer, the lease expires by itself."""
        self._releasing.append((key_id, token))
        self._settle_soon()

    def _settle_soon(self) -> None:
        """Start the settling task now unless it runs (it takes what is queued when it
        gets there)."""
        if self._delayed is not None:
            self._delayed.cancel()
            self._delayed = None
        if self._settler is not None and not self._settler.done():
            return
        try:
            self._settler = asyncio.get_running_loop().create_task(self._settle_pending())
        except RuntimeError:  # no event loop (interpreter shutdown): leases expire
            self._releasing.clear()
            self._charging.clear()

    async def _settle_pending(self) -> None:
        while self._releasing or self._charging:
            batch = self._releasing[:RELEASE_BATCH]
            del self._releasing[:RELEASE_BATCH]
            charges, self._charging = self._charging, {}
            for keys, args in self._calls(batch, charges):
                try:
                    await self._settle.run(
                        "settle key leases and tokens",
                        keys,
                        (self._window_ms, self._margin_ms, *args),
                    )
                except RedisUnavailable as exc:
                    # Leases expire by themselves; the breaker makes the rest fail fast.
                    self._refusals.refused(
                        "settle",
                        "cannot charge %d tokens to gateway keys nor free %d leases (%s): "
                        "those windows undercount them, the leases expire by themselves",
                        sum(charges.values()),
                        len(batch),
                        exc,
                    )
                    break

    def _calls(
        self, leases: Sequence[tuple[str, str]], charges: dict[str, int] | None = None
    ) -> list[tuple[list[str], list[Arg]]]:
        """The script calls for `leases` ((key id, token) pairs) and `charges` (key id ->
        tokens). Settling (`charges` given): KEYS per key its window and leases, ARGV per key
        its tokens, count, lease tokens. Renewing (`charges` None): KEYS the lease sets, ARGV
        per key its count then its tokens. One call on a plain Redis; one per key on a
        cluster (a script runs on one slot)."""
        by_key: dict[str, list[str]] = {key_id: [] for key_id in charges or ()}
        for key_id, token in leases:
            by_key.setdefault(key_id, []).append(token)
        calls: list[tuple[list[str], list[Arg]]] = []
        keys: list[str] = []
        args: list[Arg] = []
        for key_id, tokens in by_key.items():
            window, lease_set = _keys(key_id)
            if charges is None:
                keys.append(lease_set)
            else:
                keys.extend((window, lease_set))
                args.append(charges.get(key_id, 0))
            args.append(len(tokens))
            args.extend(tokens)
            if self._per_key_calls:
                calls.append((keys, args))
                keys, args = [], []
        if keys:
            calls.append((keys, args))
        return calls
