"""The ResponseStore contract, run against every store: in memory, Redis, and a three-master
Redis Cluster (real redis-server processes, tests/redis_servers.py).

Then what only one store has: the memory store's byte cap (least recently used evicted), the
Redis store's tombstone, keys spread over the cluster's slots, and Redis outages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Literal

import pytest

from tests.helpers import LogLines, captured_log
from tests.redis_servers import RedisCluster, RedisServer
from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.adapters.storage.codec import StoredCodec
from xrouter.adapters.storage.memory import InMemoryResponseStore
from xrouter.adapters.storage.redis_store import RedisResponseStore
from xrouter.application.ports import ResponseStore, UnknownItem
from xrouter.domain.errors import StorageUnavailable
from xrouter.domain.responses import InputItem, Response, StoredResponse

Kind = Literal["memory", "redis", "cluster"]
MakeStore = Callable[..., ResponseStore]


def env_style(name: str) -> str:
    return f"XR_{name.upper()}"


def stored(response_id: str, count: int, *, text: str = "item", size: int = 0) -> StoredResponse:
    """A completed response with `count` input items `<id>_0`..; `size` pads each item."""
    items = [
        InputItem(id=f"{response_id}_{n}", role="user", content=f"{text} {n} " + "x" * size)
        for n in range(count)
    ]
    response = Response(id=response_id, created_at=1, status="completed", model="local/echo")
    return StoredResponse(response=response, input_items=items)


def texts(items: list[InputItem]) -> list[str | None]:
    return [item.id for item in items]


@pytest.fixture(params=["memory", "redis", "cluster"])
def kind(request: pytest.FixtureRequest) -> Kind:
    value: Kind = request.param
    return value


@pytest.fixture
def redis_nodes(kind: Kind, request: pytest.FixtureRequest) -> list[RedisServer]:
    """The servers behind the store (empty for the memory store)."""
    if kind == "redis":
        return [request.getfixturevalue("redis_server")]
    if kind == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.nodes
    return []


@pytest.fixture
async def make_store(kind: Kind, redis_nodes: list[RedisServer]) -> AsyncIterator[MakeStore]:
    """`make(ttl_s=..., max_record_bytes=...)`: a store of this test's kind."""
    clients: list[SharedRedis] = []

    def make(**options: Any) -> ResponseStore:
        options.setdefault("setting_names", env_style)
        if kind == "memory":
            return InMemoryResponseStore(**options)
        redis = SharedRedis(
            RedisSettings(redis_nodes[0].url, cluster=kind == "cluster", timeout_s=5.0)
        )
        clients.append(redis)
        return RedisResponseStore(redis, **options)

    yield make
    for redis in clients:
        await redis.aclose()


@pytest.fixture
def store(make_store: MakeStore) -> ResponseStore:
    return make_store()


@pytest.fixture
def storage_log() -> Iterator[LogLines]:
    """What `xrouter.storage` logs."""
    with captured_log("xrouter.storage") as lines:
        yield lines


# --- the contract, for every store --------------------------------------------------------


async def test_save_get_get_response_and_delete(store: ResponseStore) -> None:
    record = stored("resp_a", 3)
    assert await store.save(record) is True
    got = await store.get("resp_a")
    assert got is not None
    assert got.response == record.response
    assert got.input_items == record.input_items
    assert await store.get_response("resp_a") == record.response
    assert await store.get("resp_unknown") is None
    assert await store.get_response("resp_unknown") is None
    assert await store.input_items("resp_unknown", after=None, limit=5, order="asc") is None

    assert await store.delete("resp_a") is True
    assert await store.get("resp_a") is None
    assert await store.get_response("resp_a") is None
    assert await store.input_items("resp_a", after=None, limit=5, order="asc") is None
    assert await store.delete("resp_a") is False


async def test_a_response_without_input_items(store: ResponseStore) -> None:
    assert await store.save(stored("resp_empty", 0))
    got = await store.get("resp_empty")
    assert got is not None and got.input_items == []
    page = await store.input_items("resp_empty", after=None, limit=5, order="desc")
    assert page is not None and page.items == [] and page.has_more is False


