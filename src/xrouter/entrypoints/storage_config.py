"""Where state lives: the response store (memory or Redis) and the process's Redis client,
built from Settings for the container."""

from __future__ import annotations

import logging

from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.adapters.storage.memory import InMemoryResponseStore
from xrouter.adapters.storage.redis_store import TOMBSTONE_S, RedisResponseStore
from xrouter.application.ports import ResponseStore
from xrouter.entrypoints.config import Settings, env_name

log = logging.getLogger("xrouter.storage")


def build_shared_redis(settings: Settings) -> SharedRedis | None:
    """The process's Redis client when XR_REDIS_URL is set (whatever uses it: the store, the
    catalog cache, the in-flight leases), else None."""
    if not settings.redis_url:
        return None
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
