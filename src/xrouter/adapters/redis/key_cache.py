"""Gateway keys cached in each process, dropped the moment they change anywhere.

Authenticating a request would otherwise cost a Redis round trip (the key store's find) on
every request. The cache keeps the records it found, by hash; every save in the Redis key
store (revoke, rotate, new limits) publishes the key's id on a channel in the same script,
and each process's subscriber drops that key at once.

Nothing is served from the cache unless the subscription is known to be up: not before
`start`, not while Redis is gone or the connection is being made again, so a missed message
can never let a revoked key through. The cache is emptied whenever the subscription is made
again, since messages may have been missed in between. A record read from Redis is cached
only when no change message arrived while it was being read (a change made during the read
may reach this process before the read's own answer). Expiry needs no message: the record's
`expires_at` is checked on every request (application/access.py).

Unknown hashes are not cached (a guess costs its round trip, and guesses must not fill
memory); the cache holds at most `max_keys` records and is emptied when full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from xrouter.adapters.redis.connection import SharedRedis
from xrouter.adapters.redis.key_store import RedisKeyStore
from xrouter.domain.keys import GatewayKey

log = logging.getLogger("xrouter.keys")

RESUBSCRIBE_S = 1.0
"""Wait before subscribing again after the subscription failed."""

HEARTBEAT_S = 1.0
"""With nothing heard for this long the listener pings; with no answer for as long again
the subscription counts as lost (a connection can die without a reset reaching us)."""

CLOSE_WAIT_S = 2.0
"""How long `aclose` waits for the listener to end after cancelling it."""


class CachedKeyStore:
    """A RedisKeyStore whose `find` answers from memory while the change channel is heard."""

    def __init__(self, store: RedisKeyStore, redis: SharedRedis, *, max_keys: int = 10_000) -> None:
        self._store = store
        self._redis = redis
        self._max_keys = max_keys
        self._by_hash: dict[str, GatewayKey] = {}
        self._changes = 0
        """Bumped on every change message and every (re)subscription."""
        self._live = False
        self._closing = False
        self._listener: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"CachedKeyStore({self._store!r}, cached={len(self._by_hash)}, live={self._live})"

    @property
    def writable(self) -> bool:
        return self._store.writable

    @property
    def live(self) -> bool:
        """Whether the change channel is subscribed (only then does the cache answer)."""
        return self._live

    def find_cached(self, key_hash: str) -> bool:
        """Whether a lookup of `key_hash` would be answered from memory now."""
        return self._live and key_hash in self._by_hash

    async def find(self, key_hash: str) -> GatewayKey | None:
        if self._live:
            cached = self._by_hash.get(key_hash)
            if cached is not None:
                return cached
        changes, was_live = self._changes, self._live
        key = await self._store.find(key_hash)
        if key is not None and was_live and self._live and changes == self._changes:
            if len(self._by_hash) >= self._max_keys:
                self._by_hash.clear()
            self._by_hash[key_hash] = key
        return key

    async def get(self, key_id: str) -> GatewayKey | None:
        return await self._store.get(key_id)

    async def list_keys(self) -> list[GatewayKey]:
        return await self._store.list_keys()

    async def save(self, key: GatewayKey, *, replaces_hash: str | None = None) -> None:
        await self._store.save(key, replaces_hash=replaces_hash)
        self._changed(key.id)  # at once here; other processes hear it on the channel

    async def start(self) -> None:
        """Subscribe to the change channel in the background; the cache answers once the
        subscription is confirmed."""
        if self._listener is None and not self._closing:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def aclose(self) -> None:
        self._closing = True
        self._live = False
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            # Bounded: a client library busy connecting may take its time to notice.
            await asyncio.wait({listener}, timeout=CLOSE_WAIT_S)
        await self._store.aclose()

    def _changed(self, key_id: str) -> None:
        self._changes += 1
        for key_hash in [h for h, key in self._by_hash.items() if key.id == key_id]:
            del self._by_hash[key_hash]

    def _stopping(self) -> bool:
        """A method, not the attribute: aclose sets it while the loop below awaits."""
        return self._closing

    async def _listen(self) -> None:
        while not self._stopping():
            pubsub: Any = None
            try:
                pubsub = self._redis.client.pubsub()
                await pubsub.subscribe(self._store.changes_channel)
                heard = time.monotonic()
                pinged = False
                while True:
                    message = await pubsub.get_message(timeout=HEARTBEAT_S / 2)
                    now = time.monotonic()
                    if message is None:
                        if now - heard < HEARTBEAT_S:
                            continue
                        if pinged:
                            raise ConnectionError("the change channel stopped answering pings")
                        await pubsub.ping()
                        pinged = True
                        heard = now
                        continue
                    heard, pinged = now, False
                    kind = message.get("type")
                    if kind == "subscribe":
                        self._changes += 1
                        self._by_hash.clear()  # what was missed before is gone with it
                        self._live = True
                    elif kind == "message":
                        data = message.get("data")
                        self._changed(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection or Redis failed: stop trusting the cache
                if self._live:
                    log.warning(
                        "lost the gateway keys' change channel (%s): keys are read from Redis "
                        "on every request until it is back",
                        type(exc).__name__,
                    )
                self._live = False
                self._by_hash.clear()
                if self._stopping():
                    return
                await asyncio.sleep(RESUBSCRIBE_S)
            finally:
                self._live = False
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
