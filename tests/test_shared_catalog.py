"""Model discovery shared across workers and instances through a DiscoveryCache (Redis).

Unit level (a fake cache shared by several registries, as by several workers): a fresh cached
list is used without asking the upstream, one refresher at a time, a failed discovery keeps the
last list and writes nothing, a cache that is down means local discovery with one log line.
Adapter level (a real redis-server): freshness from the key's own PTTL, the lock released only
by its owner, keys on one cluster slot. Process level: two `xrouter serve` processes on one
Redis call the upstream's /models once per TTL between them, and each still discovers when
Redis is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.redis_servers import RedisCluster, RedisServer
from tests.test_registry import DiscoveringProvider
from tests.upstreams import FakeUpstream
from xrouter.adapters.redis.catalog_cache import RedisCatalogCache, build_catalog_cache
from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.application.ports import CachedModels, CacheUnavailable
from xrouter.application.registry import LocalDiscovery, ModelRegistry
from xrouter.domain.models import ModelInfo

# -- a fake shared cache ----------------------------------------------------------------------


@dataclass
class SharedState:
    """What Redis would hold: lists with their freshness, locks with owner and expiry."""

    lists: dict[str, tuple[list[ModelInfo], float]] = field(default_factory=dict)
    locks: dict[str, tuple[str, float]] = field(default_factory=dict)
    writes: int = 0
    down: bool = False

    def put(self, provider: str, ids: list[str], fresh_s: float) -> None:
        models = [ModelInfo(id=f"{provider}/{m}", owned_by="cache") for m in ids]
        self.lists[provider] = (models, time.monotonic() + fresh_s)

    def hold_lock(self, provider: str, ttl_s: float = 60.0) -> None:
        self.locks[provider] = ("another worker", time.monotonic() + ttl_s)


class FakeCache:
    """One worker's view of the SharedState (its own lock tokens)."""

    def __init__(self, state: SharedState, owner: str) -> None:
        self.state = state
        self.owner = owner

    @property
    def shared(self) -> bool:
        return True

    def _check(self) -> None:
        if self.state.down:
            raise CacheUnavailable("the fake cache is down")

    async def read(self, provider: str) -> CachedModels | None:
        self._check()
        found = self.state.lists.get(provider)
        if found is None:
            return None
        return CachedModels(models=found[0], fresh_for_s=found[1] - time.monotonic())

    async def write(self, provider: str, models: list[ModelInfo], fresh_s: float) -> None:
        self._check()
        self.state.writes += 1
        self.state.lists[provider] = (models, time.monotonic() + fresh_s)

    async def try_lock(self, provider: str, ttl_s: float) -> bool:
        self._check()
        held = self.state.locks.get(provider)
        if held is not None and held[1] > time.monotonic():
            return False
        self.state.locks[provider] = (self.owner, time.monotonic() + ttl_s)
        return True

    async def release(self, provider: str) -> None:
        self._check()
        held = self.state.locks.get(provider)
        if held is not None and held[0] == self.owner:
            del self.state.locks[provider]


def _ids(models: list[ModelInfo]) -> list[str]:
    return [m.id for m in models]


async def test_a_fresh_cached_list_is_used_without_asking_the_upstream() -> None:
    state = SharedState()
    state.put("up", ["cached"], fresh_s=30)
    up = DiscoveringProvider("up", ["found"])
    registry = ModelRegistry([up], cache=FakeCache(state, "a"))
    await registry.refresh(ttl_s=30)
    assert up.discoveries == 0
    assert _ids(await registry.list_models()) == ["up/model", "up/cached"]


async def test_one_worker_discovers_and_the_others_read_what_it_wrote() -> None:
    state = SharedState()
    up = DiscoveringProvider("up", ["a", "b"], delay_s=0.2)  # one upstream, counted
    workers = [ModelRegistry([up], cache=FakeCache(state, f"w{i}")) for i in range(4)]
    await asyncio.gather(*(worker.refresh(ttl_s=30) for worker in workers))
    assert up.discoveries == 1
    assert state.writes == 1
    assert not state.locks  # released by its holder
    for worker in workers:
        assert _ids(await worker.list_models()) == ["up/model", "up/a", "up/b"]


async def test_while_another_worker_holds_the_lock_the_last_list_stays_until_it_writes() -> None:
    state = SharedState()
    state.put("up", ["old"], fresh_s=-1)  # stale: a refresh is due
    state.hold_lock("up")
    up = DiscoveringProvider("up", ["mine"])
    registry = ModelRegistry([up], cache=FakeCache(state, "b"))
    refreshing = asyncio.create_task(registry.refresh(ttl_s=30))
    await asyncio.sleep(0.3)
    assert not refreshing.done()  # waiting for the holder, not discovering
    assert _ids(await registry.list_models()) == ["up/model", "up/old"]
    state.put("up", ["new"], fresh_s=30)  # the holder wrote
    await asyncio.wait_for(refreshing, 2)
    assert up.discoveries == 0
    assert _ids(await registry.list_models()) == ["up/model", "up/new"]


