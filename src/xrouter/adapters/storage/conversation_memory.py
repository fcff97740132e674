"""In-memory conversation store: one process, bounded by count and by bytes (least recently
used evicted first), every conversation expiring after the TTL from its last write.

Good for a single worker and for tests; several workers or instances need the Redis store
(conversation_redis.py), as for responses. Items are kept encoded (conversation_codec.py), in
an insertion-ordered dict from id to bytes: order for paging, the id for one item.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from xrouter.adapters.storage.conversation_codec import ConversationCodec
from xrouter.application.ports import ConversationFull, DuplicateItem, ItemsPage, UnknownItem
from xrouter.domain.conversations import Conversation
from xrouter.domain.responses import InputItem


class _Record:
    """One conversation: its encoded form, its items, what it costs, when it expires."""

    __slots__ = ("expires_at", "items", "meta", "owner", "size")

    def __init__(self, meta: bytes, owner: str | None, expires_at: float) -> None:
        self.meta = meta
        self.owner = owner
        self.expires_at = expires_at
        self.items: dict[str, bytes] = {}
        self.size = len(meta)


class InMemoryConversationStore:
    """Implements the ConversationStore port in this process's memory."""

    def __init__(
        self,
        max_conversations: int = 10_000,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        ttl_s: float = 30 * 24 * 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_conversations < 1 or max_bytes < 1:
            raise ValueError("max_conversations and max_bytes must be at least 1")
        self._max_conversations = max_conversations
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._codec = ConversationCodec()
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """Bytes of encoded conversations and items held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._records)

    async def create(
        self, conversation: Conversation, items: list[InputItem], *, owner: str | None
    ) -> None:
        self._drop(conversation.id)
        record = _Record(
            self._codec.encode_meta(conversation, owner), owner, self._monotonic() + self._ttl_s
        )
        self._records[conversation.id] = record
        self._bytes += record.size
        self._add(record, items)
        self._evict()

    async def get(self, conversation_id: str, *, owner: str | None = None) -> Conversation | None:
        record = self._live(conversation_id, owner)
        return None if record is None else self._codec.decode_meta(record.meta)[1]

    async def set_metadata(
        self, conversation_id: str, metadata: dict[str, str], *, owner: str | None = None
    ) -> Conversation | None:
        record = self._live(conversation_id, owner)
        if record is None:
            return None
        found_owner, conversation = self._codec.decode_meta(record.meta)
        updated = Conversation(
            id=conversation.id, created_at=conversation.created_at, metadata=metadata
        )
        meta = self._codec.encode_meta(updated, found_owner)
        self._resize(record, len(meta) - len(record.meta))
        record.meta = meta
        self._touch(record)
        return updated

    async def delete(self, conversation_id: str, *, owner: str | None = None) -> bool:
        if self._live(conversation_id, owner) is None:
            return False
        return self._drop(conversation_id)

    async def append(
        self,
        conversation_id: str,
        items: list[InputItem],
        *,
        max_items: int,
        owner: str | None = None,
    ) -> bool:
        record = self._live(conversation_id, owner)
        if record is None:
            return False
        if len(record.items) + len(items) > max_items:
            raise ConversationFull(len(record.items))
        for item in items:
            if item.id in record.items:
                raise DuplicateItem(item.id)
        self._add(record, items)
        self._touch(record)
        self._evict()
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
        record = self._live(conversation_id, owner)
        if record is None:
            return None
        ids = list(record.items)
        if order == "desc":
            ids.reverse()
        start = 0
        if after is not None:
            try:
                start = ids.index(after) + 1
            except ValueError:
                raise UnknownItem(after) from None
        page = ids[start : start + limit]
        decode = self._codec.decode_item
        return ItemsPage(
            items=[decode(record.items[i]) for i in page], has_more=len(ids) - start > limit
        )

    async def all_items(
        self, conversation_id: str, *, owner: str | None = None
    ) -> list[InputItem] | None:
        record = self._live(conversation_id, owner)
        if record is None:
            return None
        decode = self._codec.decode_item
        return [decode(data) for data in record.items.values()]

    async def get_item(
        self, conversation_id: str, item_id: str, *, owner: str | None = None
    ) -> InputItem | None:
        record = self._live(conversation_id, owner)
        if record is None:
            return None
        data = record.items.get(item_id)
        if data is None:
            raise UnknownItem(item_id)
        return self._codec.decode_item(data)

    async def delete_item(
        self, conversation_id: str, item_id: str, *, owner: str | None = None
    ) -> Conversation | None:
        record = self._live(conversation_id, owner)
        if record is None:
            return None
        data = record.items.pop(item_id, None)
        if data is None:
            raise UnknownItem(item_id)
        self._resize(record, -len(data))
        self._touch(record)
        return self._codec.decode_meta(record.meta)[1]

    async def aclose(self) -> None:
        self._records.clear()
        self._bytes = 0

    # -- internals -----------------------------------------------------------------------

    def _live(self, conversation_id: str, owner: str | None) -> _Record | None:
        """The record when it exists, has not expired and is `owner`'s (anyone's when
        `owner` is None). Another owner's is left as it was, not even made recent."""
        record = self._records.get(conversation_id)
        if record is None:
            return None
        if record.expires_at <= self._monotonic():
            self._drop(conversation_id)
            return None
        if owner is not None and record.owner != owner:
            return None
        self._records.move_to_end(conversation_id)
        return record

    def _add(self, record: _Record, items: list[InputItem]) -> None:
        encode = self._codec.encode_item
        added = 0
        for item in items:
            data = encode(item)
            record.items[item.id or ""] = data
            added += len(data)
        self._resize(record, added)

    def _resize(self, record: _Record, delta: int) -> None:
        record.size += delta
        self._bytes += delta

    def _touch(self, record: _Record) -> None:
        """A write keeps the conversation for another TTL."""
        record.expires_at = self._monotonic() + self._ttl_s

    def _drop(self, conversation_id: str) -> bool:
        record = self._records.pop(conversation_id, None)
        if record is None:
            return False
        self._bytes -= record.size
        return True

    def _evict(self) -> None:
        """Expired conversations at the front first, then the least recently used until both
        bounds hold."""
        now = self._monotonic()
        records = self._records
        while records:
            oldest = next(iter(records.values()))
            over = len(records) > self._max_conversations or self._bytes > self._max_bytes
            if not over and oldest.expires_at > now:
                return
            records.popitem(last=False)
            self._bytes -= oldest.size
