"""A request's terminal state, as telemetry, analytics and usage accounting see it.

The engine reports one `RequestOutcome` per request that reached a terminal state (done or
failed, at any stage: refused at ingest, failed in generate, finished) through the
`OutcomeSink` port (application/ports.py). Metrics, the server span's GenAI attributes, the
analytics record and the usage ledger are all made from it, so they cannot disagree.

Never carries content (prompt or completion) nor secrets: only names, numbers and codes.
"""

from __future__ import annotations

from msgspec import Struct

from xrouter.domain.fallbacks import SkippedAttempt


class RequestOutcome(Struct, frozen=True, kw_only=True, gc=False):
    """gc=False: strings and numbers only, so it cannot be part of a cycle; a full ring of
    them would otherwise lengthen every full collection."""

    request_id: str
    finished_at: float
    """Unix time (seconds) of the terminal state."""
    api: str
    """The API the client spoke: `responses` or `chat`."""
    route: str | None
    """The host's route (`POST /v1/responses`); None outside HTTP."""
    stream: bool
    model_requested: str
    """The model id as the client wrote it (an alias stays an alias)."""
    model: str | None
    """The public id it was routed to (`provider/model`); None when it was not routed."""
    upstream_model: str | None
    """The model the upstream says answered, when it said (may differ from the request)."""
    provider: str | None
    response_id: str | None
    upstream_response_id: str | None
    status: str
    """`completed`, `incomplete` or `failed`."""
    failed_stage: str | None
    """Where a failure happened: `ingest`, `tokenize` or `generate`; None on success."""
    error_type: str | None
    """The error code of a failure (`provider_error`, `timeout`, `client_disconnect`...)."""
    finish_reason: str | None
    duration_s: float
    """From receipt to the terminal state."""
    generate_s: float | None
    """Time in generate (the upstream call and relay); None when it never started."""
    ttft_s: float | None
    """From receipt to the first output chunk; None when there was none."""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    attempts: int = 0
    """Upstream attempts made (retries included); 0 when none was made."""
    fallbacks: tuple[SkippedAttempt, ...] = ()
    """The models given up before `model` served (or before the last one failed), first
    tried first: every attempt of a fallback chain but the last."""
    cost: float | None = None
    key_id: str | None = None
    """The gateway key's public id and name when access control is on (never the key)."""
    key_name: str | None = None
    """The upstream's own cost figure, when it reports one (OpenRouter credits)."""
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