async def test_a_failed_discovery_keeps_the_last_list_and_leaves_the_cache_alone() -> None:
    state = SharedState()
    up = DiscoveringProvider("up", ["a"])
    registry = ModelRegistry([up], cache=FakeCache(state, "a"))
    await registry.refresh(ttl_s=0.05)
    assert state.writes == 1
    await asyncio.sleep(0.1)  # stale now
    up.fail = True
    await registry.refresh(ttl_s=0.05)
    assert up.discoveries == 2
    assert state.writes == 1  # nothing written over the last good list
    assert _ids(state.lists["up"][0]) == ["up/a"]
    assert not state.locks  # released after the failure too
    assert _ids(await registry.list_models()) == ["up/model", "up/a"]


async def test_the_holder_gives_up_when_its_lock_would_expire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Past the lock's time another worker could take the lock and call the upstream too.
    state = SharedState()
    up = DiscoveringProvider("up", ["a"], delay_s=5)
    registry = ModelRegistry([up], cache=FakeCache(state, "a"), setting_names=str.upper)
    started = time.monotonic()
    await registry.refresh(ttl_s=0.5)  # the lock lives 1 s (its floor)
    assert 0.9 < time.monotonic() - started < 2
    assert state.writes == 0 and not state.locks
    assert "no answer within 1.0 s, the refresh lock's time (DISCOVERY_TTL_S" in caplog.text


async def test_a_worker_refreshes_when_the_shared_list_goes_stale_not_a_full_ttl_later() -> None:
    state = SharedState()
    state.put("up", ["cached"], fresh_s=0.2)
    up = DiscoveringProvider("up", ["found"])
    registry = ModelRegistry([up], cache=FakeCache(state, "a"))
    await registry.start_discovery(ttl_s=30, startup_timeout_s=1)
    assert up.discoveries == 0
    await asyncio.sleep(0.5)
    await registry.aclose()
    assert up.discoveries == 1
    assert _ids(await registry.list_models()) == ["up/model", "up/found"]


async def test_startup_stays_bounded_while_another_worker_holds_the_lock() -> None:
    state = SharedState()
    state.hold_lock("up")
    up = DiscoveringProvider("up", ["a"])
    registry = ModelRegistry([up], cache=FakeCache(state, "b"))
    started = time.monotonic()
    await registry.start_discovery(ttl_s=30, startup_timeout_s=0.2)
    assert time.monotonic() - started < 1
    assert up.discoveries == 0
    await registry.aclose()


async def test_a_cache_that_is_down_means_local_discovery_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="xrouter.registry")
    state = SharedState(down=True)
    up = DiscoveringProvider("up", ["a"])
    registry = ModelRegistry([up], cache=FakeCache(state, "a"))
    await registry.start_discovery(ttl_s=0.03, startup_timeout_s=1)
    await asyncio.sleep(0.2)
    assert up.discoveries >= 4  # every tick, as a single process does
    assert _ids(await registry.list_models()) == ["up/model", "up/a"]
    assert caplog.text.count("shared model catalog is unavailable") == 1
    state.down = False
    await asyncio.sleep(0.2)
    await registry.aclose()
    assert caplog.text.count("shared model catalog answers again") == 1
    assert state.writes >= 1  # sharing resumed without a restart


async def test_without_a_cache_every_refresh_discovers_as_before() -> None:
    up = DiscoveringProvider("up", ["a"])
    registry = ModelRegistry([up], cache=LocalDiscovery())
    await registry.refresh()
    await registry.refresh()
    assert up.discoveries == 2


# -- the Redis adapter ------------------------------------------------------------------------


@pytest.fixture
async def shared_redis(redis_server: RedisServer) -> Any:
    redis = SharedRedis(RedisSettings(url=redis_server.url, timeout_s=1.0))
    yield redis
    await redis.aclose()


MODELS = [ModelInfo(id="up/a", owned_by="up", created=1), ModelInfo(id="up/b", owned_by="up")]


async def test_redis_keeps_the_list_with_its_freshness_from_the_key_ttl(
    shared_redis: SharedRedis, redis_server: RedisServer
) -> None:
    cache = build_catalog_cache(shared_redis)
    assert isinstance(cache, RedisCatalogCache) and cache.shared
    assert await cache.read("up") is None
    await cache.write("up", MODELS, fresh_s=5)
    cached = await cache.read("up")
    assert cached is not None
    assert cached.models == MODELS
    assert 4.5 < cached.fresh_for_s <= 5
    # Kept a margin past its freshness (at least a minute), so readers never see a gap.
    assert int(redis_server.cli("PTTL", "xrouter:catalog:{up}:models")) > 60_000
    redis_server.cli("PEXPIRE", "xrouter:catalog:{up}:models", "1000")
    stale = await cache.read("up")
    assert stale is not None and stale.fresh_for_s <= 0 and stale.models == MODELS


async def test_redis_ignores_a_list_it_cannot_decode(
    shared_redis: SharedRedis, redis_server: RedisServer
) -> None:
    redis_server.cli("SET", "xrouter:catalog:{up}:models", "not msgpack", "PX", "60000")
    assert await RedisCatalogCache(shared_redis).read("up") is None