def expected_page(
    ids: list[str], after: str | None, limit: int, order: str
) -> tuple[list[str], bool]:
    """The reference semantics of input_items, on plain lists."""
    ordered = ids if order == "asc" else ids[::-1]
    rest = ordered if after is None else ordered[ordered.index(after) + 1 :]
    return rest[:limit], len(rest) > limit


async def test_input_items_pages_in_both_orders(store: ResponseStore) -> None:
    record = stored("resp_p", 7)
    ids = [item.id or "" for item in record.input_items]
    await store.save(record)
    checked = 0
    for order in ("asc", "desc"):
        for after in [None, *ids]:
            for limit in range(1, 9):
                page = await store.input_items("resp_p", after=after, limit=limit, order=order)
                assert page is not None
                want = expected_page(ids, after, limit, order)
                assert (texts(page.items), page.has_more) == want, (order, after, limit)
                checked += 1
    assert checked == 2 * 8 * 8
    # Spot checks, in case the reference above were wrong in the same way.
    page = await store.input_items("resp_p", after="resp_p_2", limit=3, order="asc")
    assert page is not None
    assert texts(page.items) == ["resp_p_3", "resp_p_4", "resp_p_5"] and page.has_more
    page = await store.input_items("resp_p", after=None, limit=2, order="desc")
    assert page is not None and texts(page.items) == ["resp_p_6", "resp_p_5"] and page.has_more
    page = await store.input_items("resp_p", after="resp_p_0", limit=2, order="desc")
    assert page is not None and page.items == [] and not page.has_more


async def test_any_item_id_pages_and_a_repeated_id_means_its_first_item(
    store: ResponseStore,
) -> None:
    record = stored("resp_w", 5)
    for item, item_id in zip(record.input_items, ["a b", "ü,ß 1", None, "a b", "{x}"], strict=True):
        item.id = item_id
    await store.save(record)
    page = await store.input_items("resp_w", after="a b", limit=2, order="asc")
    assert page is not None and texts(page.items) == ["ü,ß 1", None] and page.has_more
    page = await store.input_items("resp_w", after="{x}", limit=9, order="desc")
    assert page is not None and texts(page.items) == ["a b", None, "ü,ß 1", "a b"]
    page = await store.input_items("resp_w", after="ü,ß 1", limit=9, order="desc")
    assert page is not None and texts(page.items) == ["a b"] and not page.has_more


async def test_unknown_after_is_an_unknown_item(store: ResponseStore) -> None:
    await store.save(stored("resp_u", 3))
    for order in ("asc", "desc"):
        with pytest.raises(UnknownItem):
            await store.input_items("resp_u", after="nope", limit=5, order=order)  # type: ignore[arg-type]
    # An unknown response is None even with `after` (404, not 400).
    assert await store.input_items("resp_none", after="nope", limit=5, order="asc") is None


async def test_save_again_replaces_the_record(store: ResponseStore) -> None:
    await store.save(stored("resp_r", 5, text="old"))
    replacement = stored("resp_r", 2, text="new")
    assert await store.save(replacement)
    got = await store.get("resp_r")
    assert got is not None and got.input_items == replacement.input_items
    page = await store.input_items("resp_r", after=None, limit=10, order="asc")
    assert page is not None and texts(page.items) == ["resp_r_0", "resp_r_1"]
    # The old items' ids are gone from the index too.
    with pytest.raises(UnknownItem):
        await store.input_items("resp_r", after="resp_r_4", limit=10, order="asc")


async def test_records_expire_after_the_ttl(
    make_store: MakeStore, redis_nodes: list[RedisServer]
) -> None:
    store = make_store(ttl_s=0.3)
    await store.save(stored("resp_t", 3))
    assert await store.get("resp_t") is not None
    if redis_nodes:  # every key of the record carries the TTL
        keys = [k for node in redis_nodes for k in node.cli("KEYS", "*").split() if k]
        assert sorted(key.rsplit(":", 1)[1] for key in keys) == ["i", "r", "x"]
        for key in keys:
            ttl_ms = int(_node_of(redis_nodes, key).cli("PTTL", key))
            assert 0 < ttl_ms <= 300, key
    await asyncio.sleep(0.45)
    assert await store.get("resp_t") is None
    assert await store.get_response("resp_t") is None
    assert await store.input_items("resp_t", after=None, limit=5, order="asc") is None
    if redis_nodes:
        assert sum(int(node.cli("DBSIZE")) for node in redis_nodes) == 0


