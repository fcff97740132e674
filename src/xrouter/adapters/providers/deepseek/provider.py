"""DeepSeek over the shared OpenAI-compatible adapter (Chat Completions).

What differs from a plain OpenAI-compatible server, and lives only here:

- thinking is switched with `thinking: {"type": "enabled" | "disabled"}` (sent only to the
  models of the catalog, which accept it): a request with `reasoning.effort` turns it on
  (`none` turns it off and sends no effort); `reasoning_effort` goes as OpenAI names it;
- `reasoning_content` (in answers and stream deltas) is read by the shared chat parser;
- tool calls printed as DSML markup in `content` become function calls (`dsml.py`), in
  a stream too, where text that may be markup is held back until decided;
- `max_tokens`, not `max_completion_tokens` (DeepSeek documents only `max_tokens`);
- a static catalog of models with their limits (`catalog.py`), listed when discovery is off.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

from xrouter.adapters.providers.deepseek.catalog import CATALOG, find_model
from xrouter.adapters.providers.deepseek.dsml import DsmlExtractor, Piece, RecoveredCall
from xrouter.adapters.providers.deepseek.spec import DEEPSEEK_BASE_URL, DeepSeekSpec
from xrouter.adapters.providers.inflight import InflightLimiter
from xrouter.adapters.providers.openai_compatible import (
    ChatDialect,
    OpenAICompatibleProvider,
    require_chat_protocol,
)
from xrouter.adapters.providers.transport import HttpTransport, TransportSettings
from xrouter.application.ports import GenerationRequest
from xrouter.domain.models import ModelInfo
from xrouter.domain.provider_events import Finish, ProviderEvent, TextDelta, ToolCallDelta

DEEPSEEK_DIALECT = ChatDialect(max_tokens_field="max_tokens")


def thinking_options(payload: dict[str, Any], call: GenerationRequest) -> None:
    """Add the `thinking` switch when the client asked for reasoning and the model takes it;
    effort `none` means no thinking, and is no effort DeepSeek knows."""
    reasoning = call.request.reasoning
    if reasoning is None or not reasoning.effort:
        return
    model = find_model(call.route.upstream_model)
    if model is None or not model.thinking:
        return
    if reasoning.effort == "none":
        payload["thinking"] = {"type": "disabled"}
        payload.pop("reasoning_effort", None)
    else:
        payload["thinking"] = {"type": "enabled"}


class _Recovery:
    """Turns DSML printed in the answer's text into function calls, for one answer. Native
    calls keep their order; recovered ones are numbered after every call seen so far."""

    def __init__(self) -> None:
        self._extractor = DsmlExtractor()
        self._native: dict[int, int] = {}  # upstream call index -> ours
        self._count = 0

    def event(self, event: ProviderEvent) -> list[ProviderEvent]:
        if isinstance(event, TextDelta):
            return self._pieces(self._extractor.feed(event.text))
        if isinstance(event, ToolCallDelta):
            index = self._native.get(event.index)
            if index is None:
                index = self._native[event.index] = self._count
                self._count += 1
            return [ToolCallDelta(index, event.arguments, event.call_id, event.name)]
        if isinstance(event, Finish):
            events = self._pieces(self._extractor.finish())
            reason = event.reason
            if self._extractor.calls and reason == "stop":
                reason = "tool_calls"
            return [*events, Finish(reason)]
        return [event]

    def _pieces(self, pieces: list[Piece]) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        for piece in pieces:
            if isinstance(piece, RecoveredCall):
                events.append(
                    ToolCallDelta(
                        index=self._count,
                        call_id=f"call_{secrets.token_hex(12)}",
                        name=piece.name,
                        arguments=piece.arguments,
                    )
                )
                self._count += 1
            elif piece:
                events.append(TextDelta(piece))
        return events


class DeepSeekProvider(OpenAICompatibleProvider):
    """DeepSeek's Chat Completions API with its quirks (see the module docstring)."""

    def __init__(
        self,
        spec: DeepSeekSpec,
        *,
        transport: HttpTransport | None = None,
        extra_headers: Mapping[str, str] | None = None,
        limiter: InflightLimiter | None = None,
    ) -> None:
        require_chat_protocol(spec, "DeepSeek")
        super().__init__(
            spec,
            transport=transport,
            limiter=limiter,
            extra_headers=extra_headers,
            dialect=DEEPSEEK_DIALECT,
        )
        configured = {info.id for info in super().static_models()}
        self._catalog = [
            ModelInfo(
                id=f"{spec.name}/{model.id}",
                owned_by=spec.name,
                context_length=model.context_window,
            )
            for model in CATALOG
            if f"{spec.name}/{model.id}" not in configured
        ]

    @property
    def compacts_natively(self) -> bool:
        return False

    def static_models(self) -> list[ModelInfo]:
        """The configured models, then the catalog's: listed whatever discovery finds."""
        return [*super().static_models(), *self._catalog]

    def adjust_payload(self, payload: dict[str, Any], call: GenerationRequest) -> dict[str, Any]:
        thinking_options(payload, call)
        return payload

    async def stream(self, call: GenerationRequest) -> AsyncIterator[list[ProviderEvent]]:
        recovery = _Recovery()
        batches = super().stream(call)
        try:
            async for batch in batches:
                out: list[ProviderEvent] = []
                for event in batch:
                    out += recovery.event(event)
                if out:
                    yield out
        finally:
            await batches.aclose()  # type: ignore[attr-defined]


def deepseek_settings(base_url: str = DEEPSEEK_BASE_URL, **overrides: Any) -> TransportSettings:
    """Transport settings for DeepSeek: its base URL unless told otherwise."""
    return TransportSettings(base_url=base_url, **overrides)
