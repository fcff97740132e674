"""The per-key limiter for the container: shared in Redis when the process has a Redis client,
else this process's own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xrouter.adapters.limits.memory import MemoryKeyLimiter
from xrouter.application.ports import KeyLimiter
from xrouter.entrypoints.config import env_name

if TYPE_CHECKING:
    # The Redis adapters (and redis-py, about 0.1 s to import) are imported where a Redis
    # variant is built: a gateway without XR_REDIS_URL never loads them.
    from xrouter.adapters.redis.connection import SharedRedis


def build_key_limiter(redis: SharedRedis | None, lease_s: float) -> KeyLimiter:
    """On `redis` (XR_REDIS_URL set): every worker and instance shares the limits, and a
    concurrency lease lasts `lease_s` (XR_INFLIGHT_LEASE_S) past its last renewal. Without
    Redis the limits hold per process (exact for one worker)."""
    if redis is None:
        return MemoryKeyLimiter()
    from xrouter.adapters.redis.key_limits import RedisKeyLimiter

    return RedisKeyLimiter(redis, lease_s, setting_names=env_name)
