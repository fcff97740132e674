"""Which failures of one model let the next model of a fallback chain try, and how a skipped
attempt is reported.

A fallback is decided before any output of the failed attempt reached the client (the
lifecycle's `NextAttempt`, formal/xrouter.tla): the client then sees one answer, from the model
that served it. The triggers are those a retry elsewhere can fix: the upstream rate-limited us
(429), failed on its side (5xx), did not answer in time, or could not be reached or spoke
something that is not its protocol. A 400 saying the input is longer than the model's context
falls back only along a chain configured for that (a larger-context model). Anything else (bad
request, credentials, a model the upstream does not know) would fail the same way elsewhere or
is the operator's to fix: no fallback.
"""

from __future__ import annotations

import enum
from urllib.parse import quote

from msgspec import Struct

from xrouter.domain.errors import (
    GatewayError,
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
    UpstreamRateLimited,
)

MAX_REQUEST_MODELS = 8
"""Most entries of a request's `models` list: each is a full upstream attempt."""

HEADER_MODEL_CHARS = 200
"""Most characters of a model id in the header (ids are the client's text, of any length; the
analytics record keeps the whole id)."""

_CONTEXT_CODES = frozenset({"context_length_exceeded", "token_limit_exceeded"})
_CONTEXT_WORDS = ("context length", "context_length", "context window", "maximum context")


class FallbackReason(enum.StrEnum):
    RATE_LIMITED = "rate_limited"  # the upstream answered 429
    UPSTREAM_ERROR = "upstream_error"  # an upstream 5xx
    TIMEOUT = "timeout"  # a timeout of the call, or an upstream 408/504
    UNREACHABLE = "unreachable"  # no answer: connection refused or cut, or not the protocol
    CONTEXT_LENGTH = "context_length"  # a 400: the input does not fit the model's context


class SkippedAttempt(Struct, frozen=True, kw_only=True, gc=False):
    """One model tried and given up before any of its output reached the client. Names and
    codes only (it goes to headers, analytics and traces)."""

    model: str
    """The public id as the chain listed it."""
    provider: str
    status: int
    """The upstream's status when it answered (429, 503...), else the gateway's for the
    failure (504 a timeout, 502 no answer or not the protocol)."""
    code: str | None
    reason: FallbackReason
    duration_s: float

    def header_value(self) -> str:
        """`model;status=429;reason=rate_limited`: one entry of the `x-xrouter-fallback`
        response header. The model id is the client's text: cut at `HEADER_MODEL_CHARS` and
        percent-encoded beyond the characters ids are made of, so it can neither break the
        header nor its list, nor make it long."""
        model = self.model
        if len(model) > HEADER_MODEL_CHARS:
            model = model[:HEADER_MODEL_CHARS] + "..."
        return f"{quote(model, safe='/:._-@+')};status={self.status};reason={self.reason}"


def fallback_header(skipped: list[SkippedAttempt]) -> str:
    """The `x-xrouter-fallback` header: each model given up, first tried first."""
    return ", ".join(attempt.header_value() for attempt in skipped)


def fallback_reason(error: GatewayError) -> FallbackReason | None:
    """Why `error` lets the next model try; None when it must reach the client as it is."""
    if isinstance(error, UpstreamRateLimited):
        return FallbackReason.RATE_LIMITED
    if isinstance(error, ProviderTimeout):
        return FallbackReason.TIMEOUT
    if isinstance(error, InvalidRequest):
        return FallbackReason.CONTEXT_LENGTH if _context_too_long(error) else None
    if isinstance(error, ProviderError):
        status = error.upstream_status
        if status is None:
            return FallbackReason.UNREACHABLE
        # An upstream 401/403 is the gateway's credentials (the operator's to fix).
        return FallbackReason.UPSTREAM_ERROR if status >= 500 else None
    return None


def _context_too_long(error: InvalidRequest) -> bool:
    if error.code in _CONTEXT_CODES:
        return True
    message = error.message.lower()
    return any(words in message for words in _CONTEXT_WORDS)
