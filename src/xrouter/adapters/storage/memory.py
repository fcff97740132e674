"""In-memory response store: one process, bounded, oldest evicted first.

Good for a single worker and for tests. Several workers or instances need the Redis store:
each process would otherwise see only its own responses.
"""

from __future__ import annotations

from collections import OrderedDict

from xrouter.domain.responses import StoredResponse


class InMemoryResponseStore:
    """Implements the ResponseStore port with an LRU-bounded dict."""

    def __init__(self, max_responses: int = 10_000) -> None:
        if max_responses < 1:
            raise ValueError("max_responses must be at least 1")
        self._max = max_responses
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    async def save(self, stored: StoredResponse) -> None:
        self._items[stored.response.id] = stored
        self._items.move_to_end(stored.response.id)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    async def get(self, response_id: str) -> StoredResponse | None:
        stored = self._items.get(response_id)
        if stored is not None:
            self._items.move_to_end(response_id)
        return stored

    async def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None

    def __len__(self) -> int:
        return len(self._items)
