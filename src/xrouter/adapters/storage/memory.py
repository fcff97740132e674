"""In-memory response store: one process, bounded by bytes and by count, least recently used
evicted first, every record expiring after the TTL.

Good for a single worker and for tests. Several workers or instances need the Redis store:
each process would otherwise see only its own responses (`xrouter serve` refuses to start
several workers on this store).

Records are kept encoded (codec.py), each as a tuple of bytes and strings. Such a tuple holds
no reference the garbage collector has to follow, and CPython stops tracking it, so a full
store adds nothing to a collection's walk: with the decoded object graphs kept before, the
latency tails grew as the store filled (docs/benchmarks.md, "Issue 10").
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from xrouter.adapters.storage.codec import StoredCodec
from xrouter.application.ports import ItemsPage, UnknownItem
from xrouter.domain.responses import Response, StoredResponse

log = logging.getLogger("xrouter.storage")

# (expires_at, size, encoded response, encoded items, item ids, owner). The owner is also in
# the encoded response; kept apart too so a check needs no decoding.
_Record = tuple[float, int, bytes, tuple[bytes, ...], tuple[str, ...], str | None]


def _setting_name(name: str) -> str:
    return name


class InMemoryResponseStore:
    """Implements the ResponseStore port in this process's memory."""

    def __init__(
        self,
        max_responses: int = 10_000,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        max_record_bytes: int = 16 * 1024 * 1024,
        ttl_s: float = 30 * 24 * 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
        setting_names: Callable[[str], str] = _setting_name,
    ) -> None:
        """`setting_names`: the operator's name of a setting (`max_record_bytes` ->
        its variable), for the log line that says which limit acted."""
        if max_responses < 1 or max_bytes < 1:
            raise ValueError("max_responses and max_bytes must be at least 1")
        self._max_responses = max_responses
        self._max_bytes = max_bytes
        self._max_record_bytes = min(max_record_bytes, max_bytes)
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._setting_names = setting_names
        self._codec = StoredCodec()
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._bytes = 0
        self.not_stored = 0
        """Responses refused for their size (the metric of the record size limit)."""

    @property
    def size_bytes(self) -> int:
        """Bytes of encoded records held now."""
        return self._bytes

    async def save(self, stored: StoredResponse) -> bool:
        response_id = stored.response.id
        encoded = self._codec.encode_response(stored.response, stored.owner)
        items = tuple(self._codec.encode_item(item) for item in stored.input_items)
        size = len(encoded) + sum(len(item) for item in items)
        if size > self._max_record_bytes:
            self.not_stored += 1
            setting = self._setting_names(
                "store_max_record_bytes"
                if self._max_record_bytes < self._max_bytes
                else "store_max_bytes"
            )
            log.warning(
                "response %s not stored: %d bytes encoded, over the limit of %d set by %s",
                response_id,
                size,
                self._max_record_bytes,
                setting,
            )
            self._drop(response_id)  # an older version of it must not be served instead
            return False
        ids = tuple(item.id or "" for item in stored.input_items)
        self._drop(response_id)
        expires_at = self._monotonic() + self._ttl_s
        self._records[response_id] = (expires_at, size, encoded, items, ids, stored.owner)
        self._bytes += size
        self._evict()
        return True

    async def get(self, response_id: str, *, owner: str | None = None) -> StoredResponse | None:
        record = self._live(response_id, owner)
        if record is None:
            return None
        return self._codec.decode_stored(record[2], record[3])

    async def get_response(self, response_id: str, *, owner: str | None = None) -> Response | None:
        record = self._live(response_id, owner)
        return None if record is None else self._codec.decode_record(record[2])[1]

    async def input_items(
        self,
        response_id: str,
        *,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
        owner: str | None = None,
    ) -> ItemsPage | None:
        record = self._live(response_id, owner)
        if record is None:
            return None
        items, ids = record[3], record[4]
        positions = range(len(items)) if order == "asc" else range(len(items) - 1, -1, -1)
        if after is not None:
            try:
                start = ids.index(after)
            except ValueError:
                raise UnknownItem(after) from None
            positions = range(start + 1, len(items)) if order == "asc" else range(start - 1, -1, -1)
        page = [self._codec.decode_item(items[i]) for i in positions[:limit]]
        return ItemsPage(items=page, has_more=len(positions) > limit)

    async def delete(self, response_id: str, *, owner: str | None = None) -> bool:
        if self._live(response_id, owner) is None:
            return False
        return self._drop(response_id)

    async def aclose(self) -> None:
        self._records.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    # -- internals -----------------------------------------------------------------------

    def _live(self, response_id: str, owner: str | None) -> _Record | None:
        """The record when it exists, has not expired and is `owner`'s (any owner's when
        `owner` is None). Another owner's record is left as it was, not even made recent:
        a caller must not be able to tell it from an unknown one, nor change its fate."""
        record = self._records.get(response_id)
        if record is None:
            return None
        if record[0] <= self._monotonic():
            self._drop(response_id)
            return None
        if owner is not None and record[5] != owner:
            return None
        self._records.move_to_end(response_id)
        return record

    def _drop(self, response_id: str) -> bool:
        record = self._records.pop(response_id, None)
        if record is None:
            return False
        self._bytes -= record[1]
        return True

    def _evict(self) -> None:
        """Expired records first (oldest first, while they are at the front), then the least
        recently used until both bounds hold."""
        now = self._monotonic()
        records = self._records
        while records:
            oldest = next(iter(records.values()))
            over = len(records) > self._max_responses or self._bytes > self._max_bytes
            if not over and oldest[0] > now:
                return
            records.popitem(last=False)
            self._bytes -= oldest[1]
