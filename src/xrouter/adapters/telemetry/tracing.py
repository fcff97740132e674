"""XRouter's own spans: a lean recording model, W3C trace context and the OTel samplers.

Why not the OpenTelemetry SDK's tracer: on this machine it costs ~116 µs per request for a
server span, a client span and 4 events, more than twice the whole telemetry budget. So spans
are recorded with slotted objects, events as tuples and attributes in a plain dict, and the SDK
is used only off the request path, in the export thread (span_export.py), where our spans are
converted to its `ReadableSpan`. Nothing here imports opentelemetry.

Sampling follows the OTel specification's samplers and their environment variables, so an
operator's `OTEL_TRACES_SAMPLER` means what it means for every other OTel-instrumented service.
"""

from __future__ import annotations

import enum
import random
import re
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple, Protocol, TypeAlias

AttributeValue: TypeAlias = str | int | float | bool | Sequence[str]


class SpanContext(NamedTuple):
    """The identity a span passes on: what `traceparent` carries."""

    trace_id: int
    span_id: int
    sampled: bool


class SpanKind(enum.Enum):
    SERVER = "server"
    CLIENT = "client"
    INTERNAL = "internal"


# version-traceid-parentid-flags; lowercase hex only (W3C: anything else is invalid). A future
# version may append fields after a '-', which a version-00 parser must ignore.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The context of a W3C `traceparent` header, or None when absent or invalid.

    Invalid means: malformed, uppercase hex, version ff, an all-zero trace or parent id, or a
    version-00 value with trailing data. Higher versions are parsed leniently, as the
    Trace Context spec asks, by reading the version-00 fields.
    """
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, bool(int(flags_hex, 16) & 1))


def format_traceparent(ctx: SpanContext) -> str:
    """The version-00 `traceparent` header value for a context."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{'01' if ctx.sampled else '00'}"


class Sampler(Protocol):
    def should_sample(self, trace_id: int, parent: SpanContext | None) -> bool: ...


class AlwaysOnSampler:
    def should_sample(self, trace_id: int, parent: SpanContext | None) -> bool:
        return True


class AlwaysOffSampler:
    def should_sample(self, trace_id: int, parent: SpanContext | None) -> bool:
        return False


class TraceIdRatioSampler:
    """OTel's TraceIdRatioBased: samples when the trace id's low 64 bits fall under a bound.

    Deterministic on the trace id, so every service using the same ratio agrees on a trace.
    """

    _LIMIT = (1 << 64) - 1

    def __init__(self, ratio: float) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"sampling ratio must be between 0 and 1, got {ratio}")
        self.ratio = ratio
        self._bound = round(ratio * (self._LIMIT + 1))

    def should_sample(self, trace_id: int, parent: SpanContext | None) -> bool:
        return trace_id & self._LIMIT < self._bound


class ParentBasedSampler:
    """Follows the parent's sampled flag; a root span asks the root sampler."""

    def __init__(self, root: Sampler) -> None:
        self.root = root

    def should_sample(self, trace_id: int, parent: SpanContext | None) -> bool:
        if parent is not None:
            return parent.sampled
        return self.root.should_sample(trace_id, None)


_SAMPLER_NAMES = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def sampler_from_env(environ: Mapping[str, str]) -> Sampler:
    """The sampler `OTEL_TRACES_SAMPLER` (+ `OTEL_TRACES_SAMPLER_ARG`) name.

    Default parentbased_always_on, as in the OTel spec. Unknown names and bad ratios raise
    ValueError rather than falling back, so a typo is a startup error, not silent 100 % sampling.
    """
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name not in _SAMPLER_NAMES:
        raise ValueError(
            f"OTEL_TRACES_SAMPLER={name!r} is not supported; use one of {', '.join(_SAMPLER_NAMES)}"
        )
    if name == "always_on":
        return AlwaysOnSampler()
    if name == "always_off":
        return AlwaysOffSampler()
    if name == "parentbased_always_on":
        return ParentBasedSampler(AlwaysOnSampler())
    if name == "parentbased_always_off":
        return ParentBasedSampler(AlwaysOffSampler())
    ratio = _ratio(environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip())
    if name == "traceidratio":
        return TraceIdRatioSampler(ratio)
    return ParentBasedSampler(TraceIdRatioSampler(ratio))