async def test_redis_lock_has_one_holder_and_is_released_only_by_it(
    shared_redis: SharedRedis, redis_server: RedisServer
) -> None:
    worker_a, worker_b = RedisCatalogCache(shared_redis), RedisCatalogCache(shared_redis)
    assert await worker_a.try_lock("up", 10)
    assert not await worker_b.try_lock("up", 10)
    assert await worker_b.try_lock("other", 10)  # one lock per provider
    await worker_a.release("up")
    assert await worker_b.try_lock("up", 0.1)
    await asyncio.sleep(0.2)  # b's lock expired (b died, say): a takes it
    assert await worker_a.try_lock("up", 10)
    await worker_b.release("up")  # late: must not release a's lock
    assert redis_server.cli("EXISTS", "xrouter:catalog:{up}:lock") == "1"
    assert not await worker_b.try_lock("up", 10)


async def test_redis_down_raises_cache_unavailable(redis_factory: Any) -> None:
    server = redis_factory()
    redis = SharedRedis(RedisSettings(url=server.url, timeout_s=0.3, breaker_s=0.2))
    cache = RedisCatalogCache(redis)
    server.kill()
    try:
        for call in (cache.read("up"), cache.write("up", MODELS, 5), cache.try_lock("up", 5)):
            with pytest.raises(CacheUnavailable) as caught:
                await call
            assert "redis://127.0.0.1" in str(caught.value)
    finally:
        await redis.aclose()


async def test_redis_cluster_keeps_each_provider_on_one_slot(redis_cluster: RedisCluster) -> None:
    redis = SharedRedis(RedisSettings(url=redis_cluster.url, cluster=True, timeout_s=2.0))
    cache = RedisCatalogCache(redis)
    try:
        for provider in ("openai", "openrouter", "gigachat", "ollama"):
            await cache.write(provider, MODELS, fresh_s=5)
            cached = await cache.read(provider)
            assert cached is not None and cached.models == MODELS
            assert await cache.try_lock(provider, 5)
            await cache.release(provider)
            assert await cache.try_lock(provider, 5)
    finally:
        await redis.aclose()


# -- two gateway processes on one Redis -------------------------------------------------------

TTL_S = 1.0


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(models=("m-one", "m-two")) as server:
        yield server


def _gateway_env(redis_url: str, upstream: FakeUpstream, key: str) -> dict[str, str]:
    return {
        "XR_REDIS_URL": redis_url,
        "XR_STORAGE": "redis",
        "XR_DISCOVERY": "true",
        "XR_DISCOVERY_TTL_S": str(TTL_S),
        "XR_FAKE_BASE_URL": upstream.base_url,
        "XR_FAKE_API_KEY": key,
    }


def _listed(gateway: Any) -> set[str]:
    answer = httpx.get(f"{gateway.base_url}/v1/models", timeout=5)
    assert answer.status_code == 200
    return {model["id"] for model in answer.json()["data"]}


def _discoveries_by(upstream: FakeUpstream, key: str) -> int:
    return sum(
        1
        for request in upstream.requests("/v1/models")
        if request.headers.get("authorization") == f"Bearer {key}"
    )


def test_two_processes_call_models_once_per_ttl_between_them(
    start_gateway: Any, redis_server: RedisServer, upstream: FakeUpstream
) -> None:
    first = start_gateway(**_gateway_env(redis_server.url, upstream, "sk-a"))
    second = start_gateway(**_gateway_env(redis_server.url, upstream, "sk-b"))
    for gateway in (first, second):
        assert {"fake/m-one", "fake/m-two"} <= _listed(gateway), gateway.log()
    before = upstream.hits("/v1/models")
    window_s = 4.0
    time.sleep(window_s)
    during = upstream.hits("/v1/models") - before
    # One process alone refreshes window/TTL times; two without sharing would double it.
    assert 2 <= during <= window_s / TTL_S + 1, (during, first.log(), second.log())
    for gateway in (first, second):
        assert {"fake/m-one", "fake/m-two"} <= _listed(gateway)


def test_with_redis_gone_each_process_discovers_by_itself(
    start_gateway: Any, redis_factory: Any, upstream: FakeUpstream
) -> None:
    server = redis_factory()
    env = {"XR_REDIS_TIMEOUT_S": "0.3", "XR_REDIS_BREAKER_S": "0.5"}
    first = start_gateway(**_gateway_env(server.url, upstream, "sk-a"), **env)
    second = start_gateway(**_gateway_env(server.url, upstream, "sk-b"), **env)
    server.kill()
    counts = {key: _discoveries_by(upstream, key) for key in ("sk-a", "sk-b")}
    time.sleep(3.5)
    for key, gateway in (("sk-a", first), ("sk-b", second)):
        assert _discoveries_by(upstream, key) - counts[key] >= 2, gateway.log()
        assert {"fake/m-one", "fake/m-two"} <= _listed(gateway)
        assert gateway.log().count("shared model catalog is unavailable") == 1, gateway.log()
