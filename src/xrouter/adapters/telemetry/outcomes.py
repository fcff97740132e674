"""The engine's one `OutcomeSink`, fanned out: the metrics first (in memory, cheap), then the
sinks that keep records (analytics, the in-memory usage ledger)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from xrouter.adapters.telemetry.gateway_metrics import GatewayMetrics
from xrouter.application.outcome import RequestOutcome
from xrouter.application.ports import OutcomeSink

log = logging.getLogger("xrouter.telemetry")


class TelemetryOutcomes:
    __slots__ = ("_metrics", "_sinks")

    def __init__(self, metrics: GatewayMetrics | None, sinks: Sequence[OutcomeSink]) -> None:
        self._metrics = metrics
        self._sinks = tuple(sinks)

    def record(self, outcome: RequestOutcome) -> None:
        if self._metrics is not None:
            try:
                self._metrics.observe_outcome(outcome)
            except Exception:  # metrics must never fail a request
                log.exception("could not record the metrics of request %s", outcome.request_id)
        for sink in self._sinks:
            sink.record(outcome)
