"""Where background responses' events and cancels live (memory, or Redis with the Redis store),
and the settings the engine and the background use cases take, built from Settings for the
container."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xrouter.adapters.storage.event_log_memory import MemoryEventLog
from xrouter.application.background import Background, BackgroundSettings
from xrouter.application.ports import IdGenerator, ResponseStore
from xrouter.entrypoints.config import Settings, env_name

if TYPE_CHECKING:
    # The Redis adapters (and redis-py, about 0.1 s to import) are imported where a Redis
    # variant is built: a gateway without XR_REDIS_URL never loads them.
    from xrouter.adapters.redis.connection import SharedRedis
    from xrouter.adapters.redis.event_log import RedisEventLog

_FOLLOW_GRACE_S = 60.0
"""A replay follows live events for the generation deadline plus this."""


def build_event_log(
    settings: Settings, redis: SharedRedis | None
) -> MemoryEventLog | RedisEventLog:
    """The event log (and cancel requests) next to the response store: on Redis when the store
    is, so every worker and instance replays, follows and cancels the same responses."""
    if settings.storage == "redis":
        if redis is None:
            raise ValueError("XR_STORAGE=redis needs the process's Redis client (XR_REDIS_URL)")
        from xrouter.adapters.redis.event_log import RedisEventLog

        return RedisEventLog(
            redis,
            max_events=settings.background_events_max,
            max_bytes=settings.background_events_max_bytes,
            ttl_s=settings.background_events_ttl_s,
            setting_names=env_name,
        )
    return MemoryEventLog(
        max_events=settings.background_events_max,
        max_bytes=settings.background_events_max_bytes,
        ttl_s=settings.background_events_ttl_s,
        max_logs=settings.store_max_responses,
        setting_names=env_name,
    )


def background_settings(settings: Settings) -> BackgroundSettings:
    return BackgroundSettings(
        poll_s=settings.background_poll_s,
        cancel_wait_s=settings.background_cancel_wait_s,
        follow_s=settings.generation_timeout_s + _FOLLOW_GRACE_S,
    )


def build_background(
    store: ResponseStore,
    events: MemoryEventLog | RedisEventLog,
    ids: IdGenerator,
    settings: BackgroundSettings,
) -> Background:
    return Background(store=store, events=events, cancels=events, ids=ids, settings=settings)
