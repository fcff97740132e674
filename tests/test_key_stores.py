"""The key stores (memory, the TOML keys file, Redis, Redis Cluster) through the KeyStore port
and the key administration use case, and the server's read-only view of the keys file."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Literal

import pytest

from xrouter.adapters.keys.hashing import HmacKeyHasher, new_key_id, new_secret
from xrouter.adapters.keys.memory import MemoryKeyStore
from xrouter.adapters.keys.toml_file import TomlKeyFile, TomlKeyStore
from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.adapters.redis.key_cache import CachedKeyStore
from xrouter.adapters.redis.key_store import RedisKeyStore
from xrouter.application.key_admin import KeyAdmin, KeyNotFound, KeyStoreReadOnly
from xrouter.application.ports import KeyStore
from xrouter.domain.errors import InvalidRequest, StorageUnavailable
from xrouter.domain.keys import GatewayKey, KeyLimits

from .helpers import captured_log
from .redis_servers import RedisCluster, RedisServer


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait, bounded, until `condition()` holds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


Kind = Literal["memory", "toml", "redis", "cached", "cluster"]
SECRET = "server-secret-0123456789"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "toml", "redis", "cached", "cluster"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    kind: Kind = request.param
    if kind == "memory":
        yield MemoryKeyStore()
        return
    if kind == "toml":
        yield TomlKeyFile(tmp_path / "keys.toml")
        return
    if kind in ("redis", "cached"):
        server: RedisServer = request.getfixturevalue("redis_server")
        redis = SharedRedis(RedisSettings(server.url, timeout_s=5.0))
        assert redis.lean is not None  # the lean client's path
        if kind == "cached":  # the server's store: the cache in front, listening
            cached = CachedKeyStore(RedisKeyStore(redis), redis)
            await cached.start()
            await _until(lambda: cached.live)
            yield cached
            await cached.aclose()
            await redis.aclose()
            return
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        redis = SharedRedis(RedisSettings(cluster.url, cluster=True, timeout_s=5.0))
    yield RedisKeyStore(redis)
    await redis.aclose()


def admin_over(store: KeyStore, clock: Clock | None = None) -> KeyAdmin:
    return KeyAdmin(store, HmacKeyHasher(SECRET), clock or Clock(), new_secret, new_key_id)


# --- the contract, for every writable store -------------------------------------------------


async def test_a_created_key_is_found_by_its_secret_and_never_stores_it(store: KeyStore) -> None:
    admin = admin_over(store)
    key, secret = await admin.create(
        "ci",
        expires_at=NOW + 3600,
        models=["openai/*", "fast"],
        limits=KeyLimits(requests_per_minute=60, concurrent=2),
    )
    assert secret.startswith("xr-") and len(secret) == 3 + 43
    assert key.id.startswith("key_") and len(key.id) == 4 + 16
    assert key.display == secret[:8] and key.hash == HmacKeyHasher(SECRET).hash(secret)
    assert secret not in repr(key)

    found = await store.find(HmacKeyHasher(SECRET).hash(secret))
    assert found == key
    assert found.models == ("openai/*", "fast")
    assert found.limits == KeyLimits(requests_per_minute=60, concurrent=2)
    assert await store.get(key.id) == key
    assert await store.find(HmacKeyHasher(SECRET).hash(secret + "x")) is None
    assert await store.find(HmacKeyHasher("another-server-secret-0").hash(secret)) is None
    assert await store.get("key_0000000000000000") is None


async def test_keys_are_listed_oldest_first(store: KeyStore) -> None:
    clock = Clock()
    admin = admin_over(store, clock)
    names = []
    for name in ("b", "a", "c"):
        clock.now += 1
        await admin.create(name)
        names.append(name)
    assert [key.name for key in await admin.list_keys()] == names


async def test_rotation_keeps_the_key_and_stops_the_old_secret_at_once(store: KeyStore) -> None:
    hasher = HmacKeyHasher(SECRET)
    admin = admin_over(store)
    key, old = await admin.create("svc", models=["local/*"], limits=KeyLimits(concurrent=3))
    rotated, new = await admin.rotate(key.id)
    assert new != old and rotated.id == key.id
    assert (rotated.name, rotated.models, rotated.limits) == (key.name, key.models, key.limits)
    assert await store.find(hasher.hash(old)) is None
    assert await store.find(hasher.hash(new)) == rotated
    assert [k.id for k in await store.list_keys()] == [key.id]


async def test_a_save_that_does_not_name_the_old_hash_still_retires_it(store: KeyStore) -> None:
    hasher = HmacKeyHasher(SECRET)
    key = GatewayKey(
        id="key_00000000000000aa",
        name="k",
        hash=hasher.hash("xr-one"),
        display="xr-one",
        created_at=NOW,
    )
    await store.save(key)
    changed = GatewayKey(
        id=key.id, name="k", hash=hasher.hash("xr-two"), display="xr-two", created_at=NOW
    )
    await store.save(changed)
    assert await store.find(hasher.hash("xr-one")) is None
    assert await store.find(hasher.hash("xr-two")) == changed


async def test_revocation_is_seen_by_the_next_lookup(store: KeyStore) -> None:
    hasher = HmacKeyHasher(SECRET)
    clock = Clock()
    admin = admin_over(store, clock)
    key, secret = await admin.create("leaver")
    clock.now += 10
    revoked = await admin.revoke(key.id)
    assert revoked.revoked_at == NOW + 10
    found = await store.find(hasher.hash(secret))
    assert found is not None and not found.usable_at(clock.now)
    clock.now += 10
    assert (await admin.revoke(key.id)).revoked_at == NOW + 10  # the first revocation stays
    with pytest.raises(InvalidRequest, match="revoked"):
        await admin.rotate(key.id)


async def test_unknown_ids_are_not_found(store: KeyStore) -> None:
    admin = admin_over(store)
    for action in (admin.show, admin.revoke, admin.rotate):
        with pytest.raises(KeyNotFound) as caught:
            await action("key_ffffffffffffffff")
        assert caught.value.status == 404
    assert await store.get("{bad}") is None


async def test_bad_values_are_refused_before_anything_is_stored(store: KeyStore) -> None:
    admin = admin_over(store)
    refusals = [
        ("name", admin.create("")),
        ("name", admin.create("a\nb")),
        ("expires_at", admin.create("x", expires_at=NOW - 1)),
        ("models", admin.create("x", models=[""])),
        ("limits.concurrent", admin.create("x", limits=KeyLimits(concurrent=0))),
    ]
    for param, attempt in refusals:
        with pytest.raises(InvalidRequest) as caught:
            await attempt
        assert caught.value.param == param
    assert await store.list_keys() == []


async def test_update_changes_limits_and_keeps_the_secret(store: KeyStore) -> None:
    hasher = HmacKeyHasher(SECRET)
    admin = admin_over(store)
    key, secret = await admin.create("team", expires_at=NOW + 60)
    updated = await admin.update(
        key.id, name="team-2", limits=KeyLimits(requests_per_minute=5), clear_expiry=True
    )
    assert (updated.name, updated.expires_at, updated.limits.requests_per_minute) == (
        "team-2",
        None,
        5,
    )
    assert await store.find(hasher.hash(secret)) == updated


# --- the keys file -------------------------------------------------------------------------


async def test_the_keys_file_holds_hashes_only_owner_readable_and_escaped(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    admin = admin_over(TomlKeyFile(path))
    key, secret = await admin.create('say "hi" \\ é 😀', models=['a"b', "c\\d"])
    text = path.read_text()
    assert secret not in text and key.hash in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert await TomlKeyFile(path).get(key.id) == key  # tomllib reads back what was written
    # Control characters (a key saved by other means) are escaped too.
    odd = GatewayKey(
        id="key_odd", name="tab\there\nline\x7f\x00", hash="h", display="xr-", created_at=NOW
    )
    await TomlKeyFile(path).save(odd)
    assert await TomlKeyFile(path).get("key_odd") == odd
    assert await TomlKeyFile(path).get(key.id) == key
    assert sorted(os.listdir(tmp_path)) == ["keys.toml", "keys.toml.lock"]  # no temporary left


async def test_the_server_view_rereads_a_changed_file_at_most_every_half_second(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.toml"
    hasher = HmacKeyHasher(SECRET)
    monotonic = Clock(0.0)
    admin = admin_over(TomlKeyFile(path))
    with captured_log("xrouter.keys") as log:
        view = TomlKeyStore(path, monotonic=monotonic)
        assert await view.list_keys() == []
    assert any(line.startswith("WARNING") and str(path) in line for line in log.lines)
    assert not view.writable
    key, secret = await admin.create("ci")
    monotonic.now += 0.1
    assert await view.find(hasher.hash(secret)) is None  # looked 0.1 s ago: not yet
    monotonic.now += 0.5
    assert await view.find(hasher.hash(secret)) == key
    await admin.revoke(key.id)
    monotonic.now += 0.5
    found = await view.find(hasher.hash(secret))
    assert found is not None and found.revoked_at is not None
    # A rotation leaves the file's size as it was: the replace is still seen.
    other, old = await admin.create("other")
    monotonic.now += 0.5
    assert await view.find(hasher.hash(old)) == other
    rotated, new = await admin.rotate(other.id)
    monotonic.now += 0.5
    assert await view.find(hasher.hash(new)) == rotated
    assert await view.find(hasher.hash(old)) is None
    with pytest.raises(KeyStoreReadOnly):
        await admin_over(view).create("x")
    with pytest.raises(StorageUnavailable, match="xrouter keys"):
        await view.save(key)


async def test_a_broken_file_keeps_the_last_good_keys_and_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    hasher = HmacKeyHasher(SECRET)
    monotonic = Clock(0.0)
    key, secret = await admin_over(TomlKeyFile(path)).create("ci")
    view = TomlKeyStore(path, monotonic=monotonic)
    assert await view.find(hasher.hash(secret)) == key

    good = path.read_text()
    path.write_text(good + "\n[keys.key_broken\nname = 'x'\n")
    broken_line = f"line {good.count(chr(10)) + 2}"
    monotonic.now += 1
    with captured_log("xrouter.keys") as log:
        assert await view.find(hasher.hash(secret)) == key
        monotonic.now += 1
        assert await view.find(hasher.hash(secret)) == key
    errors = [line for line in log.lines if line.startswith("ERROR")]
    assert len(errors) == 1, log.lines  # logged once per change, not per lookup
    assert str(path) in errors[0] and broken_line in errors[0] and "keeping the 1 keys" in errors[0]

    # The CLI refuses to write over it (its change would drop what the operator wrote).
    with pytest.raises(StorageUnavailable, match=broken_line):
        await admin_over(TomlKeyFile(path)).create("more")

    path.write_text(good.replace('name = "ci"', "name = 3"))
    monotonic.now += 1
    with captured_log("xrouter.keys") as log:
        assert await view.find(hasher.hash(secret)) == key
    assert any("[keys." in line and "`name`" in line for line in log.lines), log.lines

    path.write_text(good)
    monotonic.now += 1
    assert await view.find(hasher.hash(secret)) == key
    path.unlink()
    monotonic.now += 1
    assert await view.find(hasher.hash(secret)) is None  # a deleted file: no keys


# --- Redis -----------------------------------------------------------------------------------


async def test_redis_records_share_one_slot_and_never_hold_the_secret(
    redis_server: RedisServer,
) -> None:
    redis = SharedRedis(RedisSettings(redis_server.url, timeout_s=5.0))
    try:
        key, secret = await admin_over(RedisKeyStore(redis)).create("ci")
    finally:
        await redis.aclose()
    names = sorted(redis_server.cli("KEYS", "*").split())
    assert names == sorted(
        [f"xrouter:{{keys}}:id:{key.id}", f"xrouter:{{keys}}:hash:{key.hash}", "xrouter:{keys}:ids"]
    )
    dump = redis_server.cli("GET", f"xrouter:{{keys}}:id:{key.id}")
    assert secret not in dump and secret[3:] not in dump


async def test_redis_down_is_storage_unavailable(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    server.kill()
    redis = SharedRedis(RedisSettings(server.url, timeout_s=0.5))
    store = RedisKeyStore(redis)
    try:
        with pytest.raises(StorageUnavailable, match="key store"):
            await store.find("0" * 64)
        with pytest.raises(StorageUnavailable):
            await admin_over(store).create("x")
    finally:
        await redis.aclose()


# --- the hasher ------------------------------------------------------------------------------


def test_the_hasher_refuses_a_missing_or_short_secret_naming_the_setting() -> None:
    for secret in ("", "short"):
        with pytest.raises(ValueError, match="MY_SETTING"):
            HmacKeyHasher(secret, setting_name="MY_SETTING")
    hasher = HmacKeyHasher(SECRET)
    assert hasher.hash("xr-a") == hasher.hash("xr-a") != hasher.hash("xr-b")
    assert len(hasher.hash("xr-a")) == 64 and SECRET not in repr(hasher)


# --- the per-process cache in front of Redis ---------------------------------------------------


async def _read_until_cached(store: CachedKeyStore, digest: str) -> GatewayKey | None:
    """Look `digest` up until the cache keeps it: a change message arriving during a read
    (the key's own creation, heard late) keeps that read out of the cache."""
    for _ in range(100):
        found = await store.find(digest)
        if store.find_cached(digest):
            return found
        await asyncio.sleep(0.01)
    raise AssertionError("the key was never cached")


async def test_the_cache_answers_without_redis_and_hears_a_revocation_from_elsewhere(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """Two processes' views of one Redis: the server's cached store, and the admin's plain
    store (another connection). A cached key is found with Redis paused; a revocation made
    by the admin reaches the cache before the next lookup needs it."""
    server = redis_factory()
    serving_redis = SharedRedis(RedisSettings(server.url, timeout_s=5.0))
    admin_redis = SharedRedis(RedisSettings(server.url, timeout_s=5.0))
    serving = CachedKeyStore(RedisKeyStore(serving_redis), serving_redis)
    hasher = HmacKeyHasher(SECRET)
    clock = Clock()
    admin = admin_over(RedisKeyStore(admin_redis), clock)
    try:
        await serving.start()
        await _until(lambda: serving.live)
        key, secret = await admin.create("cached")
        digest = hasher.hash(secret)
        assert await _read_until_cached(serving, digest) == key
        server.pause()
        try:
            found = await asyncio.wait_for(serving.find(digest), 0.5)
        finally:
            server.resume()
        assert found == key
        await _until(lambda: serving.live)
        clock.now += 5
        await admin.revoke(key.id)
        await _until(lambda: not serving.find_cached(digest), timeout_s=2.0)
        found = await serving.find(digest)
        assert found is not None and found.revoked_at == NOW + 5
    finally:
        await serving.aclose()
        await serving_redis.aclose()
        await admin_redis.aclose()


async def test_the_cache_is_not_trusted_once_redis_is_gone(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """With the change channel lost a revocation could be missed: the cache stops answering
    and the lookup fails as Redis does, rather than let a cached key through."""
    server = redis_factory()
    redis = SharedRedis(RedisSettings(server.url, timeout_s=0.5))
    serving = CachedKeyStore(RedisKeyStore(redis), redis)
    hasher = HmacKeyHasher(SECRET)
    try:
        await serving.start()
        await _until(lambda: serving.live)
        _, secret = await admin_over(serving).create("doomed")
        digest = hasher.hash(secret)
        assert await _read_until_cached(serving, digest) is not None
        server.kill()
        await _until(lambda: not serving.live)
        assert not serving.find_cached(digest)
        with pytest.raises(StorageUnavailable):
            await serving.find(digest)
    finally:
        await serving.aclose()
        await redis.aclose()


async def test_a_store_never_started_reads_redis_every_time(redis_server: RedisServer) -> None:
    """`xrouter keys` and other one-shot uses never start the listener: nothing is cached."""
    redis = SharedRedis(RedisSettings(redis_server.url, timeout_s=5.0))
    store = CachedKeyStore(RedisKeyStore(redis), redis)
    try:
        _, secret = await admin_over(store).create("one-shot")
        digest = HmacKeyHasher(SECRET).hash(secret)
        assert await store.find(digest) is not None
        assert not store.live and not store.find_cached(digest)
    finally:
        await store.aclose()
        await redis.aclose()
