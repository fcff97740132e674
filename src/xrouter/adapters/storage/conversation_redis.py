"""Redis conversation store: conversations shared by every worker and instance.

Keys of one conversation share the hash tag `{<conversation id>}` (ids are `conv_...`, so they
never meet a response's `{resp_...}` keys), and a Redis Cluster keeps them on one slot:

    xr:{<id>}:m   the conversation, encoded `[owner, conversation]` (conversation_codec.py)
    xr:{<id>}:o   list of its item ids, oldest first
    xr:{<id>}:h   hash from item id to the encoded item

Every operation is one round trip: a Lua script (EVALSHA, loaded again after a restart) or one
command, on the lean client for a plain Redis URL and redis-py's cluster client otherwise
(as redis_store.py). Scripts check the owner by the prefix of the conversation blob
(GETRANGE) and make each operation atomic: an append is all or none and never goes past the
item limit however many workers append at once. Every write gives all three keys the TTL
again, so a conversation lives for the TTL after its last write. A conversation deleted
while a turn was generating stays deleted: the turn's append finds no conversation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Literal

from xrouter.adapters.redis.connection import RedisUnavailable, SharedRedis
from xrouter.adapters.redis.hash_tags import check_key_prefix, tagged_base
from xrouter.adapters.redis.resp import Arg
from xrouter.adapters.redis.scripts import RedisScript, run_command
from xrouter.adapters.storage.conversation_codec import ConversationCodec
from xrouter.application.ports import ConversationFull, DuplicateItem, ItemsPage, UnknownItem
from xrouter.domain.conversations import Conversation
from xrouter.domain.errors import StorageUnavailable
from xrouter.domain.responses import InputItem

_CHUNK = 1000
"""Values handed to one Redis command inside a script: Lua's unpack() has a stack limit
(about 8,000 values), so long lists go in chunks."""

# The owner check every script starts with. ARGV[1]: the owner prefix ('' for no check).
# Returns from the script with 0 when the conversation is unknown or another owner's.
_OWNED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local owner = ARGV[1]
if owner ~= '' and redis.call('GETRANGE', KEYS[1], 0, #owner - 1) ~= owner then return 0 end
"""

# Pushes ARGV[first .. first+n-1] (ids) to KEYS[2] and the pairs (id, item) to KEYS[3]; the
# items are ARGV[first+n .. first+2n-1].
_PUSH = f"""
local function push(first, n)
    for from = first, first + n - 1, {_CHUNK} do
        local to = math.min(from + {_CHUNK} - 1, first + n - 1)
        redis.call('RPUSH', KEYS[2], unpack(ARGV, from, to))
        local pairs_ = {{}}
        for i = from, to do
            pairs_[#pairs_ + 1] = ARGV[i]
            pairs_[#pairs_ + 1] = ARGV[i + n]
        end
        redis.call('HSET', KEYS[3], unpack(pairs_))
    end
end
local function expire(ttl)
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
    redis.call('PEXPIRE', KEYS[3], ttl)
end
"""

# KEYS: m, o, h. ARGV: owner prefix (unused), ttl_ms, conversation blob, n, n ids, n items.
_CREATE = (
    _PUSH
    + """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
local n = tonumber(ARGV[4])
if n > 0 then push(5, n) end
expire(ARGV[2])
return 1
"""
)

# KEYS: m, o, h. ARGV: owner prefix, ttl_ms, new blob. Returns 1, or 0 (unknown).
_SET_META = (
    _OWNED
    + """
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
"""
)

# KEYS: m, o, h. ARGV: owner prefix. Returns 1 deleted, 0 unknown (nothing touched).
_DELETE = (
    _OWNED
    + """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"""
)

# KEYS: m, o, h. ARGV: owner prefix, ttl_ms, max_items, n, n ids, n items.
# Returns 0 unknown, {1} appended, {2, count} full, {3, id} duplicate id.
_APPEND = (
    _PUSH
    + _OWNED
    + """
local n = tonumber(ARGV[4])
local count = redis.call('LLEN', KEYS[2])
if count + n > tonumber(ARGV[3]) then return {2, count} end
for i = 5, 4 + n do
    if redis.call('HEXISTS', KEYS[3], ARGV[i]) == 1 then return {3, ARGV[i]} end
end
if n > 0 then push(5, n) end
expire(ARGV[2])
return {1}
"""
)

