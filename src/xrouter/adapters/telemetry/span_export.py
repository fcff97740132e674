"""Span export off the request path: a bounded queue drained by one background thread.

The request path only appends to a deque (`on_end`): O(1), never blocks, never raises. A full
queue drops the span and counts it, because a slow or dead collector must cost requests
nothing. The thread converts our spans to the OTel SDK's `ReadableSpan` and hands batches to
an OTel `SpanExporter` (OTLP/HTTP in production), so the protobuf encoding, retries, TLS and
`OTEL_EXPORTER_OTLP_*` handling are the SDK's, not ours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypedDict

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.status import Status, StatusCode

from xrouter.adapters.telemetry.tracing import Span, SpanKind

if TYPE_CHECKING:
    from opentelemetry.util.types import Attributes

_log = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0
_SAMPLED = otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED)
_KINDS = {
    SpanKind.SERVER: otel_trace.SpanKind.SERVER,
    SpanKind.CLIENT: otel_trace.SpanKind.CLIENT,
    SpanKind.INTERNAL: otel_trace.SpanKind.INTERNAL,
}


class BatchSettings(TypedDict):
    max_queue_size: int
    schedule_delay_s: float
    max_export_batch_size: int
    export_timeout_s: float


def batch_settings_from_env(environ: Mapping[str, str]) -> BatchSettings:
    """`BatchSpanProcessor` keyword arguments from the standard `OTEL_BSP_*` variables.

    Durations are milliseconds, as the OTel spec defines them. A bad value raises ValueError
    naming the variable, so it becomes a startup error rather than a silent default.
    """
    settings = BatchSettings(
        schedule_delay_s=_positive_int(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
        max_queue_size=_positive_int(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048),
        max_export_batch_size=_positive_int(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        export_timeout_s=_positive_int(environ, "OTEL_BSP_EXPORT_TIMEOUT", 30000) / 1000,
    )
    if settings["max_export_batch_size"] > settings["max_queue_size"]:
        raise ValueError(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE must not exceed OTEL_BSP_MAX_QUEUE_SIZE "
            f"({settings['max_export_batch_size']} > {settings['max_queue_size']})"
        )
    return settings


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be a positive integer")
    return value


def otlp_span_exporter(environ: Mapping[str, str]) -> SpanExporter:
    """The OTLP/HTTP protobuf span exporter.

    The exporter reads `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT/HEADERS/TIMEOUT/COMPRESSION/
    CERTIFICATE` from the process environment itself; here we only refuse the protocols it does
    not speak. Imported lazily: a deployment without OTLP export never loads it.
    """
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol != "http/protobuf":
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: XRouter exports OTLP "
            "over http/protobuf only (gRPC is not included); point OTEL_EXPORTER_OTLP_ENDPOINT "
            "at the collector's OTLP/HTTP port, usually 4318"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class _RateLimitedWarning:
    """At most one WARNING a minute per kind of trouble; the rest are only counted."""

    def __init__(self) -> None:
        self._next_at = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next_at:
            return False
        self._next_at = now + _WARN_EVERY_S
        return True


class BatchSpanProcessor:
    """Queues ended spans and exports them in batches from a daemon thread.

    The thread starts on the first span (so a processor built before a fork is not left with a
    thread that only the parent has), wakes every `schedule_delay_s` or when a batch fills.
    `exported`, `failed` and `dropped` count spans, for the gateway's own metrics.

    `export_timeout_s` (OTEL_BSP_EXPORT_TIMEOUT) bounds how long `force_flush` and `shutdown`
    wait when not told otherwise; each export call is bounded by the exporter's own timeout
    (OTEL_EXPORTER_OTLP_TIMEOUT), since a blocking HTTP call cannot be interrupted from outside.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        resource: Resource,
        *,
        max_queue_size: int = 2048,
        schedule_delay_s: float = 5.0,
        max_export_batch_size: int = 512,
        export_timeout_s: float = 30.0,
    ) -> None:
        self._exporter = exporter
        self._resource = resource
        self._scope = InstrumentationScope("xrouter")
        self._max_queue_size = max_queue_size
        self._schedule_delay_s = schedule_delay_s
        self._batch_size = max_export_batch_size
        self.export_timeout_s = export_timeout_s
        self._queue: deque[Span] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._flush_waiters: list[threading.Event] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._abandon = False
        self._exporter_shut = False
        self._drop_warning = _RateLimitedWarning()
        self._failure_warning = _RateLimitedWarning()
        self._dropped = 0
        self.exported = 0
        self.failed = 0

    @property
    def dropped(self) -> int:
        return self._dropped

    def on_end(self, span: Span) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue_size or self._stopping:
            self._drop()
            return
        queue.append(span)
        if self._thread is None:
            self._start()
        elif len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def _drop(self) -> None:
        self._dropped += 1
        if self._drop_warning.due():
            _log.warning(
                "span queue full (%d spans): dropping spans, %d so far; the collector is slow "
                "or unreachable, or raise OTEL_BSP_MAX_QUEUE_SIZE",
                self._max_queue_size,
                self._dropped,
            )

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="xrouter-span-export", daemon=True
            )
            self._thread.start()

    def force_flush(self, timeout_s: float) -> bool:
        """Export what is queued now; False when that did not finish within the timeout."""
        if self._thread is None:
            if not self._queue:
                return True
            self._start()
        done = threading.Event()
        with self._lock:
            self._flush_waiters.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def shutdown(self, timeout_s: float) -> None:
        """Export what is queued, then stop; returns within `timeout_s` whatever the collector.

        If the collector holds the final export beyond the deadline, the exporter is shut down
        (which cuts its retry back-off short) and the daemon thread is left to die with the
        process; the spans it held are counted as failed.
        """
        deadline = time.monotonic() + timeout_s
        self._stopping = True
        thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(max(0.0, timeout_s * 0.8))
            if thread.is_alive():
                self._abandon = True
        self._shutdown_exporter()
        if thread is not None and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))

    def _shutdown_exporter(self) -> None:
        with self._lock:
            if self._exporter_shut:
                return
            self._exporter_shut = True
        try:
            self._exporter.shutdown()
        except Exception as error:
            _log.warning("span exporter shutdown failed: %s", type(error).__name__)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._schedule_delay_s)
            self._wake.clear()
            with self._lock:
                waiters, self._flush_waiters = self._flush_waiters, []
            self._drain()
            for waiter in waiters:
                waiter.set()
            if self._stopping:
                return

    def _drain(self) -> None:
        """Export the spans queued now, in batches; later arrivals wait for the next wake."""
        queue = self._queue
        remaining = len(queue)
        while remaining > 0 and not self._abandon:
            count = min(remaining, self._batch_size)
            batch = [queue.popleft() for _ in range(count)]
            remaining -= count
            self._export(batch)

    def _export(self, batch: list[Span]) -> None:
        try:
            result = self._exporter.export([self._readable(span) for span in batch])
        except Exception as error:  # an exporter bug must not kill the thread
            result = SpanExportResult.FAILURE
            reason = type(error).__name__
        else:
            reason = "the exporter reported failure"
        if result is SpanExportResult.SUCCESS:
            self.exported += len(batch)
            return
        self.failed += len(batch)
        # Never log the exporter's settings: OTEL_EXPORTER_OTLP_HEADERS may hold an API key.
        if self._failure_warning.due():
            _log.warning(
                "span export failed (%s): %d spans lost, %d so far; is the OTLP collector up?",
                reason,
                len(batch),
                self.failed,
            )

    def _readable(self, span: Span) -> ReadableSpan:
        trace_id = span.context.trace_id
        parent = span.parent
        return ReadableSpan(
            name=span.name,
            context=otel_trace.SpanContext(trace_id, span.context.span_id, False, _SAMPLED),
            parent=None
            if parent is None
            else otel_trace.SpanContext(
                parent.trace_id,
                parent.span_id,
                # A server span's parent came in a traceparent header: another process.
                span.kind is SpanKind.SERVER,
                otel_trace.TraceFlags(int(parent.sampled)),
            ),
            resource=self._resource,
            attributes=span.attributes,
            events=_events(span.events),
            kind=_KINDS[span.kind],
            status=Status(StatusCode.ERROR, span.error_description)
            if span.is_error
            else Status(StatusCode.UNSET),
            start_time=span.start_ns,
            end_time=span.end_ns,
            instrumentation_scope=self._scope,
        )


def _events(events: Sequence[tuple[str, int, Attributes]]) -> tuple[Event, ...]:
    return tuple(Event(name, attributes, timestamp) for name, timestamp, attributes in events)
