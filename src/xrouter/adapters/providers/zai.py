"""Z.AI (GLM): a Chat Completions upstream with its own request knobs (docs.z.ai).

What differs from a plain OpenAI-compatible server, and lives only here:

- `max_tokens` rather than `max_completion_tokens` (GLM knows only the former);
- `thinking: {"type": "enabled" | "disabled"}` rather than `reasoning_effort`: Z.AI's switch
  is binary, so `reasoning.effort = "none"` disables thinking and any other effort enables it
  (GLM-4.5+ models think by default when nothing is sent); the effort level itself is not
  sent, as GLM has its own ladder (`low | high | max` on recent models only);
- `tool_stream: true` on a streamed call with tools: without it Z.AI buffers a tool call's
  arguments and sends them as one chunk after the whole call is generated (minutes of
  silence on a long argument), with it they arrive as ordinary argument fragments;
- `tool_choice`: Z.AI accepts only `"auto"`. `"none"` is honoured by sending no tools (the
  model then cannot call one, which is what the client asked); a forced choice (`"required"`,
  a named function, `allowed_tools` in `required` mode) cannot be honoured and is a 400
  naming `tool_choice`, never silently downgraded to `auto`. `parallel_tool_calls` is not a
  Z.AI field and is not sent.

Its 5xx answers ("Operation failed", "Internal Error") are transient. As an HTTP status, the
shared transport retries them like every 5xx (`RETRYABLE_STATUSES`). The same failure can also
come inside a 200, as an error object instead of a completion or as a stream's first event
(code `"500"`, or business code 1230 "API call process error" / 1234 "Network error"): then
nothing has reached the client yet, so the call is made again, up to the provider's
`max_retries` with the transport's backoff. Once an output event was produced, never.
Thinking text arrives as `reasoning_content`, which the shared chat parser already reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from xrouter.adapters.providers.inflight import InflightLimiter
from xrouter.adapters.providers.openai_compatible import (
    ChatDialect,
    OpenAICompatibleProvider,
    require_chat_protocol,
)
from xrouter.adapters.providers.provider_spec import ProviderSpec
from xrouter.adapters.providers.transport import HttpTransport
from xrouter.adapters.providers.upstream_errors import map_stream_error
from xrouter.application.ports import GenerationRequest
from xrouter.domain.errors import GatewayError, InvalidRequest, ProviderError
from xrouter.domain.provider_events import ProviderEvent, UpstreamInfo

log = logging.getLogger(__name__)

ZAI_BASE_URL = "https://api.z.ai/api/paas/v4"

ZAI_DIALECT = ChatDialect(max_tokens_field="max_tokens")

_TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")
_TRANSIENT_CODES = frozenset({"1230", "1234"})
"""Z.AI business codes of a failure on its side that a new attempt may not meet."""


class ZaiTransientError(ProviderError):
    """Z.AI failed on its side inside a 200 answer; worth another attempt before any output."""


def transient_failure(error: Mapping[str, Any]) -> bool:
    """Whether an error object Z.AI sent inside a 200 is its transient failure: a 5xx code,
    a transient business code, or its "Operation failed" message."""
    code = str(error.get("code") or "")
    message = str(error.get("message") or "").lower()
    server_side = len(code) == 3 and code.startswith("5") and code.isdigit()
    return server_side or code in _TRANSIENT_CODES or "operation failed" in message


def thinking_for(effort: str | None) -> dict[str, str] | None:
    """Z.AI's `thinking` switch for a Responses `reasoning.effort`; None when the client said
    nothing (the model's own default then applies)."""
    if not effort:
        return None
    return {"type": "disabled" if effort == "none" else "enabled"}


def zai_tool_options(payload: dict[str, Any]) -> None:
    """Make the chat payload's tool options ones Z.AI accepts, in place, or refuse (400)."""
    if "tools" not in payload:
        return
    choice = payload.get("tool_choice", "auto")
    if choice == "none":
        # Honoured exactly: with no tools offered the model cannot call one.
        for key in _TOOL_FIELDS:
            payload.pop(key, None)
        return
    if choice != "auto":
        shown = choice if isinstance(choice, str) else "a named function"
        raise InvalidRequest(
            f"Z.AI accepts only tool_choice 'auto' (or 'none'), so {shown!r} cannot be "
            "forced on this provider; send tool_choice 'auto' and describe in the prompt "
            "which tool to call.",
            param="tool_choice",
            code="unsupported_value",
        )
    payload["tool_choice"] = "auto"
    payload.pop("parallel_tool_calls", None)  # not a Z.AI field
    if payload.get("stream"):
        payload["tool_stream"] = True


class ZaiProvider(OpenAICompatibleProvider):
    """Z.AI over the shared transport; Chat Completions only (Z.AI has no Responses API)."""

    def __init__(
        self,
        spec: ProviderSpec,
        *,
        transport: HttpTransport | None = None,
        extra_headers: Mapping[str, str] | None = None,
        limiter: InflightLimiter | None = None,
    ) -> None:
        require_chat_protocol(spec, "Z.AI")
        super().__init__(
            spec,
            transport=transport,
            limiter=limiter,
            extra_headers=extra_headers,
            dialect=ZAI_DIALECT,
        )
        self._retry = spec.transport
        names = spec.setting_names

        def map_error(error: Mapping[str, Any]) -> GatewayError:
            mapped = map_stream_error(spec.name, error, setting_names=names)
            if type(mapped) is ProviderError and transient_failure(error):
                transient = ZaiTransientError(mapped.message)
                transient.upstream_status = mapped.upstream_status
                return transient
            return mapped

        self._map_error = map_error

    async def stream(self, call: GenerationRequest) -> AsyncIterator[list[ProviderEvent]]:
        """The call's events; a transient failure inside a 200 before any output event (the
        upstream's identity aside) makes the call again, up to `max_retries` times."""
        retries = 0
        while True:
            held: list[ProviderEvent] | None = []  # None once output went out
            try:
                async for batch in super().stream(call):
                    if held is None:
                        yield batch
                        continue
                    output = [event for event in batch if not isinstance(event, UpstreamInfo)]
                    if not output:
                        held += batch
                        continue
                    # The held identity, then the batch as it came (its own UpstreamInfo
                    # events, if any, keep their places).
                    early, held = held, None
                    yield early + batch
            except ZaiTransientError as error:
                if held is None or retries >= self._retry.max_retries:
                    raise
                retries += 1
                wait = min(self._retry.backoff_max_s, self._retry.backoff_initial_s * 2**retries)
                log.info(
                    "retrying a call to %s after its failure inside a 200 (retry %d of %d): %s",
                    self.name,
                    retries,
                    self._retry.max_retries,
                    error.message,
                )
                await asyncio.sleep(wait)
                continue
            if held:
                yield held
            return

    @property
    def compacts_natively(self) -> bool:
        """No `/responses/compact` on a chat upstream: the gateway compacts with the model."""
        return False

    def adjust_payload(self, payload: dict[str, Any], call: GenerationRequest) -> dict[str, Any]:
        zai_tool_options(payload)
        payload.pop("reasoning_effort", None)  # expressed as `thinking` below
        reasoning = call.request.reasoning
        thinking = thinking_for(reasoning.effort if reasoning is not None else None)
        if thinking is not None:
            payload.setdefault("thinking", thinking)  # a client's own `thinking` object wins
        return payload
