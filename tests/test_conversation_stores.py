"""The ConversationStore contract, run against every store: in memory, Redis, and a
three-master Redis Cluster (real redis-server processes, tests/redis_servers.py): order,
paging, one item, ownership, the item limit under concurrent appends, TTL from the last write,
and the memory store's bounds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import pytest

from tests.redis_servers import RedisCluster, RedisServer
from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.adapters.storage.conversation_memory import InMemoryConversationStore
from xrouter.adapters.storage.conversation_redis import RedisConversationStore
from xrouter.application.ports import (
    ConversationFull,
    ConversationStore,
    DuplicateItem,
    UnknownItem,
)
from xrouter.domain.conversations import Conversation
from xrouter.domain.responses import InputItem

Kind = Literal["memory", "redis", "cluster"]
MakeStore = Callable[..., ConversationStore]


def items(prefix: str, count: int, *, size: int = 0) -> list[InputItem]:
    return [
        InputItem(id=f"{prefix}{n}", role="user", content=f"{prefix} {n} " + "x" * size)
        for n in range(count)
    ]


def ids(found: list[InputItem] | None) -> list[str | None]:
    assert found is not None
    return [item.id for item in found]


def conversation(conversation_id: str, **metadata: str) -> Conversation:
    return Conversation(id=conversation_id, created_at=1_700_000_000, metadata=metadata)


@pytest.fixture(params=["memory", "redis", "cluster"])
def kind(request: pytest.FixtureRequest) -> Kind:
    value: Kind = request.param
    return value


@pytest.fixture
async def make_store(kind: Kind, request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """`make(ttl_s=...)`: a store of this test's kind."""
    clients: list[SharedRedis] = []
    url = ""
    if kind == "redis":
        url = request.getfixturevalue("redis_server").url
    elif kind == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        url = cluster.url

    def make(**options: Any) -> ConversationStore:
        if kind == "memory":
            return InMemoryConversationStore(**options)
        redis = SharedRedis(RedisSettings(url, cluster=kind == "cluster", timeout_s=5.0))
        clients.append(redis)
        return RedisConversationStore(redis, **options)

    yield make
    for redis in clients:
        await redis.aclose()


@pytest.fixture
def store(make_store: MakeStore) -> ConversationStore:
    return make_store()


async def test_create_get_update_and_delete(store: ConversationStore) -> None:
    await store.create(conversation("conv_a", topic="x"), items("a", 2), owner=None)

    assert await store.get("conv_a") == conversation("conv_a", topic="x")
    updated = await store.set_metadata("conv_a", {"topic": "y"})
    assert updated == conversation("conv_a", topic="y")
    assert await store.get("conv_a") == updated
    assert ids(await store.all_items("conv_a")) == ["a0", "a1"]
    assert await store.delete("conv_a")
    assert await store.get("conv_a") is None
    assert await store.all_items("conv_a") is None
    assert not await store.delete("conv_a")
    assert await store.set_metadata("conv_a", {}) is None
    for unknown in ("conv_none", "", "conv_{x}", "c" * 300):
        assert await store.get(unknown) is None
        assert not await store.append(unknown, items("b", 1), max_items=10)


async def test_appends_keep_order_and_pages_go_both_ways(store: ConversationStore) -> None:
    await store.create(conversation("conv_p"), items("a", 3), owner=None)
    assert await store.append("conv_p", items("b", 4), max_items=100)
    everything = ["a0", "a1", "a2", "b0", "b1", "b2", "b3"]
    assert ids(await store.all_items("conv_p")) == everything

    first = await store.items("conv_p", after=None, limit=3, order="asc")
    assert first is not None and ids(first.items) == everything[:3] and first.has_more
    rest = await store.items("conv_p", after="a2", limit=10, order="asc")
    assert rest is not None and ids(rest.items) == everything[3:] and not rest.has_more
    newest = await store.items("conv_p", after=None, limit=2, order="desc")
    assert newest is not None and ids(newest.items) == ["b3", "b2"] and newest.has_more
    older = await store.items("conv_p", after="b2", limit=5, order="desc")
    assert older is not None and ids(older.items) == ["b1", "b0", "a2", "a1", "a0"]
    assert not older.has_more
    end = await store.items("conv_p", after="b3", limit=5, order="asc")
    assert end is not None and end.items == [] and not end.has_more
    with pytest.raises(UnknownItem):
        await store.items("conv_p", after="zz", limit=5, order="asc")
    assert await store.items("conv_none", after=None, limit=5, order="asc") is None


async def test_one_item_read_and_deleted(store: ConversationStore) -> None:
    await store.create(conversation("conv_i", k="v"), items("a", 3), owner=None)

    found = await store.get_item("conv_i", "a1")
    assert found is not None and found.content == "a 1 "
    assert await store.delete_item("conv_i", "a1") == conversation("conv_i", k="v")
    assert ids(await store.all_items("conv_i")) == ["a0", "a2"]
    with pytest.raises(UnknownItem):
        await store.get_item("conv_i", "a1")
    with pytest.raises(UnknownItem):
        await store.delete_item("conv_i", "a1")
    assert await store.get_item("conv_none", "a0") is None
    assert await store.delete_item("conv_none", "a0") is None
    # The deleted id may be used again.
    assert await store.append("conv_i", items("a", 2)[1:], max_items=10)
    assert ids(await store.all_items("conv_i")) == ["a0", "a2", "a1"]


