"""Where conversations live (the same choice as responses: XR_STORAGE) and their limits,
built from Settings for the container."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xrouter.adapters.storage.conversation_memory import InMemoryConversationStore
from xrouter.application.conversations import ConversationLimits
from xrouter.application.ports import ConversationStore
from xrouter.entrypoints.config import Settings, env_name

if TYPE_CHECKING:
    # The Redis adapters (and redis-py, about 0.1 s to import) are imported where a Redis
    # variant is built: a gateway without XR_REDIS_URL never loads them.
    from xrouter.adapters.redis.connection import SharedRedis


def build_conversation_store(settings: Settings, redis: SharedRedis | None) -> ConversationStore:
    """Redis with XR_STORAGE=redis (the process's SharedRedis), else this process's memory;
    the TTL of stored responses either way."""
    if settings.storage == "redis":
        if redis is None:
            raise ValueError("XR_STORAGE=redis needs the process's Redis client (XR_REDIS_URL)")
        from xrouter.adapters.storage.conversation_redis import RedisConversationStore

        return RedisConversationStore(redis, ttl_s=settings.store_ttl_s)
    return InMemoryConversationStore(
        settings.conversations_max,
        max_bytes=settings.conversations_max_bytes,
        ttl_s=settings.store_ttl_s,
    )


def conversation_limits(settings: Settings) -> ConversationLimits:
    return ConversationLimits(
        max_items=settings.conversation_max_items,
        max_item_bytes=settings.conversation_max_item_bytes,
        setting_names=env_name,
    )
