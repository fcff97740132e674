"""One client span per upstream attempt, and the attempt count of the request.

Each call the transport makes (a retry is one more) is counted on the request's
`RequestFacts` (its outcome reports `attempts`) and, when the request has a server span, gets a
client span of its own, child of that span, named `chat <model>` (`GET <path>` for
discovery) with the GenAI request attributes, `server.address`, the HTTP status and
`error.type`. The span's context goes upstream as `traceparent`, so the upstream's spans join
the trace. Without tracing nothing is made and the provider's own `traceparent` (the client's,
forwarded) stays as it was.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from xrouter.adapters.telemetry.tracing import (
    CURRENT_SPAN,
    NonRecordingSpan,
    Span,
    SpanKind,
    format_traceparent,
    start_child,
)
from xrouter.application.request_facts import CURRENT_REQUEST
from xrouter.domain.errors import GatewayError

AttemptSpan = Span | NonRecordingSpan | None


class AttemptSpans:
    __slots__ = ("_address", "_port", "_provider")

    def __init__(self, provider: str, base_url: str) -> None:
        self._provider = provider
        parts = urlsplit(base_url)
        self._address = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)

    def start(self, method: str, path: str, headers: dict[str, str]) -> AttemptSpan:
        """Count the attempt (generation calls only: discovery is not the request's) and start
        its span; `headers` gets the span's `traceparent`."""
        facts = CURRENT_REQUEST.get()
        generation = method == "POST"
        if generation and facts is not None:
            facts.upstream_attempts += 1
        parent = CURRENT_SPAN.get()
        if parent is None:
            return None
        model = facts.upstream_model if generation and facts is not None else None
        attributes: dict[str, object] = {
            "gen_ai.provider.name": self._provider,
            "server.address": self._address,
            "server.port": self._port,
            "http.request.method": method,
        }
        if generation:
            attributes["gen_ai.operation.name"] = "chat"
            if model:
                attributes["gen_ai.request.model"] = model
            if facts is not None:
                attributes["xrouter.upstream.attempt"] = facts.upstream_attempts
            name = f"chat {model}" if model else "chat"
        else:
            name = f"{method} {path.split('?', 1)[0]}"
        span = start_child(parent, name, SpanKind.CLIENT, attributes)
        headers["traceparent"] = format_traceparent(span.context)
        return span


def end_attempt(span: AttemptSpan, status: int | None, error: BaseException | None) -> None:
    """End an attempt's span with its HTTP status and, when it failed, the error's type.
    A consumer that stopped reading early (GeneratorExit, cancellation) is no failure."""
    if span is None or not span.recording:
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if isinstance(error, GatewayError):
        span.set_error(error.code or error.type, None)
    elif isinstance(error, Exception):
        span.set_error(type(error).__name__, None)
    elif status is not None and status >= 400:
        span.set_error(str(status), None)
    span.end()