def _ratio(raw: str) -> float:
    if not raw:
        return 1.0
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(
            f"OTEL_TRACES_SAMPLER_ARG={raw!r} is not a sampling ratio; "
            "use a number from 0 to 1 (for example 0.25)"
        )
    return ratio


class SpanProcessor(Protocol):
    """Where ended spans go. `on_end` runs on the request path: it must be O(1) and not block."""

    def on_end(self, span: Span) -> None: ...

    def force_flush(self, timeout_s: float) -> bool: ...

    def shutdown(self, timeout_s: float) -> None: ...


class Span:
    """A recording span. Not thread-safe: one request's task owns it until `end`.

    After `end` it is frozen (mutators are ignored) because the export thread reads it.
    Events are `(name, time_ns, attributes | None)` tuples.
    """

    __slots__ = (
        "_processor",
        "attributes",
        "context",
        "end_ns",
        "error_description",
        "events",
        "is_error",
        "kind",
        "name",
        "parent",
        "start_ns",
    )

    recording = True

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any] | None,
        processor: SpanProcessor | None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.context = context
        self.parent = parent
        self.attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self.events: list[tuple[str, int, dict[str, Any] | None]] = []
        self.is_error = False
        self.error_description: str | None = None
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self._processor = processor

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if not self.end_ns:
            self.attributes[key] = value

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        if not self.end_ns:
            self.events.append((name, time.time_ns(), attributes))

    def set_error(self, error_type: str, description: str | None = None) -> None:
        """Status ERROR, with `error.type` as the GenAI and HTTP conventions ask."""
        if not self.end_ns:
            self.is_error = True
            self.error_description = description
            self.attributes["error.type"] = error_type

    def end(self) -> None:
        if self.end_ns:
            return
        self.end_ns = time.time_ns()
        if self._processor is not None:
            self._processor.on_end(self)


class NonRecordingSpan:
    """An unsampled span: records nothing, but keeps ids so `traceparent` still propagates."""

    __slots__ = ("context", "parent")

    recording = False

    def __init__(self, context: SpanContext, parent: SpanContext | None) -> None:
        self.context = context
        self.parent = parent

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        return None

    def set_error(self, error_type: str, description: str | None = None) -> None:
        return None

    def end(self) -> None:
        return None


def _new_id(bits: int) -> int:
    value = random.getrandbits(bits)
    while not value:  # an all-zero id is invalid in W3C trace context
        value = random.getrandbits(bits)
    return value


class Tracer:
    def __init__(self, sampler: Sampler, processor: SpanProcessor | None) -> None:
        self.sampler = sampler
        self.processor = processor

    def start_span(
        self,
        name: str,
        kind: SpanKind,
        parent: SpanContext | None,
        attributes: dict[str, Any] | None = None,
    ) -> Span | NonRecordingSpan:
        """A span in the parent's trace, or the root of a fresh trace when parent is None."""
        trace_id = parent.trace_id if parent is not None else _new_id(128)
        sampled = self.sampler.should_sample(trace_id, parent)
        context = SpanContext(trace_id, _new_id(64), sampled)
        if not sampled:
            return NonRecordingSpan(context, parent)
        return Span(name, kind, context, parent, attributes, self.processor)


# The request's server span, so the access log and upstream transport find it without threading
# it through every call. A ContextVar is per-task state, not module-level shared state.
CURRENT_SPAN: ContextVar[Span | NonRecordingSpan | None] = ContextVar(
    "xrouter_current_span", default=None
)


class InMemorySpanProcessor:
    """Keeps ended spans in a list, for tests."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    def on_end(self, span: Span) -> None:
        self.spans.append(span)

    def force_flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self, timeout_s: float) -> None:
        return None


def start_child(
    parent: Span | NonRecordingSpan,
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any] | None = None,
) -> Span | NonRecordingSpan:
    """A span under `parent`, in its trace, sampled as the parent was (parent-based sampling
    with no second decision: a request's spans are all exported or none is)."""
    context = SpanContext(parent.context.trace_id, _new_id(64), parent.context.sampled)
    if isinstance(parent, Span):
        return Span(name, kind, context, parent.context, attributes, parent._processor)
    return NonRecordingSpan(context, parent.context)
