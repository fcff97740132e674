"""Per-key limits (the KeyLimiter port), exact under concurrency: the in-process limiter and the
Redis one (a plain Redis and a Redis Cluster) through the same scenarios.

Every scenario runs on each backend: requests per minute admit exactly K in a window and
refuse the next with the limit's name and a Retry-After; tokens per minute refuse once the
charges reach the limit; the concurrency limit holds until a release; a refusal takes nothing;
a new window starts afresh. The race: 200 parallel admissions (on Redis through two clients,
as two processes would) against small limits never admit more than the limits. Redis only: a
dead worker's lease frees itself after its lease, a live one keeps it (heartbeat), and a
Redis that is down refuses limited keys (fail closed) without failing anything else.

Memory runs on a fake clock; Redis on its own clock (`TIME`, the machine's clock here), with
one-second windows where a test needs a new window.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from tests.redis_servers import RedisCluster, RedisServer
from xrouter.adapters.limits.memory import MemoryKeyLimiter
from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.adapters.redis.key_limits import PREFETCH_MIN_LIMIT, PREFETCH_TTL_S, RedisKeyLimiter
from xrouter.application.ports import KeyAdmission, KeyLimiter
from xrouter.domain.errors import StorageUnavailable
from xrouter.domain.keys import GatewayKey, KeyLimits
from xrouter.entrypoints.limits_config import build_key_limiter

START = 1_700_000_010.0
"""The fake clock's start: 30 s into a minute."""


