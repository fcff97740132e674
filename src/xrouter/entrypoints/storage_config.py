"""Where state lives: the response store (memory or Redis), the process's Redis client and what
shares state through it (the discovery cache, the in-flight leases), built from Settings for
the container."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from xrouter.adapters.providers.inflight import InflightFactory, local_inflight
from xrouter.adapters.storage.memory import InMemoryResponseStore
from xrouter.application.ports import DiscoveryCache, ResponseStore
from xrouter.application.registry import LocalDiscovery
from xrouter.entrypoints.config import Settings, env_name

if TYPE_CHECKING:
    # The Redis adapters (and redis-py, about 0.1 s to import) are imported where a Redis
    # variant is built: a gateway without XR_REDIS_URL never loads them.
    from xrouter.adapters.redis.connection import SharedRedis

log = logging.getLogger("xrouter.storage")


def build_shared_redis(settings: Settings) -> SharedRedis | None:
    """The process's Redis client when XR_REDIS_URL is set (whatever uses it: the store, the
    catalog cache, the in-flight leases), else None."""
    if not settings.redis_url:
        return None
    from xrouter.adapters.redis.connection import RedisSettings, SharedRedis

    return SharedRedis(
        RedisSettings(
            url=settings.redis_url,
            cluster=settings.redis_cluster,
            ca_file=settings.redis_ca_file,
            pool_size=settings.redis_pool_size,
            timeout_s=settings.redis_timeout_s,
            breaker_s=settings.redis_breaker_s,
        ),
        setting_names=env_name,
    )


def build_response_store(settings: Settings, redis: SharedRedis | None) -> ResponseStore:
    """The store XR_STORAGE names (Settings requires XR_REDIS_URL with `redis`, so the
    container then passes the process's SharedRedis)."""
    if settings.storage == "redis":
        if redis is None:
            raise ValueError("XR_STORAGE=redis needs the process's Redis client (XR_REDIS_URL)")
        from xrouter.adapters.storage.redis_store import TOMBSTONE_S, RedisResponseStore

        return RedisResponseStore(
            redis,
            ttl_s=settings.store_ttl_s,
            max_record_bytes=settings.store_max_record_bytes,
            # A delete must outlive the longest generation it may race with (one running on
            # another worker saves when it ends).
            tombstone_s=max(TOMBSTONE_S, settings.generation_timeout_s + 60.0),
            setting_names=env_name,
        )
    return InMemoryResponseStore(
        settings.store_max_responses,
        max_bytes=settings.store_max_bytes,
        max_record_bytes=settings.store_max_record_bytes,
        ttl_s=settings.store_ttl_s,
        setting_names=env_name,
    )


def build_catalog_cache(redis: SharedRedis | None) -> DiscoveryCache:
    """Discovery shared by every worker and instance through `redis`, else this process's."""
    if redis is None:
        return LocalDiscovery()
    from xrouter.adapters.redis.catalog_cache import build_catalog_cache as on_redis

    return on_redis(redis)


def build_inflight_factory(
    redis: SharedRedis | None, lease_s: float, setting_names: Callable[[str], str]
) -> InflightFactory:
    """Each provider's in-flight limiter: leases on `redis` shared by every worker and
    instance, else this process's own."""
    if redis is None:
        return local_inflight
    from xrouter.adapters.redis.inflight import build_inflight_factory as on_redis

    return on_redis(redis, lease_s, setting_names)
