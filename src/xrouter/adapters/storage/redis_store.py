"""Redis response store: stored responses shared by every worker and instance.

Keys of one response share the hash tag `{<response id>}`, so a Redis Cluster keeps them on
one slot and every script below touches one slot (no CROSSSLOT):

    xr:{<id>}:r   the response, encoded (codec.py), without its input items
    xr:{<id>}:i   list of the input items, each encoded on its own
    xr:{<id>}:x   list of the input item ids, in the same order ('' for an item without one)
    xr:{<id>}:t   tombstone left by a delete (TOMBSTONE_S): a save that comes later, from a
                  generation that finished on another worker, must not bring it back
    xr:{<id>}:t:<owner>  the same, left by a delete of the gateway key `<owner>`: it refuses
                  only that key's save, so another key cannot cancel a response it does not
                  own by deleting its id before it is stored

Ownership (codec.py): the response blob starts with its owner's encoding, so the scripts
that must check the owner without returning the response (`input_items`, `delete`) compare
that prefix (GETRANGE: a few bytes, nothing decoded); the reads that return the response
check the decoded owner. Another owner's response is answered as an unknown one, and a
delete leaves it whole: the check and the delete are one script.

Every operation is one round trip: a Lua script (EVALSHA; loaded again after a Redis restart)
or a single command. On a plain Redis they go through SharedRedis's lean client (resp.py: about
a tenth of redis-py's CPU per command); on a cluster through redis-py's cluster client.
Scripts work the same on the plain and the cluster client (an async cluster pipeline cannot
run a transaction) and make each operation atomic, so a reader never sees one save's response
with another save's items. `input_items` finds
`after` in the id list (LPOS, in Redis) and reads only the requested page of the item list
(LRANGE over its range), so a long list is never shipped or decoded whole.

Every key gets the TTL (PX). A record whose encoding is over `max_record_bytes` is not stored
(any older copy is dropped): the caller still delivers the response, a warning names the
setting, and `not_stored` counts it. When Redis cannot answer (timeout, refused, breaker
open: SharedRedis) every method raises StorageUnavailable; failed saves are counted in
`failed_writes`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from xrouter.adapters.redis.connection import RedisUnavailable, SharedRedis
from xrouter.adapters.redis.hash_tags import check_key_prefix, tagged_base
from xrouter.adapters.redis.resp import Arg
from xrouter.adapters.redis.scripts import RedisScript, run_command
from xrouter.adapters.storage.codec import StoredCodec
from xrouter.application.ports import ItemsPage, UnknownItem
from xrouter.domain.errors import StorageUnavailable
from xrouter.domain.responses import Response, StoredResponse

log = logging.getLogger("xrouter.storage")

TOMBSTONE_S = 1800.0
"""How long a delete keeps a later save from storing the response again: longer than a
generation normally runs, so a response deleted (from another worker) while it was still
generating stays deleted when its generation ends."""

_CHUNK = 1000
"""Values handed to one RPUSH inside a script: Lua's unpack() has a stack limit (about 8,000
values), so a long list is pushed in chunks."""

# KEYS: response, items, item ids, tombstone, and for an owned response its owner's tombstone.
# ARGV: ttl_ms, item count n, response, the n items, then the n item ids ('' for none).
# Returns 1 when stored, 0 when a tombstone (a recent delete) refused it.
# Measured on 200 items of 500 bytes: one concatenated argument cut apart in Lua spares the
# client about 0.4 ms of packing but costs Redis about 0.35 ms more, and Redis's time is shared
# by every worker, so each item is its own argument. The ids are a list searched by LPOS (only
# paging with `after` searches), not a hash: that cut Redis's time per save from 0.70 to
# 0.41 ms (2,000 items: from 4.1 to 1.6 ms).
_SAVE = f"""
if redis.call('EXISTS', unpack(KEYS, 4)) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
if n > 0 then
    for first = 4, 3 + n, {_CHUNK} do
        local last = math.min(first + {_CHUNK} - 1, 3 + n)
        redis.call('RPUSH', KEYS[2], unpack(ARGV, first, last))
        redis.call('RPUSH', KEYS[3], unpack(ARGV, first + n, last + n))
    end
    redis.call('PEXPIRE', KEYS[2], ttl)
    redis.call('PEXPIRE', KEYS[3], ttl)
