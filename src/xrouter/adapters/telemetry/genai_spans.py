"""A request's outcome as OpenTelemetry GenAI span attributes (semantic conventions for
generative AI: `gen_ai.*`): names, numbers and codes. Prompt and completion content only with
the operator's opt-in (`ContentCapture`, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT),
masked by value like every string that leaves the gateway, and cut to a bounded size."""

from __future__ import annotations

from typing import Any

import msgspec

from xrouter.adapters.telemetry.tracing import NonRecordingSpan, Span
from xrouter.application.outcome import RequestOutcome
from xrouter.domain.secrets import SecretMasker

CONTENT_LIMIT = 16 * 1024
"""Characters of each captured content attribute; longer is cut (and says so)."""


def set_outcome_attributes(span: Span | NonRecordingSpan, outcome: RequestOutcome) -> None:
    if not span.recording:
        return
    put = span.set_attribute
    put("gen_ai.operation.name", "chat")
    put("gen_ai.request.model", outcome.model_requested)
    put("gen_ai.request.stream", outcome.stream)
    put("xrouter.api", outcome.api)
    put("xrouter.request_id", outcome.request_id)
    if outcome.provider is not None:
        put("gen_ai.provider.name", outcome.provider)
    served = outcome.upstream_model or outcome.model
    if served is not None:
        put("gen_ai.response.model", served)
    if outcome.response_id is not None:
        put("gen_ai.response.id", outcome.response_id)
    if outcome.upstream_response_id is not None:
        put("xrouter.upstream.response_id", outcome.upstream_response_id)
    if outcome.finish_reason is not None:
        put("gen_ai.response.finish_reasons", (outcome.finish_reason,))
    if outcome.ttft_s is not None:
        put("gen_ai.response.time_to_first_chunk", outcome.ttft_s)
    for key, value in (
        ("gen_ai.usage.input_tokens", outcome.input_tokens),
        ("gen_ai.usage.output_tokens", outcome.output_tokens),
        ("gen_ai.usage.cache_read.input_tokens", outcome.cached_tokens),
        ("gen_ai.usage.reasoning.output_tokens", outcome.reasoning_tokens),
        ("gen_ai.request.temperature", outcome.temperature),
        ("gen_ai.request.top_p", outcome.top_p),
        ("gen_ai.request.max_tokens", outcome.max_output_tokens),
    ):
        if value is not None:
            put(key, value)
    if outcome.key_id is not None:
        put("xrouter.key.id", outcome.key_id)
    if outcome.attempts:
        put("xrouter.upstream.attempts", outcome.attempts)
    if outcome.fallbacks:  # every model given up before the one that served, in order
        put("xrouter.fallbacks", tuple(attempt.header_value() for attempt in outcome.fallbacks))
    if outcome.status == "failed":
        put("xrouter.failed_stage", str(outcome.failed_stage))
        span.set_error(outcome.error_type or "failed")


class ContentCapture:
    """Puts the conversation on the span as `gen_ai.system_instructions`,
    `gen_ai.input.messages` and `gen_ai.output.messages` (JSON), each masked with the
    gateway's secrets and the client's own token, and cut at `limit` characters."""

    __slots__ = ("_encoder", "_limit", "_masker")

    def __init__(self, masker: SecretMasker, limit: int = CONTENT_LIMIT) -> None:
        self._masker = masker
        self._limit = limit
        self._encoder = msgspec.json.Encoder()

    def put(self, span: Span | NonRecordingSpan, content: Any, client_token: str | None) -> None:
        instructions, items, output = content
        masker = self._masker.including(client_token)
        if instructions:
            span.set_attribute("gen_ai.system_instructions", self._text(masker, instructions))
        span.set_attribute(
            "gen_ai.input.messages", self._text(masker, self._encoder.encode(items).decode())
        )
        span.set_attribute(
            "gen_ai.output.messages", self._text(masker, self._encoder.encode(output).decode())
        )

    def _text(self, masker: SecretMasker, text: str) -> str:
        masked = masker.mask(text)
        if len(masked) <= self._limit:
            return masked
        return masked[: self._limit] + f"...[cut at {self._limit} characters]"
