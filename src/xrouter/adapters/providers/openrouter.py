"""OpenRouter: an OpenAI-compatible upstream with its own extensions (OPENROUTER.md).

What differs from a plain OpenAI-compatible server, and lives only here:

- attribution headers (`HTTP-Referer`, `X-OpenRouter-Title` and the legacy `X-Title`);
- `max_tokens` rather than `max_completion_tokens`, and `reasoning: {effort}` rather than
  `reasoning_effort`;
- `reasoning_details` kept from answers and sent back unchanged on the next assistant message
  (Claude needs them to continue a tool-call turn);
- routing extensions passed through from the client: `provider`, `reasoning`, `transforms`,
  `plugins` and the extra samplers (`models`, OpenRouter's fallback list, is the gateway's
  own: it falls back across every provider, docs/providers.md "Fallbacks");
- `usage.cost` (credits) carried on the usage report to the usage sink, off the wire.

Errors inside a 200 (a per-choice `error`, a mid-stream error frame, `finish_reason:"error"`)
are failures, handled by the shared parser; `: OPENROUTER PROCESSING` comments never get past
the SSE reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xrouter.adapters.providers.inflight import InflightLimiter
from xrouter.adapters.providers.openai_compatible import ChatDialect, OpenAICompatibleProvider
from xrouter.adapters.providers.provider_spec import OpenRouterSpec
from xrouter.adapters.providers.transport import HttpTransport, TransportSettings

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"

# OpenRouter's own request fields (`provider`, `transforms`, `plugins`, sampling
# extras...) reach this provider as `GenerationRequest.passthrough`: the Chat Completions
# adapter and the Responses request (`ResponseRequest.passthrough()`) take them from the one
# list in `domain/passthrough.py`.

OPENROUTER_DIALECT = ChatDialect(
    max_tokens_field="max_tokens", reasoning_details=True, reasoning_object=True
)


def attribution_headers(*, referer: str | None = None, title: str | None = None) -> dict[str, str]:
    """The app-attribution headers OpenRouter ranks apps by; they change no behaviour."""
    headers: dict[str, str] = {}
    if referer:
        headers["HTTP-Referer"] = referer
    if title:
        headers["X-OpenRouter-Title"] = title
        headers["X-Title"] = title  # the legacy name, still accepted
    return headers


class OpenRouterProvider(OpenAICompatibleProvider):
    """OpenRouter over the shared transport; `protocol="responses"` uses its Responses beta."""

    def __init__(
        self,
        spec: OpenRouterSpec,
        *,
        transport: HttpTransport | None = None,
        extra_headers: Mapping[str, str] | None = None,
        limiter: InflightLimiter | None = None,
    ) -> None:
        super().__init__(
            spec,
            transport=transport,
            limiter=limiter,
            extra_headers={
                **attribution_headers(referer=spec.referer, title=spec.title),
                **(extra_headers or {}),
            },
            dialect=OPENROUTER_DIALECT,
        )

    @property
    def compacts_natively(self) -> bool:
        """OpenRouter's Responses endpoint is stateless and has no `/responses/compact`: the
        gateway compacts with the model itself."""
        return False


def openrouter_settings(base_url: str = OPENROUTER_BASE_URL, **overrides: Any) -> TransportSettings:
    """Transport settings for OpenRouter: its base URL unless told otherwise."""
    return TransportSettings(base_url=base_url, **overrides)
