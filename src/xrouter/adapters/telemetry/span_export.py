"""Span export off the request path: a bounded queue drained by one background thread.

The request path only appends to a deque (`on_end`): O(1), never blocks, never raises. A full
queue drops the span and counts it, because a slow or dead collector must cost requests
nothing. The thread hands batches to an OTel `SpanExporter`. For the OTLP/HTTP exporter
(`otlp_span_exporter`) it writes the protobuf itself (`OtlpSpanEncoder`, ~6x cheaper than the
SDK's encoder, and that CPU is taken under the event loop's GIL) and lets the SDK send it, so
retries, TLS, gzip and the `OTEL_EXPORTER_OTLP_*` variables stay the SDK's; any other exporter
(tests, console) gets the SDK's `ReadableSpan`s.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

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

    return OtlpHttpSpanExporter(OTLPSpanExporter())


class OtlpHttpSpanExporter(SpanExporter):
    """The SDK's OTLP/HTTP exporter, fed with our own protobuf encoding (`OtlpSpanEncoder`).

    Sending stays the SDK's (endpoint, headers, gzip, TLS, retries with back-off); only the
    encoding, which dominates the export thread's CPU, is replaced. That goes through the
    exporter's HTTP client, a private attribute: the OTLP export test catches a change of it.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result: SpanExportResult = self._inner.export(spans)
        return result

    def export_encoded(self, payload: bytes) -> SpanExportResult:
        if self._inner._shutdown:
            return SpanExportResult.FAILURE
        sent = self._inner._client.export(payload)
        return SpanExportResult.SUCCESS if sent.success else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


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
        # The OTLP exporter gets our lean encoding; any other SpanExporter gets ReadableSpans.
        self._otlp = exporter if isinstance(exporter, OtlpHttpSpanExporter) else None
        self._encoder = OtlpSpanEncoder(resource, "xrouter")
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
        if self._stopping:  # the thread is gone or going: nothing will serve a flush
            return not self._queue
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
            if self._otlp is not None:
                result = self._otlp.export_encoded(self._encoder.encode(batch))
            else:
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


# --- OTLP protobuf encoding ----------------------------------------------------------------
# OTel's own encoder (`encode_spans`) builds a protobuf object per attribute and costs ~60-110
# µs of CPU per span on this machine (8 attributes, 4 events), in the export thread but under
# the same GIL as the event loop: two spans a request would eat the throughput budget alone.
# Writing the wire format directly costs a fraction of that. Field numbers are those of
# opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto; a test decodes this
# encoding and OTel's and asserts they are equal.

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_MASK64 = (1 << 64) - 1
_OTLP_KINDS = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
}
_STATUS_UNSET = b"\x7a\x00"
_FLAGS_LOCAL_PARENT = b"\x85\x01" + struct.pack("<I", 0x100)  # context has is_remote: no
_FLAGS_REMOTE_PARENT = b"\x85\x01" + struct.pack("<I", 0x300)  # context has is_remote: yes
_CACHE_LIMIT = 4096
_SMALL_LENGTHS = tuple(bytes((n,)) for n in range(0x80))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    size = len(payload)
    return tag + (_SMALL_LENGTHS[size] if size < 0x80 else _varint(size)) + payload


def _any_value(value: object) -> bytes:
    """The AnyValue message for an attribute value (same type mapping as OTel's encoder)."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return b"\x18" + _varint(value & _MASK64)
        return _field(b"\x0a", str(value).encode())  # beyond int64: keep it readable
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if value is None:
        return b""
    if isinstance(value, Sequence):
        items = b"".join(_field(b"\x0a", _any_value(item)) for item in value)
        return _field(b"\x2a", items)
    return _field(b"\x0a", str(value).encode())


class OtlpSpanEncoder:
    """Our spans straight to an `ExportTraceServiceRequest`, one resource and one scope."""

    def __init__(self, resource: Resource, scope_name: str) -> None:
        # Encoded key-value fields by (tag, key, value) for string values (methods, routes,
        # models, providers: few distinct, seen on every span), and encoded keys. Cleared when
        # full, so unique values (response ids) cannot crowd out the repeated ones for long.
        self._pairs: dict[tuple[bytes, str, str], bytes] = {}
        self._keys: dict[str, bytes] = {}
        self._names: dict[str, bytes] = {}
        self._resource = _field(b"\x0a", b"".join(self._attributes(b"\x0a", resource.attributes)))
        self._scope = _field(b"\x0a", _field(b"\x0a", scope_name.encode()))

    def _key(self, key: str) -> bytes:
        """KeyValue.key, encoded once per distinct key: span keys are a small fixed set."""
        encoded = self._keys.get(key)
        if encoded is None:
            encoded = _field(b"\x0a", key.encode())
            if len(self._keys) >= _CACHE_LIMIT:
                self._keys.clear()
            self._keys[key] = encoded
        return encoded

    def _name(self, name: str) -> bytes:
        """A span or event name as UTF-8, cached: names come from a small fixed set."""
        encoded = self._names.get(name)
        if encoded is None:
            encoded = name.encode()
            if len(self._names) >= _CACHE_LIMIT:
                self._names.clear()
            self._names[name] = encoded
        return encoded

    def _attributes(self, tag: bytes, attributes: Mapping[str, object]) -> list[bytes]:
        pairs = self._pairs
        fields = []
        for name, value in attributes.items():
            if type(value) is str:
                cache_key = (tag, name, value)
                encoded = pairs.get(cache_key)
                if encoded is None:
                    encoded = _field(tag, self._key(name) + _field(b"\x12", _any_value(value)))
                    if len(pairs) >= _CACHE_LIMIT:
                        pairs.clear()
                    pairs[cache_key] = encoded
                fields.append(encoded)
            else:
                fields.append(_field(tag, self._key(name) + _field(b"\x12", _any_value(value))))
        return fields

    def _span(self, span: Span) -> bytes:
        context = span.context
        parts = [
            b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        ]
        parent = span.parent
        if parent is not None:
            parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        parts.append(_field(b"\x2a", self._name(span.name)))
        parts.append(_OTLP_KINDS[span.kind])
        parts.append(b"\x39" + struct.pack("<Q", span.start_ns))
        parts.append(b"\x41" + struct.pack("<Q", span.end_ns))
        parts.extend(self._attributes(b"\x4a", span.attributes))
        for name, timestamp, attributes in span.events:
            event = [b"\x09" + struct.pack("<Q", timestamp), _field(b"\x12", self._name(name))]
            if attributes:
                event.extend(self._attributes(b"\x1a", attributes))
            parts.append(_field(b"\x5a", b"".join(event)))
        if span.is_error:
            message = span.error_description
            status = (_field(b"\x12", message.encode()) if message else b"") + b"\x18\x02"
            parts.append(_field(b"\x7a", status))
        else:
            parts.append(_STATUS_UNSET)
        # A server span's parent came in a traceparent header: another process.
        remote = parent is not None and span.kind is SpanKind.SERVER
        parts.append(_FLAGS_REMOTE_PARENT if remote else _FLAGS_LOCAL_PARENT)
        return b"".join(parts)

    def encode(self, spans: Sequence[Span]) -> bytes:
        """The serialized ExportTraceServiceRequest for a batch."""
        span_fields = b"".join(_field(b"\x12", self._span(span)) for span in spans)
        scope_spans = _field(b"\x12", self._scope + span_fields)
        return _field(b"\x0a", self._resource + scope_spans)
