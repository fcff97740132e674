"""One client span per upstream attempt, and the attempt count of the request.

Each call the transport makes (a retry is one more) is counted on the request's
`RequestFacts` (its outcome reports `attempts`) and, when the request has a server span, gets a
client span of its own, child of that span, named `chat <model>` (`GET <path>` for
discovery) with the GenAI request attributes, `server.address`, `server.port` and
`url.full` of the place called (a provider with several deployments: the one this attempt
went to; credentials and the query are left out), the HTTP status and `error.type`, and
`gen_ai.response.model` when the answer names the model that answered (OpenRouter's `auto`
routes to a concrete one): the top-level `model` of an answer or of a
stream's first events, or `response.model` of a Responses stream event. The span's context
goes upstream as `traceparent`, so the upstream's spans join the trace. Without tracing
nothing is made and the provider's own `traceparent` (the client's, forwarded) stays as it was.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

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
from xrouter.domain.provider_events import upstream_info

AttemptSpan = Span | NonRecordingSpan | None


class AttemptSpans:
    __slots__ = ("_base_url", "_provider")

    def __init__(self, provider: str, base_url: str) -> None:
        self._provider = provider
        self._base_url = base_url

    def start(
        self, method: str, path: str, headers: dict[str, str], base_url: str | None = None
    ) -> AttemptSpan:
        """Count the attempt (generation calls only: discovery is not the request's) and start
        its span; `headers` gets the span's `traceparent`. `base_url` is where this attempt
        goes when it is not the provider's own (a deployment)."""
        facts = CURRENT_REQUEST.get()
        generation = method == "POST"
        if generation and facts is not None:
            facts.upstream_attempts += 1
        parent = CURRENT_SPAN.get()
        if parent is None:
            return None
        model = facts.upstream_model if generation and facts is not None else None
        root = base_url or self._base_url
        parts = urlsplit(root)
        attributes: dict[str, object] = {
            "gen_ai.provider.name": self._provider,
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            "url.full": _url_full(root, path),
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


def _url_full(base_url: str, path: str) -> str:
    """The URL called, without what may be secret: credentials in the base URL and the
    query string."""
    parts = urlsplit(base_url.rstrip("/") + path.split("?", 1)[0])
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], fragment=""))


PEEKED_EVENTS = 4
"""Stream events looked at for the answering model: every dialect names it in its first."""


class _Response(msgspec.Struct):
    model: Any = None


class _Answer(msgspec.Struct):
    """Only the names looked for; msgspec skips every other field without building it."""

    model: Any = None
    response: _Response | None = None


_ANSWER = msgspec.json.Decoder(_Answer)


def answered_model(payload: bytes | str) -> str | None:
    """The model an upstream answer (or one stream event) says answered, when it names a
    usable one (`upstream_info`'s rule); anything else, malformed JSON included, is None:
    the provider's parser, not this, decides whether the answer is valid."""
    try:
        answer = _ANSWER.decode(payload)
    except msgspec.MsgspecError:
        return None
    named = answer.model if answer.response is None else answer.response.model
    info = upstream_info(named, None)
    return info.model if info is not None else None


class StreamModel:
    """Watches an attempt's stream events for the answering model, only while its span
    records and only in the first `PEEKED_EVENTS` events, so an untraced stream pays
    nothing and a traced one a few small decodes."""

    __slots__ = ("_left", "model")

    def __init__(self, span: AttemptSpan) -> None:
        self.model: str | None = None
        self._left = PEEKED_EVENTS if span is not None and span.recording else 0

    def see(self, data: str) -> None:
        if self._left > 0:
            self._left -= 1
            self.model = answered_model(data)
            if self.model is not None:
                self._left = 0


def end_attempt(
    span: AttemptSpan,
    status: int | None,
    error: BaseException | None,
    *,
    answer: bytes | None = None,
    model: str | None = None,
) -> None:
    """End an attempt's span with its HTTP status and, when it failed, the error's type.
    A consumer that stopped reading early (GeneratorExit, cancellation) is no failure.
    The answering model is `model` (a stream's, from `StreamModel`) or read from `answer`
    (a whole generation answer), and only when the span records."""
    if span is None or not span.recording:
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if model is None and answer is not None:
        model = answered_model(answer)
    if model is not None:
        span.set_attribute("gen_ai.response.model", model)
    if isinstance(error, GatewayError):
        span.set_error(error.code or error.type, None)
    elif isinstance(error, Exception):
        span.set_error(type(error).__name__, None)
    elif status is not None and status >= 400:
        span.set_error(str(status), None)
    span.end()
