"""Gateway keys in Redis: shared by every worker and instance, and by `xrouter keys`.

Every key of the store shares the hash tag `{keys}`, so a Redis Cluster keeps them on one
slot and each script touches one slot (no CROSSSLOT):

    xrouter:{keys}:id:<id>       the key's record (MessagePack of GatewayKey: hash, never the
                                 secret)
    xrouter:{keys}:hash:<hash>   -> the id whose secret hashes to <hash>
    xrouter:{keys}:ids           set of every id, for listing

Saving is one script: the record, its hash index, the id set, and the removal of the hash the
key had before a rotation, at once, so the old secret stops authenticating the moment the new
one starts and no reader sees a state between. Finding a key by hash is one round trip too (the
script follows the index to the record). On a plain Redis the scripts go through SharedRedis's
lean client (resp.py); on a cluster through redis-py's cluster client.

Keys never expire in Redis: an expired or revoked key stays listed (the admin views show why
it no longer works) until an operator deletes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from xrouter.adapters.redis.connection import RedisUnavailable, SharedRedis
from xrouter.adapters.redis.hash_tags import check_key_prefix
from xrouter.adapters.redis.resp import Arg
from xrouter.adapters.redis.scripts import RedisScript, run_command
from xrouter.domain.errors import StorageUnavailable
from xrouter.domain.keys import GatewayKey

_MAX_PART_CHARS = 128
"""Ids are `key_` + 16 hex, hashes 64 hex: anything longer (or with a brace) is not ours."""

# KEYS: record, new hash index, id set, old hash index (the new one when there is none).
# ARGV: record, id, changes channel. The old index is deleted only while it still names this
# key. The change is published in the same script, so every process's key cache
# (key_cache.py) hears of it the moment it is made.
_SAVE = """
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
if KEYS[4] ~= KEYS[2] and redis.call('GET', KEYS[4]) == ARGV[2] then
    redis.call('DEL', KEYS[4])
end
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""

# KEYS: hash index. ARGV: the record keys' prefix. The record lives on the same slot (same
# hash tag), so following the index inside the script is cluster safe.
_FIND = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. id)
"""

# KEYS: id set. ARGV: the record keys' prefix. Every record, in no particular order.
_LIST = """
local records = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local record = redis.call('GET', ARGV[1] .. id)
    if record then records[#records + 1] = record end
end
return records
"""


class RedisKeyStore:
    """Implements the KeyStore port on the process's SharedRedis (timeouts, breaker)."""

    def __init__(self, redis: SharedRedis, *, key_prefix: str = "xrouter") -> None:
        check_key_prefix(key_prefix)
        self._redis = redis
        base = f"{key_prefix}:{{keys}}:"
        self._id_prefix = base + "id:"
        self._hash_prefix = base + "hash:"
        self._ids = base + "ids"
        self.changes_channel = f"{key_prefix}:keys:changed"
        """Every save publishes the key's id here (revocation, rotation, a new limit)."""
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(GatewayKey).decode
        self._scripts = {source: RedisScript(redis, source) for source in (_SAVE, _FIND, _LIST)}

    def __repr__(self) -> str:
        return f"RedisKeyStore({self._redis!r})"

    @property
    def writable(self) -> bool:
        return True

    async def find(self, key_hash: str) -> GatewayKey | None:
        if not _usable(key_hash):
            return None
        keys = [self._hash_prefix + key_hash]
        record = await self._run("find a gateway key", _FIND, keys, [self._id_prefix])
        if record is None:
            return None
        key = self._decode(record)
        # The index may lag a save that did not name the old hash: the record decides.
        return key if key.hash == key_hash else None

    async def get(self, key_id: str) -> GatewayKey | None:
        if not _usable(key_id):
            return None
        record = await self._command("read a gateway key", "GET", self._id_prefix + key_id)
        return None if record is None else self._decode(record)

    async def list_keys(self) -> list[GatewayKey]:
        records = await self._run("list gateway keys", _LIST, [self._ids], [self._id_prefix])
        keys = [self._decode(record) for record in records]
        return sorted(keys, key=lambda key: (key.created_at, key.id))

    async def save(self, key: GatewayKey, *, replaces_hash: str | None = None) -> None:
        if not (_usable(key.id) and _usable(key.hash)):
            raise ValueError(f"key id {key.id[:64]!r} or its hash cannot name a Redis key")
        if replaces_hash is None:
            # Not named by the caller: the stored record still knows its hash.
            previous = await self.get(key.id)
            replaces_hash = previous.hash if previous is not None else None
        new_index = self._hash_prefix + key.hash
        old_index = (
            self._hash_prefix + replaces_hash
            if replaces_hash is not None and _usable(replaces_hash)
            else new_index
        )
        keys = [self._id_prefix + key.id, new_index, self._ids, old_index]
        await self._run(
            "save a gateway key",
            _SAVE,
            keys,
            [self._encode(key), key.id, self.changes_channel],
        )

    async def start(self) -> None:
        """No background work: every find reads Redis (key_cache.py caches in front)."""

    async def aclose(self) -> None:
        """Nothing of its own: the SharedRedis client is closed by its owner."""

    # -- internals -----------------------------------------------------------------------

    async def _run(self, what: str, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await self._scripts[source].run(what, keys, args)
        except RedisUnavailable as exc:
            raise _unavailable(exc) from None

    async def _command(self, what: str, *command: Arg) -> Any:
        try:
            return await run_command(self._redis, what, *command)
        except RedisUnavailable as exc:
            raise _unavailable(exc) from None


def _usable(part: str) -> bool:
    return 0 < len(part) <= _MAX_PART_CHARS and "{" not in part and "}" not in part


def _unavailable(exc: RedisUnavailable) -> StorageUnavailable:
    return StorageUnavailable(f"The key store (Redis) is unavailable: {exc}")