async def test_a_record_over_the_size_cap_is_not_stored_and_the_setting_is_named(
    make_store: MakeStore, storage_log: LogLines
) -> None:
    store = make_store(max_record_bytes=2_000)
    assert await store.save(stored("resp_big", 2, size=10)) is True
    # The same response again, now too large: not stored, and the older copy is not served.
    assert await store.save(stored("resp_big", 2, size=1_500)) is False
    assert await store.get("resp_big") is None
    assert await store.get_response("resp_big") is None
    assert store.not_stored == 1  # type: ignore[attr-defined]
    warnings = [line for line in storage_log.lines if line.startswith("WARNING")]
    assert len(warnings) == 1
    assert "resp_big" in warnings[0] and "XR_STORE_MAX_RECORD_BYTES" in warnings[0]


async def test_a_long_list_is_paged_without_decoding_every_item(
    store: ResponseStore, redis_nodes: list[RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """9,000 items (past Lua's unpack() stack limit of about 8,000, so the save script's
    chunking is exercised). A page decodes only its items (a spy on the codec, every store);
    for Redis, the bytes Redis sent while serving the page (INFO total_net_output_bytes) are
    a small fraction of the list: the list was not shipped to the client. What Redis reads
    inside the script is not observed, only that it returns the page."""
    count, pad = 9_000, 100
    record = stored("resp_long", count, size=pad)
    assert await store.save(record)
    decoded = 0
    real_decode = StoredCodec.decode_item

    def counting(self: StoredCodec, data: bytes) -> InputItem:
        nonlocal decoded
        decoded += 1
        return real_decode(self, data)

    monkeypatch.setattr(StoredCodec, "decode_item", counting)
    sent_before = _net_output_bytes(redis_nodes)
    page = await store.input_items("resp_long", after="resp_long_4000", limit=20, order="desc")
    sent = _net_output_bytes(redis_nodes) - sent_before
    assert page is not None and page.has_more
    assert texts(page.items) == [f"resp_long_{n}" for n in range(3999, 3979, -1)]
    assert decoded == 20
    if redis_nodes:
        list_bytes = count * pad
        # The page (about 20 x 130 bytes) plus the INFO replies of the measurement itself.
        assert sent < 20_000 < list_bytes // 40, sent
    # And the whole record still comes back intact, in order.
    monkeypatch.undo()
    got = await store.get("resp_long")
    assert got is not None and got.input_items == record.input_items


# --- the memory store ---------------------------------------------------------------------


async def test_memory_byte_cap_evicts_the_least_recently_used() -> None:
    one = len(StoredCodec().encode_response(stored("resp_1", 0).response))
    item = len(StoredCodec().encode_item(stored("resp_1", 1, size=500).input_items[0]))
    store = InMemoryResponseStore(max_bytes=3 * (one + item) + 10, max_record_bytes=10_000)
    for name in ("resp_1", "resp_2", "resp_3"):
        assert await store.save(stored(name, 1, size=500))
    assert len(store) == 3
    assert await store.get("resp_1") is not None  # now the most recently used
    assert await store.save(stored("resp_4", 1, size=500))
    assert await store.get("resp_2") is None  # the least recently used went
    assert [await store.get(name) is not None for name in ("resp_1", "resp_3", "resp_4")] == [
        True,
        True,
        True,
    ]
    assert store.size_bytes <= 3 * (one + item) + 10
    # get_response and input_items refresh recency as well.
    await store.get_response("resp_3")
    await store.input_items("resp_4", after=None, limit=1, order="asc")
    assert await store.save(stored("resp_5", 1, size=500))
    assert await store.get("resp_1") is None


# --- the Redis store ----------------------------------------------------------------------


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[RedisResponseStore]:
    redis = SharedRedis(RedisSettings(redis_server.url, timeout_s=5.0))
    yield RedisResponseStore(redis, tombstone_s=0.5, setting_names=env_style)
    await redis.aclose()


async def test_a_save_after_a_delete_does_not_bring_the_response_back(
    redis_store: RedisResponseStore, redis_server: RedisServer
) -> None:
    """A generation that ends on one worker after the response was deleted on another
    (the delete found nothing yet, or the stored copy) must not store it."""
    assert await redis_store.delete("resp_racing") is False
    assert await redis_store.save(stored("resp_racing", 2)) is False
    assert await redis_store.get("resp_racing") is None
    assert redis_server.cli("KEYS", "*:r") == ""
    # The tombstone expires (tombstone_s): ids are never reused, it only has to outlive
    # the generation it races with.
    await asyncio.sleep(0.6)
    assert await redis_store.save(stored("resp_racing", 2)) is True


async def test_ids_that_cannot_name_a_key_are_unknown(redis_store: RedisResponseStore) -> None:
    for bad in ("", "}x", "a{b}c", "x" * 300):
        assert await redis_store.get(bad) is None
        assert await redis_store.get_response(bad) is None
        assert await redis_store.input_items(bad, after=None, limit=1, order="asc") is None
        assert await redis_store.delete(bad) is False


async def test_cluster_spreads_responses_over_every_node(redis_cluster: RedisCluster) -> None:
    redis = SharedRedis(RedisSettings(redis_cluster.url, cluster=True, timeout_s=5.0))
    store = RedisResponseStore(redis)
    try:
        for n in range(60):
            assert await store.save(stored(f"resp_{n:02d}", 3))
        per_node = [int(node.cli("DBSIZE")) for node in redis_cluster.nodes]
        assert all(keys > 0 for keys in per_node), per_node
        assert sum(per_node) == 60 * 3
        # Each response's keys are on one node (one slot): multi-key scripts work.
        for node in redis_cluster.nodes:
            names = [key for key in node.cli("KEYS", "*").split() if key]
            for key in names:
                tag = key.split("{", 1)[1].split("}", 1)[0]
                assert {k for k in names if f"{{{tag}}}" in k} == {
                    f"xr:{{{tag}}}:{part}" for part in "rix"
                }
        for n in range(60):
            page = await store.input_items(f"resp_{n:02d}", after=None, limit=2, order="asc")
            assert page is not None and page.has_more
            assert await store.delete(f"resp_{n:02d}")
        assert sum(int(node.cli("DBSIZE")) for node in redis_cluster.nodes) == 60  # tombstones
    finally:
        await redis.aclose()


async def test_redis_down_is_storage_unavailable_and_it_recovers(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    server.cli("CONFIG", "SET", "requirepass", "s3cret-pw")
    url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
    redis = SharedRedis(RedisSettings(url, timeout_s=0.2, breaker_s=0.3))
    store = RedisResponseStore(redis)
    try:
        assert await store.save(stored("resp_before", 1))
        server.kill()
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.save(stored("resp_during", 1)),
            lambda: store.get("resp_before"),
            lambda: store.get_response("resp_before"),
            lambda: store.input_items("resp_before", after=None, limit=1, order="asc"),
            lambda: store.delete("resp_before"),
        ]
        for call in calls:
            with pytest.raises(StorageUnavailable) as caught:
                await call()
            message = caught.value.message
            assert "Redis" in message and "unavailable" in message and "stored state" in message
            assert "s3cret-pw" not in message and "s3cret-pw" not in repr(store)
            assert caught.value.status == 503 and caught.value.code == "storage_unavailable"
        assert store.failed_writes == 1
        server.start()
        server.cli("CONFIG", "SET", "requirepass", "s3cret-pw")
        await asyncio.sleep(0.35)  # the breaker's probe is due
        assert await store.save(stored("resp_after", 1))  # scripts are loaded again
        assert await store.get("resp_after") is not None
    finally:
        await redis.aclose()


# --- helpers --------------------------------------------------------------------------------


def _net_output_bytes(nodes: list[RedisServer]) -> int:
    total = 0
    for node in nodes:
        for line in node.cli("INFO", "stats").splitlines():
            if line.startswith("total_net_output_bytes:"):
                total += int(line.split(":", 1)[1])
    return total


def _node_of(nodes: list[RedisServer], key: str) -> RedisServer:
    for node in nodes:
        if node.cli("EXISTS", key, check=False) == "1":
            return node
    raise AssertionError(f"no node holds {key}")