# KEYS: m, o, h. ARGV: owner prefix, has_after ('1'/'0'), after, limit, order.
# Returns 0 unknown, {1} unknown `after`, else {2, has_more, items of the page...} in the
# order asked for. Only the page's range of the id list is read.
_PAGE = (
    _OWNED
    + """
local n = redis.call('LLEN', KEYS[2])
local limit = tonumber(ARGV[4])
local asc = ARGV[5] == 'asc'
local from
if ARGV[2] == '1' then
    local index = redis.call('LPOS', KEYS[2], ARGV[3])
    if not index then return {1} end
    if asc then from = index + 1 else from = index - 1 end
elseif asc then
    from = 0
else
    from = n - 1
end
local result = {2, 0}
local remaining
if asc then remaining = n - from else remaining = from + 1 end
if remaining <= 0 or limit <= 0 then return result end
if remaining > limit then result[2] = 1 end
local ids
if asc then
    ids = redis.call('LRANGE', KEYS[2], from, from + limit - 1)
else
    local page = redis.call('LRANGE', KEYS[2], math.max(0, from - limit + 1), from)
    ids = {}
    for k = #page, 1, -1 do ids[#ids + 1] = page[k] end
end
for _, item in ipairs(redis.call('HMGET', KEYS[3], unpack(ids))) do
    result[#result + 1] = item
end
return result
"""
)

# KEYS: m, o, h. ARGV: owner prefix. Returns 0 unknown, else {2, every item oldest first}.
_ALL = (
    _OWNED
    + f"""
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
local result = {{2}}
for from = 1, #ids, {_CHUNK} do
    local to = math.min(from + {_CHUNK} - 1, #ids)
    for _, item in ipairs(redis.call('HMGET', KEYS[3], unpack(ids, from, to))) do
        result[#result + 1] = item
    end
end
return result
"""
)

# KEYS: m, o, h. ARGV: owner prefix, item id. Returns 0 unknown, {1} unknown item, {2, item}.
_GET_ITEM = (
    _OWNED
    + """
local item = redis.call('HGET', KEYS[3], ARGV[2])
if not item then return {1} end
return {2, item}
"""
)

# KEYS: m, o, h. ARGV: owner prefix, ttl_ms, item id. Returns 0 unknown, {1} unknown item,
# {2, conversation blob}.
_DELETE_ITEM = (
    _OWNED
    + """
if redis.call('HDEL', KEYS[3], ARGV[3]) == 0 then return {1} end
redis.call('LREM', KEYS[2], 1, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {2, redis.call('GET', KEYS[1])}
"""
)

