"""A request's outcome as OpenTelemetry GenAI span attributes (semantic conventions for
generative AI: `gen_ai.*`). Names, numbers and codes only: prompt and completion content are
never put here (content capture is the host's opt-in, see docs/observability.md)."""

from __future__ import annotations

from xrouter.adapters.telemetry.tracing import NonRecordingSpan, Span
from xrouter.application.outcome import RequestOutcome


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
    if outcome.attempts:
        put("xrouter.upstream.attempts", outcome.attempts)
    if outcome.status == "failed":
        put("xrouter.failed_stage", str(outcome.failed_stage))
        span.set_error(outcome.error_type or "failed")