end
return 1
"""

# KEYS: response, items. Returns nil when unknown, else {response, {items...}}.
_GET = """
local response = redis.call('GET', KEYS[1])
if not response then return false end
return {response, redis.call('LRANGE', KEYS[2], 0, -1)}
"""

# KEYS: response, items, item ids. ARGV: has_after ('1'/'0'), after, limit, order, owner
# prefix ('' for no check). Returns {0} unknown response (or another owner's), {1} unknown
# `after`, else {2, has_more, items of the page...} in the order asked for. Only the page's
# range of the list is read.
_PAGE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local owner = ARGV[5]
if owner ~= '' and redis.call('GETRANGE', KEYS[1], 0, #owner - 1) ~= owner then return {0} end
local n = redis.call('LLEN', KEYS[2])
local limit = tonumber(ARGV[3])
local asc = ARGV[4] == 'asc'
local from
if ARGV[1] == '1' then
    local index = redis.call('LPOS', KEYS[3], ARGV[2])
    if not index then return {1} end
    if asc then from = tonumber(index) + 1 else from = tonumber(index) - 1 end
elseif asc then
    from = 0
else
    from = n - 1
end
local result = {2, 0}
local remaining
if asc then remaining = n - from else remaining = from + 1 end
if remaining <= 0 then return result end
if remaining > limit then result[2] = 1 end
if limit <= 0 then return result end
if asc then
    for _, item in ipairs(redis.call('LRANGE', KEYS[2], from, from + limit - 1)) do
        result[#result + 1] = item
    end
else
    local page = redis.call('LRANGE', KEYS[2], math.max(0, from - limit + 1), from)
    for k = #page, 1, -1 do result[#result + 1] = page[k] end
end
return result
"""

# KEYS: response, items, item ids, tombstone (the owner's, or everyone's when no owner is
# given). ARGV: tombstone_ms, owner prefix ('' for no check). Returns keys deleted: 0, and
# nothing touched, for another owner's response.
_DELETE = """
local owner = ARGV[2]
if owner ~= '' and redis.call('EXISTS', KEYS[1]) == 1
        and redis.call('GETRANGE', KEYS[1], 0, #owner - 1) ~= owner then
    return 0
end
local deleted = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
return deleted
"""


