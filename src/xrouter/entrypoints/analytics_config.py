"""Where analytics records go (XR_ANALYTICS), built from Settings for the container and for
`xrouter usage`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from xrouter.adapters.telemetry.analytics import AnalyticsSink, MemoryRing, RedisStream
from xrouter.entrypoints.config import Settings, env_name

if TYPE_CHECKING:
    # The Redis adapters (and redis-py, about 0.1 s to import) are imported where a Redis
    # variant is built: a gateway without XR_REDIS_URL never loads them.
    from xrouter.adapters.redis.connection import SharedRedis

AnalyticsKind = Literal["memory", "redis", "off"]


def analytics_kind(settings: Settings) -> AnalyticsKind:
    """XR_ANALYTICS resolved: `auto` is redis when XR_REDIS_URL is set, else memory."""
    if settings.analytics == "auto":
        return "redis" if settings.redis_url else "memory"
    if settings.analytics == "redis":
        return "redis"
    if settings.analytics == "off":
        return "off"
    return "memory"


def build_analytics(settings: Settings, redis: SharedRedis | None) -> AnalyticsSink:
    """The analytics sink of XR_ANALYTICS (not started: the app starts its drain).

    `off` keeps nothing and counts nothing as dropped: turning analytics off is a choice, not
    a loss."""
    kind = analytics_kind(settings)
    if kind == "off":
        return AnalyticsSink(None, setting_names=env_name)
    if kind == "redis":
        if redis is None:
            raise ValueError("Redis analytics need the process's Redis client (XR_REDIS_URL)")
        backend: RedisStream | MemoryRing = RedisStream(
            redis, maxlen=settings.analytics_stream_maxlen
        )
    else:
        backend = MemoryRing(settings.analytics_max_records)
    return AnalyticsSink(backend, queue_size=settings.analytics_queue_size, setting_names=env_name)