def make_key(
    key_id: str = "key_0123456789abcdef",
    *,
    rpm: int | None = None,
    tpm: int | None = None,
    concurrent: int | None = None,
) -> GatewayKey:
    return GatewayKey(
        id=key_id,
        name=f"name-of-{key_id}",
        hash="00" * 32,
        display="xr-abcde",
        created_at=START - 100,
        limits=KeyLimits(requests_per_minute=rpm, tokens_per_minute=tpm, concurrent=concurrent),
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """Where a scenario runs: memory (a fake clock), or a Redis URL (plain or cluster)."""

    name: str
    url: str | None = None
    cluster: bool = False
    clock: FakeClock = field(default_factory=FakeClock)
    closing: list[KeyLimiter | SharedRedis] = field(default_factory=list)

    def limiters(
        self, count: int = 1, *, lease_s: float = 5.0, window_s: float = 60.0
    ) -> list[KeyLimiter]:
        """`count` limiters as `count` processes would have them: in memory one process has
        one; on Redis each has its own client."""
        if self.url is None:
            memory = MemoryKeyLimiter(self.clock, window_s=window_s)
            self.closing.append(memory)
            return [memory] * count
        made: list[KeyLimiter] = []
        for _ in range(count):
            redis = shared_redis(self.url, cluster=self.cluster)
            limiter = RedisKeyLimiter(redis, lease_s, window_s=window_s)
            self.closing += [limiter, redis]
            made.append(limiter)
        return made

    def limiter(self, **options: float) -> KeyLimiter:
        return self.limiters(1, **options)[0]

    async def at_window_start(self, window_s: float) -> None:
        """Move to the start of a window, so a scenario has the whole window."""
        if self.url is None:
            self.clock.now = (self.clock.now // window_s + 1) * window_s + 0.001
            return
        await asyncio.sleep(window_s - time.time() % window_s + 0.02)

    async def away_from_window_end(self, window_s: float = 60.0, needed_s: float = 5.0) -> None:
        """Make sure `needed_s` are left in the current window (Redis: the machine's clock)."""
        if self.url is not None and window_s - time.time() % window_s < needed_s:
            await self.at_window_start(window_s)

    async def advance(self, seconds: float) -> None:
        if self.url is None:
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)

    async def aclose(self) -> None:
        for closing in self.closing:
            await closing.aclose()


def shared_redis(url: str, *, cluster: bool = False) -> SharedRedis:
    # redis-py's cluster client refuses a command when its pool to a node is exhausted
    # (MaxConnectionsError) instead of waiting: the race's 100 parallel calls per client need
    # a pool that large.
    return SharedRedis(
        RedisSettings(url=url, cluster=cluster, pool_size=256, timeout_s=0.5, breaker_s=0.5)
    )


@pytest.fixture(params=["memory", "redis", "cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        made = Backend("memory")
    elif request.param == "redis":
        made = Backend("redis", request.getfixturevalue("redis_server").url)
    else:
        made = Backend("cluster", request.getfixturevalue("redis_cluster").url, cluster=True)
    try:
        yield made
    finally:
        await made.aclose()


# -- each limit ------------------------------------------------------------------------------


async def test_requests_per_minute_admit_exactly_k_then_refuse(backend: Backend) -> None:
    limiter = backend.limiter()
    key = make_key(rpm=3)
    await backend.away_from_window_end()
    admitted = [await limiter.admit(key) for _ in range(3)]
    assert [a.allowed for a in admitted] == [True, True, True]
    assert [a.state.remaining_requests for a in admitted] == [2, 1, 0]
    first = admitted[0].state
    assert first.limit_requests == 3 and first.limit_tokens is None
    assert first.remaining_tokens is None and first.reset_tokens_s is None
    assert first.reset_requests_s is not None and 0 < first.reset_requests_s <= 60
    assert all(a.lease is None for a in admitted)  # no concurrency limit, nothing to release

    refused = await limiter.admit(key)
    assert not refused.allowed and refused.refused_by == "requests_per_minute"
    assert refused.lease is None and refused.state.remaining_requests == 0
    assert refused.retry_after_s == refused.state.reset_requests_s
    assert refused.retry_after_s is not None and 0 < refused.retry_after_s <= 60
    # Another key has its own counts.
    assert (await limiter.admit(make_key("key_00000000000000ff", rpm=3))).allowed


async def test_tokens_per_minute_refuse_once_the_charges_reach_the_limit(
    backend: Backend,
) -> None:
    limiter = backend.limiter()
    key = make_key(tpm=100)
    await backend.away_from_window_end()
    first = await limiter.admit(key)
    assert first.allowed and first.state.limit_tokens == 100
    assert first.state.remaining_tokens == 100 and first.state.limit_requests is None
    await charge(limiter, key, 60)
    second = await limiter.admit(key)
    assert second.allowed and second.state.remaining_tokens == 40
    await charge(limiter, key, 50)  # a request may go over: the check is at admission
    refused = await limiter.admit(key)
    assert not refused.allowed and refused.refused_by == "tokens_per_minute"
    assert refused.state.remaining_tokens == 0
    assert refused.retry_after_s == refused.state.reset_tokens_s
    assert refused.retry_after_s is not None and 0 < refused.retry_after_s <= 60
    # Charges to a key without a tokens limit, or of nothing, are no-ops.
    await charge(limiter, make_key("key_00000000000000ee", rpm=5), 10**9)
    await charge(limiter, key, 0)


async def test_the_concurrency_limit_holds_until_a_release(backend: Backend) -> None:
    limiter = backend.limiter()
    key = make_key(concurrent=2)
    a, b = await limiter.admit(key), await limiter.admit(key)
    assert a.allowed and b.allowed and a.lease and b.lease and a.lease != b.lease
    assert a.state.limit_requests is None and a.state.limit_tokens is None
    refused = await limiter.admit(key)
    assert not refused.allowed and refused.refused_by == "concurrent"
    assert refused.retry_after_s == 1.0 and refused.lease is None
    limiter.release(key, a.lease)
    again = await settle(lambda: limiter.admit(key))
    assert again.lease
    assert (await limiter.admit(key)).refused_by == "concurrent"
    limiter.release(key, b.lease)
    limiter.release(key, again.lease)
    limiter.release(key, again.lease)  # twice, or an unknown lease: harmless
    limiter.release(key, "never-taken")
    await settle(lambda: limiter.admit(key))


async def test_a_refusal_takes_nothing(backend: Backend) -> None:
    window_s = 60.0 if backend.url is None else 1.0
    limiter = backend.limiter(window_s=window_s)
    key = make_key(rpm=2, tpm=10, concurrent=1)
    await backend.at_window_start(window_s)
    held = await limiter.admit(key)
    assert held.allowed and held.lease and held.state.remaining_requests == 1
    # Refused by concurrency: the request is not counted.
    assert (await limiter.admit(key)).refused_by == "concurrent"
    await charge(limiter, key, 10)
    limiter.release(key, held.lease)
    # Refused by tokens (the lease is free): no lease is taken, no request counted.
    refused = await settle(
        lambda: limiter.admit(key), lambda a: a.refused_by == "tokens_per_minute"
    )
    assert refused.state.remaining_requests == 1 and refused.state.remaining_tokens == 0
    await backend.at_window_start(window_s)
    fresh = await limiter.admit(key)  # would be refused by concurrency had a refusal leased
    assert fresh.allowed and fresh.state.remaining_requests == 1
    assert fresh.state.remaining_tokens == 10


async def test_a_new_window_starts_afresh(backend: Backend) -> None:
    window_s = 60.0 if backend.url is None else 1.0
    limiter = backend.limiter(window_s=window_s)
    key = make_key(rpm=2, tpm=10)
    await backend.at_window_start(window_s)
    assert (await limiter.admit(key)).allowed and (await limiter.admit(key)).allowed
    await charge(limiter, key, 10)
    refused = await limiter.admit(key)
    assert refused.refused_by == "requests_per_minute"
    assert refused.retry_after_s is not None and 0 < refused.retry_after_s <= window_s
    await backend.advance(refused.retry_after_s + 0.02)
    fresh = await limiter.admit(key)
    assert fresh.allowed
    assert fresh.state.remaining_requests == 1 and fresh.state.remaining_tokens == 10
    assert fresh.state.reset_requests_s is not None
    assert fresh.state.reset_requests_s > window_s - 0.5


async def test_a_key_without_limits_is_admitted_with_nothing_to_report(
    backend: Backend,
) -> None:
    limiter = backend.limiter()
    key = make_key()
    for _ in range(5):
        admission = await limiter.admit(key)
        assert admission.allowed and admission.lease is None and admission.refused_by is None
        assert admission.state.limit_requests is None and admission.state.limit_tokens is None


# -- the race --------------------------------------------------------------------------------


async def test_parallel_admissions_never_exceed_the_limits(backend: Backend) -> None:
    """200 parallel admissions against rpm=10, concurrent=3 and tokens per minute with
    charges, through two clients on Redis (two processes' view).

    On the cluster, redis-py's asyncio cluster client (8.1) loses some commands under this
    much concurrency (a connection reset or an AttributeError inside the client, see the
    report of issue 12's limits); the limiter then answers StorageUnavailable, which admits
    nothing (fail closed). Elsewhere no admission may fail; everywhere none may exceed."""
    limiters = backend.limiters(2)
    race = Race(backend.name == "cluster")
    await backend.away_from_window_end(needed_s=10.0)

    # Requests per minute: exactly 10 of 200 (at most 10 where Redis lost some).
    rpm_key = make_key("key_000000000000000a", rpm=10)
    answers = await race.admit_all(limiters, rpm_key, 200)
    admitted = [a for a in answers if a.allowed]
    assert len(admitted) == 10 or (race.lossy and 1 <= len(admitted) <= 10)
    assert {a.refused_by for a in answers if not a.allowed} <= {"requests_per_minute"}
    assert len({a.state.remaining_requests for a in admitted}) == len(admitted)

    # Concurrency: never more than 3 held at once, though each frees its lease quickly.
    conc_key = make_key("key_000000000000000b", concurrent=3)
    holding = peak = taken = 0

    async def hold(limiter: KeyLimiter) -> None:
        nonlocal holding, peak, taken
        admission = await race.admit(limiter, conc_key)
        if admission is None or not admission.allowed:
            assert admission is None or admission.refused_by == "concurrent"
            return
        assert admission.lease is not None
        holding += 1
        taken += 1
        peak = max(peak, holding)
        await asyncio.sleep(0.002)
        holding -= 1
        limiter.release(conc_key, admission.lease)

    for _ in range(3):  # waves, so releases happen between admissions
        await asyncio.gather(*(hold(limiters[i % 2]) for i in range(200)))
    assert 1 <= peak <= 3 and taken >= 1
    assert peak == 3 or race.lossy

    # Tokens: once the window's tokens reach the limit, 200 parallel admissions admit none;
    # and 200 parallel charges are all counted (no lost update) where Redis loses nothing.
    tpm_key = make_key("key_000000000000000c", tpm=300)
    await asyncio.gather(*(limiters[i % 2].charge_tokens(tpm_key, 1) for i in range(200)))
    await asyncio.gather(*(flushed(limiter) for limiter in limiters))
    standing = await race.settled(limiters[0], tpm_key)
    assert standing.state.remaining_tokens is not None
    assert standing.state.remaining_tokens == 100 or race.lossy
    await charge(limiters[1], tpm_key, 300)
    # A lossy client (the cluster's) may lose that charge too, and a lost charge is logged and
    # forgotten by design: charge again until the window is full, so the race below tests
    # admissions, not the client.
    for _ in range(20):
        if not race.lossy or (await race.settled(limiters[0], tpm_key)).state.remaining_tokens == 0:
            break
        await charge(limiters[1], tpm_key, 300)
    answers = await race.admit_all(limiters, tpm_key, 200)
    assert not any(a.allowed for a in answers)
    assert {a.refused_by for a in answers} <= {"tokens_per_minute"}

    # All three on one key: admit-then-charge tasks; 10 requests at most, 3 at once at most,
    # and none admitted once the tokens charged before it was asked reached the limit.
    all_key = make_key("key_000000000000000d", rpm=10, tpm=50, concurrent=3)
    charged = 0
    holding = peak = taken = over_limit = 0

    async def request(limiter: KeyLimiter) -> None:
        nonlocal holding, peak, taken, charged, over_limit
        seen = charged  # what was charged before this admission was asked
        admission = await race.admit(limiter, all_key)
        if admission is None or not admission.allowed:
            refused_by = None if admission is None else admission.refused_by
            assert admission is None or refused_by in {
                "requests_per_minute",
                "tokens_per_minute",
                "concurrent",
            }
            return
        assert admission.lease is not None
        over_limit += seen >= 50
        holding += 1
        taken += 1
        peak = max(peak, holding)
        await charge(limiter, all_key, 20)
        charged += 20
        await asyncio.sleep(0.002)
        holding -= 1
        limiter.release(all_key, admission.lease)

    for _ in range(5):
        await asyncio.gather(*(request(limiters[i % 2]) for i in range(200)))
    assert 1 <= taken <= 10 and peak <= 3 and over_limit == 0
    assert race.unavailable == 0 or race.lossy


async def flushed(limiter: KeyLimiter) -> None:
    """Redis's limiter sends charges in the background: wait until they have landed."""
    flush = getattr(limiter, "flush", None)
    if flush is not None:
        await flush()


async def charge(limiter: KeyLimiter, key: GatewayKey, tokens: int) -> None:
    await limiter.charge_tokens(key, tokens)
    await flushed(limiter)


class Race:
    """Admissions in parallel; `lossy`: StorageUnavailable answers are expected (counted, and
    they admit nothing), else one fails the test."""

    def __init__(self, lossy: bool) -> None:
        self.lossy = lossy
        self.unavailable = 0

    async def admit(self, limiter: KeyLimiter, key: GatewayKey) -> KeyAdmission | None:
        try:
            return await limiter.admit(key)
        except StorageUnavailable:
            if not self.lossy:
                raise
            self.unavailable += 1
            return None

    async def settled(self, limiter: KeyLimiter, key: GatewayKey) -> KeyAdmission:
        """An answer, asking again while Redis loses the question (`lossy` only)."""
        deadline = time.monotonic() + 2.0
        while (answer := await self.admit(limiter, key)) is None:
            assert time.monotonic() < deadline, "Redis lost every question for 2 s"
            await asyncio.sleep(0.01)
        return answer

    async def admit_all(
        self, limiters: list[KeyLimiter], key: GatewayKey, count: int
    ) -> list[KeyAdmission]:
        answers = await asyncio.gather(
            *(self.admit(limiters[i % len(limiters)], key) for i in range(count))
        )
        return [answer for answer in answers if answer is not None]


async def test_parallel_admissions_from_two_processes_on_redis(
    redis_server: RedisServer,
) -> None:
    """Two OS processes, 100 parallel admissions each, against rpm=10 on one Redis."""
    await Backend("redis", redis_server.url).away_from_window_end(needed_s=10.0)
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ADMIT_IN_A_PROCESS,
            redis_server.url,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), 30.0) for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    assert sum(int(out.decode()) for out, _ in outputs) == 10


ADMIT_IN_A_PROCESS = """
import asyncio, sys
from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.adapters.redis.key_limits import RedisKeyLimiter
from xrouter.domain.keys import GatewayKey, KeyLimits

async def main():
    redis = SharedRedis(RedisSettings(url=sys.argv[1], timeout_s=2.0))
    limiter = RedisKeyLimiter(redis, 5.0)
    key = GatewayKey(id="key_00000000000000aa", name="k", hash="", display="", created_at=0,
                     limits=KeyLimits(requests_per_minute=10))
    answers = await asyncio.gather(*(limiter.admit(key) for _ in range(100)))
    print(sum(a.allowed for a in answers))
    await limiter.aclose()
    await redis.aclose()

asyncio.run(main())
"""


# -- Redis: leases and outages ---------------------------------------------------------------


async def test_a_dead_workers_lease_frees_itself_and_a_live_one_is_renewed(
    redis_server: RedisServer,
) -> None:
    backend = Backend("redis", redis_server.url)
    dead, alive = backend.limiters(2, lease_s=0.6)
    key = make_key(concurrent=1)
    try:
        assert (await dead.admit(key)).allowed
        await dead.aclose()  # its heartbeat stops, nothing released: the worker "died"
        assert (await alive.admit(key)).refused_by == "concurrent"
        started = time.monotonic()
        taken = await settle(lambda: alive.admit(key), timeout_s=3.0)
        assert 0.4 <= time.monotonic() - started < 1.5
        # A live holder keeps its lease past lease_s: the heartbeat renews it.
        await asyncio.sleep(1.3)
        assert await lease_count(redis_server.url, key) == 1
        assert (await dead.admit(key)).refused_by == "concurrent"
        assert taken.lease is not None
        alive.release(key, taken.lease)
        await settle(lambda: alive.admit(key))
    finally:
        await backend.aclose()


async def test_redis_down_refuses_limited_keys_and_nothing_else(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    backend = Backend("redis", server.url)
    limiter = backend.limiter()
    limited = make_key(rpm=5, tpm=100, concurrent=2)
    try:
        held = await limiter.admit(limited)
        assert held.allowed and held.lease is not None
        server.kill()
        with pytest.raises(StorageUnavailable) as refused:
            await asyncio.wait_for(limiter.admit(limited), 2.0)
        assert refused.value.status == 503 and "name-of-key_" in refused.value.message
        assert "refused until Redis answers" in refused.value.message
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):  # the breaker: no wait on a dead server
            await limiter.admit(limited)
        assert time.monotonic() - started < 0.1
        # A key without limits never needs Redis; a charge and a release never fail.
        assert (await limiter.admit(make_key("key_00000000000000bb"))).allowed
        await asyncio.wait_for(charge(limiter, limited, 10), 2.0)
        limiter.release(limited, held.lease)
    finally:
        await backend.aclose()


async def test_the_keys_of_one_key_share_a_cluster_slot(redis_cluster: RedisCluster) -> None:
    backend = Backend("cluster", redis_cluster.url, cluster=True)
    limiter = backend.limiter()
    key = make_key(rpm=5, tpm=100, concurrent=2)
    try:
        admission = await limiter.admit(key)
        await charge(limiter, key, 5)
        assert admission.allowed and admission.lease is not None
        assert await lease_count(redis_cluster.url, key, cluster=True) == 1
        limiter.release(key, admission.lease)
        await limiter.aclose()  # waits for the release batch
        assert await lease_count(redis_cluster.url, key, cluster=True) == 0
        node = redis_cluster.nodes[0]
        slots = {node.cli("CLUSTER", "KEYSLOT", name) for name in redis_keys(key)}
        assert len(slots) == 1
    finally:
        await backend.aclose()


# -- wiring ----------------------------------------------------------------------------------


async def test_the_limiter_is_on_redis_when_the_process_has_redis(
    redis_server: RedisServer,
) -> None:
    assert isinstance(build_key_limiter(None, 5.0), MemoryKeyLimiter)
    redis = shared_redis(redis_server.url)
    limiter = build_key_limiter(redis, 5.0)
    try:
        assert isinstance(limiter, RedisKeyLimiter)
        assert (await limiter.admit(make_key(rpm=1))).allowed
    finally:
        await limiter.aclose()
        await redis.aclose()


async def test_memory_keeps_the_current_window_only() -> None:
    clock = FakeClock()
    limiter = MemoryKeyLimiter(clock)
    for index in range(1000):
        await limiter.admit(make_key(f"key_{index:016x}", rpm=5))
    assert "keys=1000" in repr(limiter)
    clock.now += 60
    await limiter.admit(make_key(rpm=5))
    assert "keys=1," in repr(limiter)


async def test_a_charge_rides_with_the_next_admission_or_lands_alone_soon(
    redis_server: RedisServer,
) -> None:
    """Redis: a charge is not sent on its own at once. The same process's next admission of
    the key carries it (its script counts the tokens before it checks: the admission sees
    them); with no admission, it lands by itself within CHARGE_DELAY_S."""
    redis = shared_redis(redis_server.url)
    limiter = RedisKeyLimiter(redis, 5.0)
    key = make_key(tpm=1000)
    window = redis_keys(key)[0]
    try:
        await limiter.admit(key)
        await limiter.charge_tokens(key, 300)
        carried = await limiter.admit(key)  # before any delay can have sent it
        assert carried.state is not None and carried.state.remaining_tokens == 700
        assert redis_server.cli("HGET", window, "t") == "300"

        await limiter.charge_tokens(key, 50)
        deadline = time.monotonic() + 2.0
        while redis_server.cli("HGET", window, "t") != "350":
            assert time.monotonic() < deadline, "the charge never landed by itself"
            await asyncio.sleep(0.01)
    finally:
        await limiter.aclose()
        await redis.aclose()


async def test_a_release_takes_the_pending_charges_along(redis_server: RedisServer) -> None:
    """A request's end: its output tokens and its lease go to Redis in one script call."""
    redis = shared_redis(redis_server.url)
    limiter = RedisKeyLimiter(redis, 5.0)
    key = make_key(tpm=1000, concurrent=2)
    window, leases = redis_keys(key)
    try:
        admission = await limiter.admit(key)
        assert admission.lease is not None
        calls_before = _evalsha_calls(redis_server)
        await limiter.charge_tokens(key, 40)
        limiter.release(key, admission.lease)
        await limiter.flush()
        assert _evalsha_calls(redis_server) - calls_before == 1
        assert redis_server.cli("HGET", window, "t") == "40"
        assert redis_server.cli("ZCARD", leases) == "0"
    finally:
        await limiter.aclose()
        await redis.aclose()


async def test_a_key_with_large_limits_is_admitted_ahead_and_never_over(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """Large limits: the next request's admission is made in the background, so it needs no
    round trip (it is answered with Redis paused); the admission held ahead counts against
    the limits like any other, so parallel requests still never pass them; unused, it gives
    its lease back after PREFETCH_TTL_S."""
    server = redis_factory()
    redis = shared_redis(server.url)
    limiter = RedisKeyLimiter(redis, 5.0)
    key = make_key("key_a11ead0000000001", rpm=PREFETCH_MIN_LIMIT, concurrent=PREFETCH_MIN_LIMIT)
    _, leases = redis_keys(key)
    try:
        first = await limiter.admit(key)
        assert first.allowed and first.lease is not None
        deadline = time.monotonic() + 2.0
        while server.cli("ZCARD", leases) != "2":  # the request's lease and the one ahead
            assert time.monotonic() < deadline, "no admission was made ahead"
            await asyncio.sleep(0.01)
        server.pause()
        try:
            second = await asyncio.wait_for(limiter.admit(key), 0.2)
        finally:
            server.resume()
        assert second.allowed and second.lease not in (None, first.lease)
        limiter.release(key, first.lease)
        limiter.release(key, second.lease or "")

        # A race of many more requests than the limits allow: never more than them.
        admitted: list[KeyAdmission] = []

        async def request() -> None:
            admission = await limiter.admit(key)
            if admission.allowed:
                admitted.append(admission)

        await asyncio.gather(*(request() for _ in range(3 * PREFETCH_MIN_LIMIT)))
        window = redis_keys(key)[0]
        assert len(admitted) <= PREFETCH_MIN_LIMIT - 2  # two requests came before the race
        assert int(server.cli("HGET", window, "r")) <= PREFETCH_MIN_LIMIT
        assert int(server.cli("ZCARD", leases)) <= PREFETCH_MIN_LIMIT
        for admission in admitted:
            limiter.release(key, admission.lease or "")
        await limiter.flush()

        # An admission held ahead and never used gives its lease back.
        deadline = time.monotonic() + PREFETCH_TTL_S + 2.0
        while server.cli("ZCARD", leases) != "0":
            assert time.monotonic() < deadline, "the admission made ahead kept its lease"
            await asyncio.sleep(0.05)
    finally:
        await limiter.aclose()
        await redis.aclose()


async def test_small_limits_are_always_admitted_by_the_script(redis_server: RedisServer) -> None:
    """Below the thresholds nothing is admitted ahead: a request counts only when it comes."""
    redis = shared_redis(redis_server.url)
    limiter = RedisKeyLimiter(redis, 5.0)
    key = make_key("key_5a11000000000001", rpm=PREFETCH_MIN_LIMIT - 1, concurrent=5)
    window, leases = redis_keys(key)
    try:
        await limiter.admit(key)
        await asyncio.sleep(0.2)
        assert redis_server.cli("HGET", window, "r") == "1"
        assert redis_server.cli("ZCARD", leases) == "1"
    finally:
        await limiter.aclose()
        await redis.aclose()


async def test_admissions_asked_together_go_in_one_script_call_in_order(
    redis_server: RedisServer,
) -> None:
    """The requests of one key that ask in the same turn of the event loop are decided by one
    script call, one after the other: exactly the limit is admitted, the rest refused."""
    redis = shared_redis(redis_server.url)
    limiter = RedisKeyLimiter(redis, 5.0)
    key = make_key("key_ba7c400000000001", rpm=50, concurrent=5)
    try:
        await limiter.admit(make_key("key_ba7c400000000002", rpm=50))  # scripts loaded
        calls_before = _evalsha_calls(redis_server)
        admissions = await asyncio.gather(*(limiter.admit(key) for _ in range(20)))
        assert _evalsha_calls(redis_server) - calls_before == 1
        allowed = [admission for admission in admissions if admission.allowed]
        assert len(allowed) == 5
        assert {admission.refused_by for admission in admissions if not admission.allowed} == {
            "concurrent"
        }
        assert len({admission.lease for admission in allowed}) == 5
        assert redis_server.cli("ZCARD", redis_keys(key)[1]) == "5"
        remaining = [admission.state.remaining_requests for admission in allowed]
        assert remaining == [49, 48, 47, 46, 45]
    finally:
        await limiter.aclose()
        await redis.aclose()


def _evalsha_calls(server: RedisServer) -> int:
    for line in server.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


# -- helpers ---------------------------------------------------------------------------------


async def settle(
    admit: Callable[[], Awaitable[KeyAdmission]],
    done: Callable[[KeyAdmission], bool] = lambda a: a.allowed,
    timeout_s: float = 2.0,
) -> KeyAdmission:
    """Admit until `done` (a release on Redis lands in the background, a moment later)."""
    deadline = time.monotonic() + timeout_s
    while True:
        admission = await admit()
        if done(admission):
            return admission
        assert time.monotonic() < deadline, f"still {admission} after {timeout_s} s"
        await asyncio.sleep(0.01)


def redis_keys(key: GatewayKey) -> tuple[str, str]:
    tag = f"{{xrouter:key:{key.id}}}"
    return f"{tag}:window", f"{tag}:leases"


async def lease_count(url: str, key: GatewayKey, *, cluster: bool = False) -> int:
    client: Redis | ClusterClient = ClusterClient.from_url(url) if cluster else Redis.from_url(url)
    try:
        return int(await client.zcard(redis_keys(key)[1]))
    finally:
        await client.aclose()
