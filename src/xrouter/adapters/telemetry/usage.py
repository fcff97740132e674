"""The in-memory usage ledger: the latest request outcomes, for tests and embedding.

An `OutcomeSink` that keeps the most recent outcomes in a bounded deque (O(1), never blocks
the request). The analytics sinks (analytics.py) are what a deployment runs.
"""

from __future__ import annotations

from collections import deque

from xrouter.application.outcome import RequestOutcome


class InMemoryUsageLedger:
    def __init__(self, max_records: int = 10_000) -> None:
        self.records: deque[RequestOutcome] = deque(maxlen=max_records)

    def record(self, outcome: RequestOutcome) -> None:
        self.records.append(outcome)

    def for_request(self, request_id: str) -> list[RequestOutcome]:
        return [record for record in self.records if record.request_id == request_id]
