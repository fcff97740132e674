"""Usage sinks: where the engine reports each terminal request's token usage."""

from __future__ import annotations

from collections import deque

from msgspec import Struct

from xrouter.domain.responses import Usage


class UsageRecord(Struct, frozen=True, gc=False):
    """gc=False: strings, numbers and a Usage (itself untracked) cannot form a cycle, and a
    full ledger would otherwise add 10,000 objects to every full collection's walk."""

    request_id: str
    model: str
    usage: Usage
    status: str
    cost: float | None = None


class InMemoryUsageLedger:
    """Keeps the latest usage records in a bounded deque (O(1), never blocks the request).
    A durable sink (Redis, a billing queue) replaces it in a multi-instance deployment."""

    def __init__(self, max_records: int = 10_000) -> None:
        self.records: deque[UsageRecord] = deque(maxlen=max_records)

    def record(
        self, request_id: str, model: str, usage: Usage, status: str, cost: float | None
    ) -> None:
        self.records.append(UsageRecord(request_id, model, usage, status, cost))

    def for_request(self, request_id: str) -> list[UsageRecord]:
        return [record for record in self.records if record.request_id == request_id]