_SCRIPTS = (_CREATE, _SET_META, _DELETE, _APPEND, _PAGE, _ALL, _GET_ITEM, _DELETE_ITEM)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisConversationStore:
    """Implements the ConversationStore port on the process's SharedRedis (timeouts,
    breaker); raises StorageUnavailable when Redis cannot answer."""

    def __init__(
        self, redis: SharedRedis, *, ttl_s: float = 30 * 24 * 3600.0, key_prefix: str = "xr"
    ) -> None:
        check_key_prefix(key_prefix)
        self._redis = redis
        self._ttl_ms = _ms(ttl_s)
        self._prefix = key_prefix
        self._codec = ConversationCodec()
        self._scripts = {source: RedisScript(redis, source) for source in _SCRIPTS}

    def __repr__(self) -> str:
        return f"RedisConversationStore({self._redis!r})"

    async def create(
        self, conversation: Conversation, items: list[InputItem], *, owner: str | None
    ) -> None:
        keys = self._keys(conversation.id)
        if keys is None:
            raise ValueError(f"conversation id {conversation.id[:64]!r} cannot name a Redis key")
        args: list[Arg] = [b"", self._ttl_ms, self._codec.encode_meta(conversation, owner)]
        args.extend(self._item_args(items))
        await self._call("create a conversation", _CREATE, keys, args)

    async def get(self, conversation_id: str, *, owner: str | None = None) -> Conversation | None:
        keys = self._keys(conversation_id)
        if keys is None:
            return None
        meta = await self._owned_meta(keys, owner)
        return None if meta is None else meta[1]

    async def set_metadata(
        self, conversation_id: str, metadata: dict[str, str], *, owner: str | None = None
    ) -> Conversation | None:
        keys = self._keys(conversation_id)
        if keys is None:
            return None
        meta = await self._owned_meta(keys, owner)
        if meta is None:
            return None
        found, current = meta
        updated = Conversation(id=current.id, created_at=current.created_at, metadata=metadata)
        # The script checks the owner again: a delete in between leaves nothing to update.
        args: list[Arg] = [
            self._prefix_of(owner),
            self._ttl_ms,
            self._codec.encode_meta(updated, found),
        ]
        done = await self._call("update a conversation", _SET_META, keys, args)
        return updated if done else None

    async def delete(self, conversation_id: str, *, owner: str | None = None) -> bool:
        keys = self._keys(conversation_id)
        if keys is None:
            return False
        done = await self._call("delete a conversation", _DELETE, keys, [self._prefix_of(owner)])
        return bool(done)

    async def append(
        self,
        conversation_id: str,
        items: list[InputItem],
        *,
        max_items: int,
        owner: str | None = None,
    ) -> bool:
        keys = self._keys(conversation_id)
        if keys is None:
            return False
        args: list[Arg] = [self._prefix_of(owner), self._ttl_ms, max_items]
        args.extend(self._item_args(items))
        found = await self._call("add conversation items", _APPEND, keys, args)
        if found == 0:
            return False
        if found[0] == 2:
            raise ConversationFull(int(found[1]))
        if found[0] == 3:
            raise DuplicateItem(_text(found[1]))
        return True

    async def items(
        self,
        conversation_id: str,
        *,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
        owner: str | None = None,
    ) -> ItemsPage | None:
        keys = self._keys(conversation_id)
        if keys is None:
            return None
        args: list[Arg] = [
            self._prefix_of(owner),
            "0" if after is None else "1",
            after or "",
            limit,
            order,
        ]
        found = await self._call("read conversation items", _PAGE, keys, args)
        if found == 0:
            return None
        if found[0] == 1:
            raise UnknownItem(after)
        decode = self._codec.decode_item
        return ItemsPage(items=[decode(item) for item in found[2:]], has_more=bool(found[1]))

    async def all_items(
        self, conversation_id: str, *, owner: str | None = None
    ) -> list[InputItem] | None:
        keys = self._keys(conversation_id)
        if keys is None:
            return None
        found = await self._call("read conversation items", _ALL, keys, [self._prefix_of(owner)])
        if found == 0:
            return None
        decode = self._codec.decode_item
        return [decode(item) for item in found[1:]]

    async def get_item(
        self, conversation_id: str, item_id: str, *, owner: str | None = None
    ) -> InputItem | None:
        keys = self._keys(conversation_id)
        if keys is None:
            return None
        args: list[Arg] = [self._prefix_of(owner), item_id]
        found = await self._call("read a conversation item", _GET_ITEM, keys, args)
        if found == 0:
            return None
        if found[0] == 1:
            raise UnknownItem(item_id)
        return self._codec.decode_item(found[1])

    async def delete_item(
        self, conversation_id: str, item_id: str, *, owner: str | None = None
    ) -> Conversation | None:
        keys = self._keys(conversation_id)
        if keys is None:
            return None
        args: list[Arg] = [self._prefix_of(owner), self._ttl_ms, item_id]
        found = await self._call("delete a conversation item", _DELETE_ITEM, keys, args)
        if found == 0:
            return None
        if found[0] == 1:
            raise UnknownItem(item_id)
        return self._codec.decode_meta(found[1])[1]

    async def aclose(self) -> None:
        """Nothing of its own: the SharedRedis client is closed by the container."""

    # -- internals -----------------------------------------------------------------------

    def _keys(self, conversation_id: str) -> tuple[str, str, str] | None:
        """The conversation's keys, or None for an id that is not ours (hash_tags.py)."""
        base = tagged_base(self._prefix, conversation_id)
        if base is None:
            return None
        return base + "m", base + "o", base + "h"

    async def _owned_meta(
        self, keys: tuple[str, str, str], owner: str | None
    ) -> tuple[str | None, Conversation] | None:
        """The conversation and its stored owner (one GET); None when it is unknown or, with
        `owner` given, another owner's."""
        blob = await self._call("read a conversation", None, keys[:1], ())
        if blob is None:
            return None
        found, conversation = self._codec.decode_meta(blob)
        if owner is not None and found != owner:
            return None
        return found, conversation

    def _prefix_of(self, owner: str | None) -> bytes:
        return b"" if owner is None else self._codec.owner_prefix(owner)

    def _item_args(self, items: list[InputItem]) -> list[Arg]:
        """n, the n ids, the n encoded items."""
        encode = self._codec.encode_item
        args: list[Arg] = [len(items)]
        args.extend(item.id or "" for item in items)
        args.extend(encode(item) for item in items)
        return args

    async def _call(
        self, what: str, source: str | None, keys: Sequence[str], args: Sequence[Arg]
    ) -> Any:
        """One script (`source`), or a GET of `keys[0]` when `source` is None, in one round
        trip through the breaker; StorageUnavailable when Redis cannot answer."""
        call: Awaitable[Any] = (
            run_command(self._redis, what, "GET", keys[0])
            if source is None
            else self._scripts[source].run(what, keys, args)
        )
        try:
            return await call
        except RedisUnavailable as exc:
            raise StorageUnavailable(
                f"The conversation store (Redis) is unavailable: {exc} Requests that use no "
                "conversation and no stored response are still served."
            ) from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
