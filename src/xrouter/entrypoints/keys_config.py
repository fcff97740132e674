"""Where gateway keys live and how their secrets are hashed, built from Settings for the
container (the server) and for `xrouter keys` (the CLI)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from xrouter.adapters.keys.hashing import HmacKeyHasher, new_key_id, new_secret
from xrouter.adapters.keys.memory import MemoryKeyStore
from xrouter.adapters.keys.toml_file import TomlKeyFile, TomlKeyStore
from xrouter.application.key_admin import KeyAdmin
from xrouter.application.ports import KeyStore
from xrouter.entrypoints.config import ConfigError, Settings, env_name

if TYPE_CHECKING:
    # The Redis adapters (and redis-py, about 0.1 s to import) are imported where a Redis
    # variant is built: a gateway without XR_REDIS_URL never loads them.
    from xrouter.adapters.redis.connection import SharedRedis


def build_key_hasher(settings: Settings) -> HmacKeyHasher:
    """The hasher of XR_AUTH_SECRET; ConfigError naming it when it is unset or too short."""
    try:
        return HmacKeyHasher(settings.auth_secret or "", setting_name=env_name("auth_secret"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def build_key_store(settings: Settings, redis: SharedRedis | None) -> KeyStore:
    """The server's key store: Redis when XR_REDIS_URL is set (the container passes the
    process's SharedRedis), else the keys file XR_KEYS_FILE (read-only, re-read when it
    changes), else memory (keys made over /admin/keys, lost at exit)."""
    if settings.redis_url:
        if redis is None:
            raise ValueError("the Redis key store needs the process's Redis client")
        from xrouter.adapters.redis.key_cache import CachedKeyStore
        from xrouter.adapters.redis.key_store import RedisKeyStore

        store = RedisKeyStore(redis)
        # Cached per process, dropped through the store's change channel (key_cache.py); a
        # cluster reads Redis on every request (its pub/sub is not wired here).
        return store if settings.redis_cluster else CachedKeyStore(store, redis)
    if settings.keys_file:
        return TomlKeyStore(Path(settings.keys_file))
    return MemoryKeyStore()


def build_admin_key_store(settings: Settings, redis: SharedRedis | None) -> KeyStore | None:
    """The store `xrouter keys` changes: the server's Redis, or the keys file written
    directly; None when the keys live in a server's memory (nothing to share)."""
    if settings.redis_url:
        if redis is None:
            raise ValueError("the Redis key store needs the process's Redis client")
        from xrouter.adapters.redis.key_store import RedisKeyStore

        return RedisKeyStore(redis)
    if settings.keys_file:
        return TomlKeyFile(Path(settings.keys_file))
    return None


def build_key_admin(settings: Settings, store: KeyStore) -> KeyAdmin | None:
    """Key administration over `store` for `/admin/keys`; None without XR_AUTH_SECRET (new
    secrets could not be hashed), and then `/admin/keys` is not mounted."""
    if not settings.auth_secret:
        return None
    return KeyAdmin(store, build_key_hasher(settings), time.time, new_secret, new_key_id)