async def test_the_item_limit_and_duplicate_ids_refuse_the_whole_append(
    store: ConversationStore,
) -> None:
    await store.create(conversation("conv_l"), items("a", 3), owner=None)

    with pytest.raises(ConversationFull) as full:
        await store.append("conv_l", items("b", 3), max_items=5)
    assert full.value.count == 3
    with pytest.raises(DuplicateItem):
        await store.append("conv_l", [*items("c", 1), *items("a", 1)], max_items=10)
    assert ids(await store.all_items("conv_l")) == ["a0", "a1", "a2"]
    assert await store.append("conv_l", items("b", 2), max_items=5)


# Not on the cluster: redis-py's cluster client loses calls under this much concurrency
# (redis/redis-py#4287, see test_access_across_processes.py); the script is the same.
@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_concurrent_appends_never_pass_the_limit(make_store: MakeStore, kind: Kind) -> None:
    # On Redis, two processes' clients on one backend; in memory, one process.
    first = make_store()
    stores = [first, first if kind == "memory" else make_store()]
    await stores[0].create(conversation("conv_race"), [], owner=None)

    async def append(n: int) -> bool:
        try:
            return await stores[n % 2].append(
                "conv_race", items(f"t{n}-", 2), max_items=20, owner=None
            )
        except ConversationFull:
            return False

    results = await asyncio.gather(*(append(n) for n in range(30)))

    assert sum(results) == 10
    found = await stores[1].all_items("conv_race")
    assert found is not None and len(found) == 20
    # Each append is whole: both items of a turn, next to each other.
    for first, second in zip(found[::2], found[1::2], strict=True):
        assert first.id and second.id and first.id[:-1] == second.id[:-1]


async def test_another_owners_conversation_is_unknown_and_untouched(
    store: ConversationStore,
) -> None:
    await store.create(conversation("conv_o", who="alice"), items("a", 2), owner="key_alice")

    assert await store.get("conv_o", owner="key_bob") is None
    assert await store.set_metadata("conv_o", {"who": "bob"}, owner="key_bob") is None
    assert not await store.append("conv_o", items("b", 1), max_items=10, owner="key_bob")
    assert await store.items("conv_o", after=None, limit=5, order="asc", owner="key_bob") is None
    assert await store.all_items("conv_o", owner="key_bob") is None
    assert await store.get_item("conv_o", "a0", owner="key_bob") is None
    assert await store.delete_item("conv_o", "a0", owner="key_bob") is None
    assert not await store.delete("conv_o", owner="key_bob")
    # "key_a" is a prefix of "key_alice": still someone else.
    assert await store.get("conv_o", owner="key_a") is None

    assert await store.get("conv_o", owner="key_alice") == conversation("conv_o", who="alice")
    assert ids(await store.all_items("conv_o", owner="key_alice")) == ["a0", "a1"]
    updated = await store.set_metadata("conv_o", {"who": "still alice"}, owner="key_alice")
    assert updated is not None
    assert await store.get("conv_o", owner="key_bob") is None  # the owner survives an update
    assert await store.append("conv_o", items("c", 1), max_items=10, owner="key_alice")
    assert await store.delete("conv_o", owner="key_alice")


async def test_a_conversation_expires_a_ttl_after_its_last_write(make_store: MakeStore) -> None:
    store = make_store(ttl_s=0.6)
    await store.create(conversation("conv_t"), items("a", 1), owner=None)
    await asyncio.sleep(0.4)
    assert await store.append("conv_t", items("b", 1), max_items=10)  # a write: 0.6 s more
    await asyncio.sleep(0.4)
    assert ids(await store.all_items("conv_t")) == ["a0", "b0"]
    await asyncio.sleep(0.5)
    assert await store.get("conv_t") is None
    assert await store.all_items("conv_t") is None


async def test_redis_keeps_a_conversation_on_one_slot_with_a_ttl_on_every_key(
    redis_server: RedisServer,
) -> None:
    redis = SharedRedis(RedisSettings(redis_server.url, timeout_s=5.0))
    try:
        store = RedisConversationStore(redis, ttl_s=100)
        await store.create(conversation("conv_k"), items("a", 2), owner=None)
        keys = sorted(redis_server.cli("KEYS", "xr:*").split())
        assert keys == ["xr:{conv_k}:h", "xr:{conv_k}:m", "xr:{conv_k}:o"]
        for key in keys:
            assert 0 < int(redis_server.cli("PTTL", key)) <= 100_000
        await store.delete("conv_k")
        assert redis_server.cli("KEYS", "xr:*") == ""
    finally:
        await redis.aclose()


async def test_the_memory_store_evicts_the_least_recently_used_within_its_bounds() -> None:
    store = InMemoryConversationStore(2, max_bytes=10_000)
    for name in ("conv_1", "conv_2", "conv_3"):
        await store.create(conversation(name), items("a", 1), owner=None)
    assert len(store) == 2 and await store.get("conv_1") is None

    await store.get("conv_2")  # now conv_3 is the least recently used
    await store.append("conv_2", items("big", 1, size=9_800), max_items=10)
    assert await store.get("conv_3") is None
    assert await store.get("conv_2") is not None
    assert store.size_bytes <= 10_000
    await store.delete("conv_2")
    assert store.size_bytes == 0 and len(store) == 0
