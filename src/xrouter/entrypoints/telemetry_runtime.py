"""The process's telemetry, built from the settings and the OTEL_* environment, and its
background work: writing this worker's metrics for the others (XR_METRICS_DIR), pushing
metrics over OTLP, and flushing spans at shutdown.

Nothing here runs on the request path: the request path only touches the instruments
(adapters/telemetry/gateway_metrics.py) and the spans (adapters/telemetry/tracing.py).
Snapshots are taken on the event loop (the instruments are not thread-safe, and a snapshot is
cheap); encoding and network I/O run in a thread, so a slow or dead collector never holds the
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from xrouter.adapters.telemetry.gateway_metrics import GatewayMetrics
from xrouter.adapters.telemetry.metric_files import MetricFiles
from xrouter.adapters.telemetry.metrics import MetricsRegistry, MetricsSnapshot, merge
from xrouter.adapters.telemetry.prometheus import render_prometheus
from xrouter.adapters.telemetry.tracing import SpanProcessor, Tracer, sampler_from_env
from xrouter.entrypoints.config import Settings
from xrouter.entrypoints.env_fields import ConfigError
from xrouter.entrypoints.telemetry_config import (
    TelemetryChoice,
    check_protocols,
    service_resource,
    telemetry_choice,
)

log = logging.getLogger("xrouter.telemetry")

SHUTDOWN_FLUSH_S = 5.0
"""Longest shutdown waits for the last spans and metrics to reach the collector."""
DEFAULT_EXPORT_INTERVAL_MS = 60_000


class Telemetry:
    """Metrics (None with XR_METRICS=false), the tracer (None without a trace exporter), and
    their background work (`start` / `aclose`)."""

    def __init__(
        self,
        settings: Settings,
        choice: TelemetryChoice,
        environ: Mapping[str, str],
        *,
        processor: SpanProcessor | None = None,
    ) -> None:
        """`processor` replaces the OTLP export of spans (tests: an in-memory one; an
        embedding application: its own) and turns tracing on."""
        self.choice = choice
        self.metrics = GatewayMetrics(MetricsRegistry()) if settings.metrics else None
        self.started_ns = time.time_ns()
        self._files = (
            MetricFiles(settings.metrics_dir)
            if self.metrics is not None and settings.metrics_dir
            else None
        )
        self._flush_s = settings.metrics_flush_s
        self._environ = environ
        self._tasks: list[asyncio.Task[None]] = []
        check_protocols(environ, choice)
        try:
            self.processor: SpanProcessor | None = processor or (
                _span_exporting(choice, environ) if choice.traces else None
            )
            self.tracer = (
                Tracer(sampler_from_env(environ), self.processor)
                if self.processor is not None
                else None
            )
            self._metric_exporter = (
                _otlp_metric_exporter() if choice.otlp_metrics and self.metrics else None
            )
            self._export_interval_s = _interval_ms(environ) / 1000
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    # -- what /metrics shows --------------------------------------------------------------

    def snapshot(self) -> MetricsSnapshot:
        """This worker's metrics and, with several workers, every other worker's last ones."""
        assert self.metrics is not None
        own = self.metrics.registry.snapshot()
        if self._files is None:
            return own
        self._files.write(own)
        return merge([own, *self._files.others()])

    def prometheus_text(self) -> bytes:
        return render_prometheus(self.snapshot())

    def observe(
        self,
        name: str,
        description: str,
        kind: str,
        labels: tuple[str, ...],
        read: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
        unit: str = "1",
    ) -> None:
        """A gauge or counter read only when metrics are collected."""
        if self.metrics is not None:
            self.metrics.registry.observe(name, description, unit, kind, labels, read)  # type: ignore[arg-type]

    # -- background work ------------------------------------------------------------------

    async def start(self) -> None:
        if self._files is not None:
            self._tasks.append(asyncio.create_task(self._write_files(), name="metrics-files"))
        if self._metric_exporter is not None:
            self._tasks.append(asyncio.create_task(self._push_metrics(), name="metrics-otlp"))
        log.info(
            "telemetry: metrics %s; traces %s%s",
            "on (GET /metrics)" if self.metrics is not None else "off",
            "exported over OTLP" if self.tracer is not None else "off (no OTLP endpoint)",
            "; metrics pushed over OTLP" if self._metric_exporter is not None else "",
        )

    async def _write_files(self) -> None:
        assert self._files is not None and self.metrics is not None
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                self._files.write(self.metrics.registry.snapshot())
            except OSError as exc:
                log.warning("could not write this worker's metrics file: %s", exc)

    async def _push_metrics(self) -> None:
        while True:
            await asyncio.sleep(self._export_interval_s)
            await self._export_metrics()

    async def _export_metrics(self) -> None:
        exporter = self._metric_exporter
        if exporter is None or self.metrics is None:
            return
        from xrouter.adapters.telemetry.otlp_metrics import to_metrics_data

        data = to_metrics_data(
            self.metrics.registry.snapshot(),
            service_resource(self.choice),  # type: ignore[arg-type]
            "xrouter",
            self.started_ns,
            time.time_ns(),
        )
        try:
            result = await asyncio.to_thread(exporter.export, data)
        except Exception as exc:  # the exporter's own failure: logged, never raised
            log.warning("OTLP metrics export failed: %s", type(exc).__name__)
            return
        if getattr(result, "name", "SUCCESS") != "SUCCESS":
            log.warning("OTLP metrics export failed; the collector did not accept the batch")

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._metric_exporter is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                    await self._export_metrics()
            await asyncio.to_thread(self._metric_exporter.shutdown)
        if self.processor is not None:
            await asyncio.to_thread(self.processor.shutdown, SHUTDOWN_FLUSH_S)


def _interval_ms(environ: Mapping[str, str]) -> float:
    raw = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    if not raw:
        return DEFAULT_EXPORT_INTERVAL_MS
    try:
        value = float(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(
            f"OTEL_METRIC_EXPORT_INTERVAL={raw!r} is not valid: expected milliseconds > 0."
        )
    return value


def _span_exporting(choice: TelemetryChoice, environ: Mapping[str, str]) -> SpanProcessor:
    """The batch export of spans over OTLP. Imported here: the OpenTelemetry SDK it needs
    costs startup time a gateway that traces nothing should not pay."""
    from xrouter.adapters.telemetry.span_export import (
        BatchSpanProcessor,
        batch_settings_from_env,
        otlp_span_exporter,
    )

    return BatchSpanProcessor(
        otlp_span_exporter(environ),
        service_resource(choice),  # type: ignore[arg-type]
        **batch_settings_from_env(environ),
    )


def _otlp_metric_exporter() -> Any:
    """The OTLP/HTTP metric exporter (reads OTEL_EXPORTER_OTLP_* itself)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


