"""A provider's in-flight limit shared through Redis (RedisInflight) by every worker and
instance.

Adapter level (real redis-server; two limiters on one Redis stand for two processes): the
limit holds across them, waiters are served in arrival order across them, a cancelled waiter
leaves nothing in Redis, a holder that stops renewing loses its slot after its lease, keys stay
on one cluster slot, and a Redis that is down means this process's own limit (no wait).
Process level: two `xrouter serve` processes on one Redis, one fake upstream that counts the
requests it is answering at once: never more than the limit, queued requests served in
arrival order, a gateway killed with SIGKILL while it holds the slot frees it after
`XR_INFLIGHT_LEASE_S`, and requests keep being served when Redis is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.redis_servers import RedisCluster, RedisServer
from tests.serve_process import Gateway
from tests.transport_harness import FAKE_NAMES
from tests.upstreams import FakeUpstream, Reply, chat_completion
from xrouter.adapters.providers.transport import TransportSettings
from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.adapters.redis.inflight import RedisInflight
from xrouter.domain.errors import Overloaded

CHAT = "/v1/chat/completions"


def transport_settings(max_inflight: int = 1, queue_timeout_s: float = 5.0) -> TransportSettings:
    return TransportSettings(
        base_url="http://unused.invalid",
        max_inflight=max_inflight,
        queue_timeout_s=queue_timeout_s,
        setting_names=FAKE_NAMES,
    )


def shared_limiter(redis: SharedRedis, *, lease_s: float = 5.0, **settings: Any) -> RedisInflight:
    return RedisInflight("fake", transport_settings(**settings), redis, lease_s=lease_s)


def shared_redis(url: str, *, cluster: bool = False) -> SharedRedis:
    return SharedRedis(RedisSettings(url=url, cluster=cluster, timeout_s=0.5, breaker_s=0.5))


async def holders(url: str) -> int:
    client = Redis.from_url(url)
    try:
        return int(await client.zcard("xrouter:inflight:{fake}:holders"))
    finally:
        await client.aclose()


async def queued(url: str) -> int:
    client = Redis.from_url(url)
    try:
        return int(await client.zcard("xrouter:inflight:{fake}:queue"))
    finally:
        await client.aclose()


async def settled(predicate: Callable[[], Any], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.01)


# -- adapter level ---------------------------------------------------------------------------


async def test_the_limit_and_the_order_hold_across_processes(redis_server: RedisServer) -> None:
    redis_a, redis_b = shared_redis(redis_server.url), shared_redis(redis_server.url)
    a, b = shared_limiter(redis_a, max_inflight=2), shared_limiter(redis_b, max_inflight=2)
    try:
        first, second = await a.acquire(), await b.acquire()
        assert await holders(redis_server.url) == 2
        served: list[str] = []

        async def call(limit: RedisInflight, name: str) -> None:
            lease = await limit.acquire()
            served.append(name)
            await asyncio.sleep(0.05)
            limit.release(lease)

        tasks = []
        for name, limit in (("b1", b), ("a1", a), ("b2", b), ("a2", a)):
            tasks.append(asyncio.create_task(call(limit, name)))
            await asyncio.sleep(0.02)  # a definite arrival order
        assert await queued(redis_server.url) == 4 and served == []

        a.release(first)
        b.release(second)
        await asyncio.wait_for(asyncio.gather(*tasks), 5.0)
        # Two slots: the first two waiters may start in either order, then the next two.
        assert set(served[:2]) == {"b1", "a1"} and set(served[2:]) == {"b2", "a2"}
        await settled(lambda: _equals(holders(redis_server.url), 0))
        assert await queued(redis_server.url) == 0
    finally:
        for closing in (a, b, redis_a, redis_b):
            await closing.aclose()


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_a_newcomer_does_not_overtake_a_waiter_of_another_process(
    redis_server: RedisServer,
) -> None:
    redis_a, redis_b = shared_redis(redis_server.url), shared_redis(redis_server.url)
    a, b = shared_limiter(redis_a), shared_limiter(redis_b)
    try:
        held = await a.acquire()
        waiter = asyncio.create_task(b.acquire())
        await settled(lambda: _equals(queued(redis_server.url), 1))
        a.release(held)
        # Released in A; B's waiter has not polled yet. A newcomer in A must queue behind it.
        newcomer = asyncio.create_task(a.acquire())
        lease_b = await asyncio.wait_for(waiter, 2.0)
        assert not newcomer.done()
        b.release(lease_b)
        a.release(await asyncio.wait_for(newcomer, 2.0))
    finally:
        for closing in (a, b, redis_a, redis_b):
            await closing.aclose()


async def test_fail_fast_and_timeout_refusals_name_the_settings(redis_server: RedisServer) -> None:
    redis = shared_redis(redis_server.url)
    holder = shared_limiter(redis)
    fast = shared_limiter(redis, queue_timeout_s=0)
    patient = shared_limiter(redis, queue_timeout_s=0.2)
    try:
        held = await holder.acquire()
        with pytest.raises(Overloaded) as refused:
            await fast.acquire()
        assert "XR_FAKE_QUEUE_TIMEOUT_S is 0" in refused.value.message
        assert "sharing Redis" in refused.value.message
        started = time.monotonic()
        with pytest.raises(Overloaded) as timed_out:
            await patient.acquire()
        assert 0.15 <= time.monotonic() - started < 1.0
        message = timed_out.value.message
        assert "XR_FAKE_MAX_INFLIGHT" in message and "XR_FAKE_QUEUE_TIMEOUT_S" in message
        assert timed_out.value.retry_after == 1.0
        await settled(lambda: _equals(queued(redis_server.url), 0))
        holder.release(held)
    finally:
        for closing in (holder, fast, patient, redis):
            await closing.aclose()


async def test_a_cancelled_waiter_leaves_nothing_behind(redis_server: RedisServer) -> None:
    redis = shared_redis(redis_server.url)
    limit = shared_limiter(redis)
    try:
        held = await limit.acquire()
        waiter = asyncio.create_task(limit.acquire())
        await settled(lambda: _equals(queued(redis_server.url), 1))
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await settled(lambda: _equals(queued(redis_server.url), 0))
        limit.release(held)
        await settled(lambda: _equals(holders(redis_server.url), 0))
        assert limit.inflight == 0
        limit.release(await asyncio.wait_for(limit.acquire(), 1.0))
    finally:
        await limit.aclose()
        await redis.aclose()


async def test_a_slot_granted_to_a_cancelled_call_is_freed(redis_server: RedisServer) -> None:
    """Cancelled while its acquire was on the wire (Redis may have granted it): the slot is
    handed back in the background, not held until its lease runs out."""
    redis = shared_redis(redis_server.url)
    limit = shared_limiter(redis, lease_s=30.0)
    try:
        for _ in range(20):
            call = asyncio.create_task(limit.acquire())
            await asyncio.sleep(0)  # the script is sent, its answer not yet read
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                limit.release(await call)
        await settled(lambda: _equals(holders(redis_server.url), 0))
    finally:
        await limit.aclose()
        await redis.aclose()


async def test_a_holder_that_stops_renewing_loses_its_slot_after_the_lease(
    redis_server: RedisServer,
) -> None:
    redis_a, redis_b = shared_redis(redis_server.url), shared_redis(redis_server.url)
    dead = shared_limiter(redis_a, lease_s=0.6)
    alive = shared_limiter(redis_b, lease_s=0.6)
    try:
        await dead.acquire()
        await dead.aclose()  # its heartbeat stops: the process "died" holding the slot
        started = time.monotonic()
        lease = await asyncio.wait_for(alive.acquire(), 3.0)
        assert 0.4 <= time.monotonic() - started < 1.5
        # A live holder keeps its slot past its lease: the heartbeat renews it.
        await asyncio.sleep(1.2)
        assert await holders(redis_server.url) == 1
        with pytest.raises(Overloaded):
            await shared_limiter(redis_a, lease_s=0.6, queue_timeout_s=0).acquire()
        alive.release(lease)
    finally:
        for closing in (alive, redis_a, redis_b):
            await closing.aclose()


async def test_keys_share_one_cluster_slot(redis_cluster: RedisCluster) -> None:
    redis_a = shared_redis(redis_cluster.url, cluster=True)
    redis_b = shared_redis(redis_cluster.url, cluster=True)
    a, b = shared_limiter(redis_a), shared_limiter(redis_b)
    try:
        held = await a.acquire()
        waiter = asyncio.create_task(b.acquire())
        await asyncio.sleep(0.1)
        assert not waiter.done()
        a.release(held)
        b.release(await asyncio.wait_for(waiter, 2.0))
        assert redis_a.healthy and redis_b.healthy  # no CROSSSLOT, no fallback
    finally:
        for closing in (a, b, redis_a, redis_b):
            await closing.aclose()


async def test_redis_down_means_this_process_own_limit_without_waiting(
    redis_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory()
    redis = shared_redis(server.url)
    limit = shared_limiter(redis, max_inflight=1, queue_timeout_s=0.2)
    try:
        limit.release(await limit.acquire())
        server.kill()
        with caplog.at_level(logging.WARNING, logger="xrouter.inflight"):
            lease = await asyncio.wait_for(limit.acquire(), 1.0)  # one timeout at most
            started = time.monotonic()
            with pytest.raises(Overloaded):  # the local limit still holds
                await limit.acquire()
            assert time.monotonic() - started < 0.6
        assert "limiting calls to fake in this process alone" in caplog.text
        assert "XR_FAKE_MAX_INFLIGHT" in caplog.text
        limit.release(lease)
        assert limit.inflight == 0
        started = time.monotonic()
        limit.release(await limit.acquire())  # breaker open: no wait on the dead server
        assert time.monotonic() - started < 0.1
    finally:
        await limit.aclose()
        await redis.aclose()


# -- process level ---------------------------------------------------------------------------


class CountingUpstream(FakeUpstream):
    """A fake upstream that counts the requests it is answering at once (in its own loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.peak = 0

    async def _write(self, reply: Reply, reader: Any, writer: Any) -> bool:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await super()._write(reply, reader, writer)
        finally:
            self.active -= 1


@pytest.fixture
def counting_upstream() -> Iterator[CountingUpstream]:
    with CountingUpstream() as upstream:
        yield upstream


def gateway_env(redis_url: str, upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "XR_REDIS_URL": redis_url,
        "XR_FAKE_BASE_URL": upstream.base_url,
        "XR_FAKE_ENABLED": "true",
        "XR_FAKE_MAX_RETRIES": "0",
        "XR_FAKE_MAX_INFLIGHT": "1",
        "XR_FAKE_QUEUE_TIMEOUT_S": "20",
        "XR_INFLIGHT_LEASE_S": "1",
        **extra,
    }


class Calls:
    """Requests sent from threads; each result kept under its input text."""

    def __init__(self) -> None:
        self.results: dict[str, httpx.Response | Exception] = {}
        self.finished_at: dict[str, float] = {}
        self.threads: list[threading.Thread] = []

    def send(self, gateway: Gateway, text: str) -> None:
        def run() -> None:
            try:
                with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
                    self.results[text] = client.post(
                        "/v1/responses", json={"model": "fake/gpt-test", "input": text}
                    )
            except httpx.HTTPError as exc:
                self.results[text] = exc
            self.finished_at[text] = time.monotonic()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(40)

    def status(self, text: str) -> int | str:
        result = self.results.get(text)
        return result.status_code if isinstance(result, httpx.Response) else repr(result)


def arrived(upstream: FakeUpstream) -> list[str]:
    return [r.json["messages"][-1]["content"] for r in upstream.requests(CHAT)]


def test_two_gateways_share_the_limit_and_serve_the_queue_in_order(
    start_gateway: Callable[..., Gateway],
    redis_server: RedisServer,
    counting_upstream: CountingUpstream,
) -> None:
    counting_upstream.script(
        CHAT, [Reply.json(chat_completion(f"r{n}"), delay_s=0.25) for n in range(6)]
    )
    env = gateway_env(redis_server.url, counting_upstream)
    gateways = [start_gateway(**env), start_gateway(**env)]
    calls = Calls()
    for n in range(6):
        calls.send(gateways[n % 2], f"q{n}")
        time.sleep(0.1)  # a definite arrival order, alternating between the gateways
    calls.join()
    assert [calls.status(f"q{n}") for n in range(6)] == [200] * 6
    assert counting_upstream.peak == 1  # never two at once, whichever gateway sent them
    assert arrived(counting_upstream) == [f"q{n}" for n in range(6)]


def test_a_limit_of_two_is_used_fully_and_never_exceeded(
    start_gateway: Callable[..., Gateway],
    redis_server: RedisServer,
    counting_upstream: CountingUpstream,
) -> None:
    counting_upstream.script(
        CHAT, [Reply.json(chat_completion(f"r{n}"), delay_s=0.2) for n in range(8)]
    )
    env = gateway_env(redis_server.url, counting_upstream, XR_FAKE_MAX_INFLIGHT="2")
    gateways = [start_gateway(**env), start_gateway(**env)]
    calls = Calls()
    for n in range(8):
        calls.send(gateways[n % 2], f"q{n}")
    calls.join()
    assert [calls.status(f"q{n}") for n in range(8)] == [200] * 8
    assert counting_upstream.peak == 2


def test_a_killed_gateway_frees_its_slot_after_the_lease(
    start_gateway: Callable[..., Gateway],
    redis_server: RedisServer,
    counting_upstream: CountingUpstream,
) -> None:
    counting_upstream.script(CHAT, Reply.stall())  # the first call holds its slot forever
    env = gateway_env(redis_server.url, counting_upstream)
    doomed, survivor = start_gateway(**env), start_gateway(**env)
    calls = Calls()
    calls.send(doomed, "held")
    assert counting_upstream.wait_until(lambda up: up.hits(CHAT) == 1, timeout=10)
    calls.send(survivor, "queued")
    time.sleep(1.5)  # longer than the lease: the live holder keeps renewing it
    assert "queued" not in calls.results and counting_upstream.hits(CHAT) == 1

    doomed.process.kill()  # SIGKILL: no release, no goodbye
    killed_at = time.monotonic()
    calls.join()
    assert calls.status("queued") == 200
    freed_after = calls.finished_at["queued"] - killed_at
    assert freed_after < 3.0, f"the slot came free {freed_after:.2f} s after the kill"
    assert arrived(counting_upstream) == ["held", "queued"]


def test_requests_are_served_while_redis_is_down(
    start_gateway: Callable[..., Gateway],
    redis_factory: Callable[..., RedisServer],
    counting_upstream: CountingUpstream,
) -> None:
    server = redis_factory()
    gateway = start_gateway(**gateway_env(server.url, counting_upstream))
    body = {"model": "fake/gpt-test", "input": "hello"}
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        assert client.post("/v1/responses", json=body).status_code == 200
        server.kill()
        statuses = []
        started = time.monotonic()
        for _ in range(5):
            statuses.append(client.post("/v1/responses", json=body).status_code)
        elapsed = time.monotonic() - started
        assert statuses == [200] * 5
        assert elapsed < 3.0  # at most one Redis timeout, then the breaker skips it
        server.start()  # Redis is back: shared again, no restart of the gateway
        time.sleep(2.5)  # past the breaker's window
        assert client.post("/v1/responses", json=body).status_code == 200
    deadline = time.monotonic() + 5
    while "in this process alone" not in gateway.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "limiting calls to fake in this process alone" in gateway.log()
