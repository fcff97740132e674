"""Per-request telemetry of the HTTP host: the server span and the HTTP metrics.

The request-id middleware (request_id.py) calls `begin` when a request arrives and
`response_done` once its response has gone out. The server span ends when the request is over
on every side (`RequestFacts.hold` / `release`): for a client that left during generate, when
generation ends, not when the client left. The span carries the HTTP attributes, the
lifecycle as events (adapters/telemetry/span_events.py) and, from the request's
`RequestOutcome`, the GenAI attributes (adapters/telemetry/genai_spans.py).
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

from xrouter.adapters.telemetry.gateway_metrics import GatewayMetrics
from xrouter.adapters.telemetry.genai_spans import ContentCapture, set_outcome_attributes
from xrouter.adapters.telemetry.tracing import (
    CURRENT_SPAN,
    NonRecordingSpan,
    Span,
    SpanKind,
    Tracer,
    parse_traceparent,
)
from xrouter.application.request_facts import RequestFacts

UNMATCHED_ROUTE = "unmatched"
"""`http.route` of a request no route matched (a 404): raw paths never become labels."""


class HttpTelemetry:
    """What the host records per request; either part may be off (None)."""

    __slots__ = ("_capture", "_metrics", "_tracer")

    def __init__(
        self,
        metrics: GatewayMetrics | None,
        tracer: Tracer | None,
        *,
        capture: ContentCapture | None = None,
    ) -> None:
        """`capture`: prompt and completion content on spans, the operator's opt-in
        (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT); None: never."""
        self._metrics = metrics
        self._tracer = tracer
        self._capture = capture

    @property
    def enabled(self) -> bool:
        return self._metrics is not None or self._tracer is not None

    def begin(
        self, scope: Any, traceparent: bytes | None, facts: RequestFacts
    ) -> Token[Any] | None:
        """Start the server span (when tracing), as the parent of every upstream call's span;
        the context token to reset once the response has gone out."""
        tracer = self._tracer
        if tracer is None:
            return None
        method = scope["method"]
        parent = parse_traceparent(traceparent.decode("latin-1")) if traceparent else None
        span = tracer.start_span(method, SpanKind.SERVER, parent, _http_attributes(scope))
        facts.span = span
        if span.recording:
            facts.on_complete = self._complete
            if self._capture is not None:
                facts.capture_content = True
                facts.client_token = _bearer(scope)
        return CURRENT_SPAN.set(span)

    def response_done(
        self, scope: Any, status: int, duration_s: float, facts: RequestFacts
    ) -> None:
        """The response has gone out: the HTTP metrics, and the span's HTTP outcome."""
        route = scope.get("path_template") or UNMATCHED_ROUTE
        span = facts.span
        if span is not None and span.recording:
            span.name = f"{scope['method']} {route}"
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_error(str(status))
        if self._metrics is not None:
            self._metrics.observe_http(
                scope["method"], route, status, duration_s, facts.model, facts.provider
            )

    def _complete(self, facts: RequestFacts) -> None:
        span: Span | NonRecordingSpan = facts.span
        if facts.outcome is not None:
            set_outcome_attributes(span, facts.outcome)
        if self._capture is not None and facts.content is not None:
            self._capture.put(span, facts.content, facts.client_token)
        span.end()


def _bearer(scope: Any) -> str | None:
    # Imported here: errors.py imports the request-id middleware, which imports this module.
    from xrouter.entrypoints.http.errors import bearer_token

    for name, value in scope["headers"]:
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


def _http_attributes(scope: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": scope["method"],
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    server = scope.get("server")
    if server:
        attributes["server.address"] = server[0]
        if server[1] is not None:
            attributes["server.port"] = server[1]
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    for name, value in scope["headers"]:
        if name == b"user-agent":
            attributes["user_agent.original"] = value.decode("latin-1")[:256]
            break
    return attributes
