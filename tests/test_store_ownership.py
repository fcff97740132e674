"""A stored response belongs to the gateway key that created it (issue 12, item 5), in every
store: in memory, on Redis and on a Redis Cluster (real redis-server processes).

Another key's reads and deletes get exactly what an unknown id gets (None / False, never
UnknownItem), and its delete leaves the response whole. `owner=None` (authentication off)
makes no check. Records written before owners existed (a plain response map in Redis) still
decode, with owner None.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import msgspec
import pytest

from tests.redis_servers import RedisCluster, RedisServer
from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.adapters.storage.memory import InMemoryResponseStore
from xrouter.adapters.storage.redis_store import RedisResponseStore
from xrouter.application.ports import ResponseStore
from xrouter.domain.responses import InputItem, Response, StoredResponse

Kind = Literal["memory", "redis", "cluster"]

KEY_A = "key_00000000000000aa"
KEY_B = "key_00000000000000bb"


def owned(response_id: str, owner: str | None, count: int = 3) -> StoredResponse:
    items = [
        InputItem(id=f"{response_id}_{n}", role="user", content=f"item {n}") for n in range(count)
    ]
    response = Response(id=response_id, created_at=1, status="completed", model="local/echo")
    return StoredResponse(response=response, input_items=items, owner=owner)


async def unknown_to(store: ResponseStore, response_id: str, owner: str) -> bool:
    """True when every read and the delete of `owner` answer as for an id that does not exist
    (the delete too, so call it last or on a response that must survive it)."""
    pages = [
        await store.input_items(response_id, after=after, limit=10, order=order, owner=owner)
        for after in (None, f"{response_id}_0", "no_such_item")
        for order in ("asc", "desc")
    ]
    return (
        await store.get(response_id, owner=owner) is None
        and await store.get_response(response_id, owner=owner) is None
        and pages == [None] * len(pages)
        and await store.delete(response_id, owner=owner) is False
    )


async def whole(store: ResponseStore, stored: StoredResponse, owner: str | None) -> bool:
    """True when `owner` reads `stored` back unchanged through every read."""
    response_id = stored.response.id
    page = await store.input_items(response_id, after=None, limit=10, order="asc", owner=owner)
    return (
        await store.get(response_id, owner=owner) == stored
        and await store.get_response(response_id, owner=owner) == stored.response
        and page is not None
        and page.items == stored.input_items
    )


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store_of(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Kind, ResponseStore, SharedRedis | None]]:
    """(kind, store, its SharedRedis or None for the memory store)."""
    kind: Kind = request.param
    if kind == "memory":
        yield kind, InMemoryResponseStore(), None
        return
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = RedisSettings(server.url, timeout_s=5.0)
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        settings = RedisSettings(cluster.url, cluster=True, timeout_s=5.0)
    redis = SharedRedis(settings)
    try:
        yield kind, RedisResponseStore(redis, tombstone_s=60.0), redis
    finally:
        await redis.aclose()


async def test_another_key_sees_nothing_and_deletes_nothing(
    store_of: tuple[Kind, ResponseStore, SharedRedis | None],
) -> None:
    _, store, _ = store_of
    record = owned("resp_a", KEY_A)
    assert await store.save(record)

    assert await unknown_to(store, "resp_a", KEY_B)
    assert await whole(store, record, KEY_A)  # B's delete left it whole
    assert await whole(store, record, None)  # authentication off: no check

    assert await store.delete("resp_a", owner=KEY_A) is True
    assert await store.get("resp_a", owner=KEY_A) is None
    assert await store.get("resp_a") is None


async def test_an_owner_whose_id_starts_another_owners_id_is_another_owner(
    store_of: tuple[Kind, ResponseStore, SharedRedis | None],
) -> None:
    """Redis checks the owner by the blob's first bytes: `key_1` must not pass for `key_10`."""
    _, store, _ = store_of
    record = owned("resp_p", "key_10")
    assert await store.save(record)
    assert await unknown_to(store, "resp_p", "key_1")
    assert await unknown_to(store, "resp_p", "key_100")
    assert await unknown_to(store, "resp_p", "")
    assert await whole(store, record, "key_10")


async def test_a_response_stored_without_owner_is_not_a_keyed_callers(
    store_of: tuple[Kind, ResponseStore, SharedRedis | None],
) -> None:
    _, store, _ = store_of
    record = owned("resp_n", None)
    assert await store.save(record)
    assert await unknown_to(store, "resp_n", KEY_A)
    assert await whole(store, record, None)
    assert await store.delete("resp_n") is True


async def test_another_keys_delete_before_the_save_does_not_cancel_it(
    store_of: tuple[Kind, ResponseStore, SharedRedis | None],
) -> None:
    """A delete that comes while the response is still generating leaves a tombstone in
    Redis; one from another key must not keep the owner's response from being stored."""
    _, store, _ = store_of
    assert await store.delete("resp_early", owner=KEY_B) is False
    record = owned("resp_early", KEY_A)
    assert await store.save(record)
    assert await whole(store, record, KEY_A)


async def test_the_owners_delete_before_the_save_still_wins(
    store_of: tuple[Kind, ResponseStore, SharedRedis | None],
) -> None:
    """The tombstone's purpose (tests/test_response_stores.py) holds for an owned response,
    whether the owner deleted it or an unchecked (authentication off) delete did."""
    kind, store, _ = store_of
    if kind == "memory":
        pytest.skip("one process: a delete marks the running generation, whose save never comes")
    for deleter, response_id in ((KEY_A, "resp_mine"), (None, "resp_anyones")):
        assert await store.delete(response_id, owner=deleter) is False
        assert await store.save(owned(response_id, KEY_A)) is False
        assert await store.get(response_id) is None


async def test_a_record_of_the_old_format_decodes_with_no_owner(
    store_of: tuple[Kind, ResponseStore, SharedRedis | None],
) -> None:
    """Responses stored before owners existed: the response blob is the plain response map."""
    _, store, redis = store_of
    if redis is None:
        pytest.skip("the memory store does not outlive the process: no old records")
    record = owned("resp_old", None)
    assert await store.save(record)
    await redis.client.set("xr:{resp_old}:r", msgspec.msgpack.encode(record.response))

    assert await whole(store, record, None)
    stored = await store.get("resp_old")
    assert stored is not None and stored.owner is None
    assert await unknown_to(store, "resp_old", KEY_A)
    assert await whole(store, record, None)  # the keyed delete left it whole
    assert await store.delete("resp_old") is True
    assert await store.get("resp_old") is None


async def test_the_owner_is_stored_but_never_part_of_the_response(
    store_of: tuple[Kind, ResponseStore, SharedRedis | None],
) -> None:
    _, store, _ = store_of
    assert await store.save(owned("resp_w", KEY_A))
    stored = await store.get("resp_w", owner=KEY_A)
    assert stored is not None and stored.owner == KEY_A
    response = await store.get_response("resp_w", owner=KEY_A)
    assert response is not None
    assert b"owner" not in msgspec.json.encode(response)
    assert KEY_A.encode() not in msgspec.json.encode(response)