def _setting_name(name: str) -> str:
    return name


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisResponseStore:
    """Implements the ResponseStore port on the process's SharedRedis (timeouts, breaker)."""

    def __init__(
        self,
        redis: SharedRedis,
        *,
        ttl_s: float = 30 * 24 * 3600.0,
        max_record_bytes: int = 16 * 1024 * 1024,
        key_prefix: str = "xr",
        tombstone_s: float = TOMBSTONE_S,
        setting_names: Callable[[str], str] = _setting_name,
    ) -> None:
        """`setting_names`: the operator's name of a setting (`store_max_record_bytes` ->
        its variable), for the log line that says which limit acted."""
        check_key_prefix(key_prefix)
        self._redis = redis
        self._ttl_ms = _ms(ttl_s)
        self._tombstone_ms = _ms(tombstone_s)
        self._max_record_bytes = max_record_bytes
        self._prefix = key_prefix
        self._setting_names = setting_names
        self._codec = StoredCodec()
        self._save = RedisScript(redis, _SAVE)
        self._get = RedisScript(redis, _GET)
        self._page = RedisScript(redis, _PAGE)
        self._delete = RedisScript(redis, _DELETE)
        self.not_stored = 0
        """Responses refused for their size (the metric of the record size limit)."""
        self.failed_writes = 0
        """Saves that failed because Redis could not answer (the responses were delivered)."""

    def __repr__(self) -> str:
        return f"RedisResponseStore({self._redis!r})"

    async def save(self, stored: StoredResponse) -> bool:
        response_id = stored.response.id
        keys = self._keys(response_id)
        if keys is None:
            raise ValueError(f"response id {response_id[:64]!r} cannot name a Redis key")
        encoded = self._codec.encode_response(stored.response, stored.owner)
        items = [self._codec.encode_item(item) for item in stored.input_items]
        size = len(encoded) + sum(len(item) for item in items)
        if size > self._max_record_bytes:
            self.not_stored += 1
            log.warning(
                "response %s not stored: %d bytes encoded, over the limit of %d set by %s",
                response_id,
                size,
                self._max_record_bytes,
                self._setting_names("store_max_record_bytes"),
            )
            # An older version of it must not be served instead.
            await self._write(
                run_command(self._redis, "drop an oversized response", "DEL", *keys[:3])
            )
            return False
        args: list[Arg] = [self._ttl_ms, len(items), encoded, *items]
        args.extend([item.id or "" for item in stored.input_items])
        save_keys = keys if stored.owner is None else (*keys, _owner_tombstone(keys, stored.owner))
        if not await self._write(self._save.run("store a response", save_keys, args)):
            log.info("response %s not stored: it was deleted while it was generating", response_id)
            return False
        return True

    async def get(self, response_id: str, *, owner: str | None = None) -> StoredResponse | None:
        keys = self._keys(response_id)
        if keys is None:
            return None
        found = await self._read(self._get.run("read a stored response", keys[:2]))
        if found is None:
            return None
        stored = self._codec.decode_stored(found[0], found[1])
        return None if owner is not None and stored.owner != owner else stored

    async def get_response(self, response_id: str, *, owner: str | None = None) -> Response | None:
        keys = self._keys(response_id)
        if keys is None:
            return None
        encoded = await self._read(
            run_command(self._redis, "read a stored response", "GET", keys[0])
        )
        if encoded is None:
            return None
        found, response = self._codec.decode_record(encoded)
        return None if owner is not None and found != owner else response

    async def input_items(
        self,
        response_id: str,
        *,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
        owner: str | None = None,
    ) -> ItemsPage | None:
        keys = self._keys(response_id)
        if keys is None:
            return None
        args: list[Arg] = ["0" if after is None else "1", after or "", limit, order]
        args.append(b"" if owner is None else self._codec.owner_prefix(owner))
        found = await self._read(self._page.run("read stored input items", keys[:3], args))
        if found[0] == 0:
            return None
        if found[0] == 1:
            raise UnknownItem(after)
        decode = self._codec.decode_item
        return ItemsPage(items=[decode(item) for item in found[2:]], has_more=bool(found[1]))

    async def delete(self, response_id: str, *, owner: str | None = None) -> bool:
        keys = self._keys(response_id)
        if keys is None:
            return False
        what = "delete a stored response"
        if owner is None:
            delete = self._delete.run(what, keys, [self._tombstone_ms, b""])
        else:
            owned = (*keys[:3], _owner_tombstone(keys, owner))
            args: list[Arg] = [self._tombstone_ms, self._codec.owner_prefix(owner)]
            delete = self._delete.run(what, owned, args)
        return bool(await self._read(delete))

    async def aclose(self) -> None:
        """Nothing of its own: the SharedRedis client is closed by its owner (the container),
        since the catalog cache and the in-flight leases use it too."""

    # -- internals -----------------------------------------------------------------------

    def _keys(self, response_id: str) -> tuple[str, str, str, str] | None:
        """The response's keys, or None for an id that is not ours (hash_tags.py)."""
        base = tagged_base(self._prefix, response_id)
        if base is None:
            return None
        return base + "r", base + "i", base + "x", base + "t"

    async def _read(self, call: Awaitable[Any]) -> Any:
        """`call` (a script or command not yet awaited), StorageUnavailable for Redis's
        failure."""
        try:
            return await call
        except RedisUnavailable as exc:
            raise _unavailable(exc) from None

    async def _write(self, call: Awaitable[Any]) -> Any:
        """`_read` for a write: a failure counts in `failed_writes`."""
        try:
            return await call
        except RedisUnavailable as exc:
            self.failed_writes += 1
            raise _unavailable(exc) from None


def _owner_tombstone(keys: tuple[str, str, str, str], owner: str) -> str:
    """The tombstone a delete by `owner` leaves (same hash tag: only the first braces count)."""
    return f"{keys[3]}:{owner}"


def _unavailable(exc: RedisUnavailable) -> StorageUnavailable:
    return StorageUnavailable(
        f"The response store (Redis) is unavailable, and this request needs stored state: "
        f"{exc} Requests that need none (`store: false`, no `previous_response_id`) are "
        "still served."
    )
