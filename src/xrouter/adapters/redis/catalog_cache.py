"""The model catalog shared in Redis: each provider's discovered list, and the lock that lets
one worker of one instance at a time refresh it (application/registry.py decides when).

Keys, one hash tag per provider so a cluster keeps them on one slot:

    xrouter:catalog:{<provider>}:models   the list (msgspec MessagePack), PX = fresh + margin
    xrouter:catalog:{<provider>}:lock     SET NX PX with a random token; deleted only by the
                                          worker holding that token (compare-and-delete)

Freshness is read from the key's own PTTL, counted by Redis, so clocks that differ between
machines never make a list look fresher or staler than it is. The list outlives its freshness
by a margin (one more period, at least a minute): readers keep a list while one refresher
replaces it, and a worker that starts while the upstream is down still gets the last good one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from xrouter.adapters.redis.connection import RedisClient, RedisUnavailable, SharedRedis
from xrouter.application.ports import CachedModels, CacheUnavailable, DiscoveryCache
from xrouter.application.registry import LocalDiscovery
from xrouter.domain.models import ModelInfo

log = logging.getLogger("xrouter.catalog")

T = TypeVar("T")

_MIN_MARGIN_S = 60.0

# Deletes the lock only when it still holds our token: a holder whose lock expired (and was
# taken by another worker) must not release the new holder's lock.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class _Entry(msgspec.Struct, frozen=True, array_like=True):
    models: list[ModelInfo]
    margin_ms: int
    """How long the key outlives the list's freshness (its PTTL minus this: fresh for)."""


def _models_key(provider: str) -> str:
    return f"xrouter:catalog:{{{provider}}}:models"


def _lock_key(provider: str) -> str:
    return f"xrouter:catalog:{{{provider}}}:lock"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisCatalogCache:
    """DiscoveryCache on the process's SharedRedis (timeouts and breaker included)."""

    def __init__(self, redis: SharedRedis) -> None:
        self._redis = redis
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_Entry)
        self._tokens: dict[str, str] = {}  # provider -> the token of the lock we hold

    def __repr__(self) -> str:
        return f"RedisCatalogCache({self._redis!r})"

    @property
    def shared(self) -> bool:
        return True

    async def read(self, provider: str) -> CachedModels | None:
        key = _models_key(provider)

        async def get(client: RedisClient) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            return list(await pipe.execute())

        data, pttl = await self._run("read the model catalog", get)
        if data is None:
            return None
        try:
            entry = self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Written by another version, or by hand: treat as absent, the refresher
            # overwrites it.
            log.warning("ignoring the cached model list of %s: %s", provider, exc)
            return None
        # No expiry (-1, set by hand): stale, so the next refresh writes it back with one.
        fresh_ms = int(pttl) - entry.margin_ms if int(pttl) >= 0 else 0
        return CachedModels(models=entry.models, fresh_for_s=fresh_ms / 1000)

    async def write(self, provider: str, models: list[ModelInfo], fresh_s: float) -> None:
        margin_ms = _ms(max(fresh_s, _MIN_MARGIN_S))
        data = self._encoder.encode(_Entry(models=models, margin_ms=margin_ms))
        key = _models_key(provider)
        keep_ms = _ms(fresh_s) + margin_ms

        async def put(client: RedisClient) -> Any:
            return await client.set(key, data, px=keep_ms)

        await self._run("write the model catalog", put)

    async def try_lock(self, provider: str, ttl_s: float) -> bool:
        token = secrets.token_hex(16)
        key = _lock_key(provider)
        ttl_ms = _ms(ttl_s)

        async def take(client: RedisClient) -> Any:
            return await client.set(key, token, nx=True, px=ttl_ms)

        if not await self._run("take the catalog refresh lock", take):
            return False
        self._tokens[provider] = token
        return True

    async def release(self, provider: str) -> None:
        token = self._tokens.pop(provider, None)
        if token is None:
            return
        key = _lock_key(provider)

        async def release(client: RedisClient) -> Any:
            return await client.eval(_RELEASE, 1, key, token)

        await self._run("release the catalog refresh lock", release)

    async def _run(self, what: str, operation: Callable[[RedisClient], Awaitable[T]]) -> T:
        try:
            return await self._redis.run(what, operation)
        except RedisUnavailable as exc:
            raise CacheUnavailable(str(exc)) from None


def build_catalog_cache(redis: SharedRedis | None) -> DiscoveryCache:
    """The shared cache on `redis`, or the process-local one when there is no Redis."""
    return RedisCatalogCache(redis) if redis is not None else LocalDiscovery()