def observe_gateway_state(
    telemetry: Telemetry,
    *,
    inflight: Callable[[], int],
    limiters: Iterable[tuple[str, Any]],
    store: object,
    analytics: object,
) -> None:
    """Gauges and counters kept by other objects, read when metrics are collected: requests
    in flight, upstream calls in flight and queued per provider, store failures, analytics
    records dropped, spans dropped or not exported."""
    limiters = list(limiters)

    def per_provider(attribute: str) -> Callable[[], list[tuple[tuple[str, ...], float]]]:
        return lambda: [((name,), float(getattr(limiter, attribute))) for name, limiter in limiters]

    def counters(owner: object, *names: str) -> Callable[[], list[tuple[tuple[str, ...], float]]]:
        return lambda: [
            ((name,), float(getattr(owner, name))) for name in names if hasattr(owner, name)
        ]

    telemetry.observe(
        "xrouter.requests.inflight",
        "Requests admitted and not yet terminal (the XR_MAX_INFLIGHT limit counts these).",
        "gauge",
        (),
        lambda: [((), float(inflight()))],
        unit="{request}",
    )
    telemetry.observe(
        "xrouter.upstream.inflight",
        "Upstream calls of this process holding an in-flight slot, by provider.",
        "gauge",
        ("provider",),
        per_provider("inflight"),
        unit="{request}",
    )
    telemetry.observe(
        "xrouter.upstream.queued",
        "Upstream calls waiting for an in-flight slot, by provider.",
        "gauge",
        ("provider",),
        per_provider("waiting"),
        unit="{request}",
    )
    telemetry.observe(
        "xrouter.store.failures",
        "Responses not stored: over the record size limit (not_stored) or lost to an outage "
        "(failed_writes).",
        "counter",
        ("kind",),
        counters(store, "not_stored", "failed_writes"),
        unit="{response}",
    )
    telemetry.observe(
        "xrouter.analytics.records",
        "Analytics records dropped (queue full) or lost (sink unavailable).",
        "counter",
        ("kind",),
        counters(analytics, "dropped", "failed"),
        unit="{record}",
    )
    processor = telemetry.processor
    if processor is not None:
        telemetry.observe(
            "xrouter.spans",
            "Spans exported, dropped (export queue full) or failed (collector unavailable).",
            "counter",
            ("kind",),
            counters(processor, "exported", "dropped", "failed"),
            unit="{span}",
        )


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse, before any worker starts, an OTEL_* value XRouter cannot use (ConfigError
    naming the variable), without building exporters."""
    choice = telemetry_choice(environ)
    check_protocols(environ, choice)
    try:
        if choice.traces:
            from xrouter.adapters.telemetry.span_export import batch_settings_from_env

            sampler_from_env(environ)
            batch_settings_from_env(environ)
        if choice.otlp_metrics:
            _interval_ms(environ)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
