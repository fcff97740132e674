"""What a provider yields while it generates: small canonical deltas, independent of any
upstream wire format. The engine turns them into Responses stream events.

Providers report failure by raising `ProviderError` / `ProviderTimeout` (domain.errors),
before or after their first delta.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from xrouter.domain.responses import Usage


class TextDelta(Struct, frozen=True):
    """More assistant text for the current message."""

    text: str


class ReasoningDelta(Struct, frozen=True):
    """More reasoning summary text; always emitted before the answer it explains."""

    text: str


class ReasoningData(Struct, frozen=True):
    """Opaque reasoning state an upstream wants back on a later turn (OpenAI's
    `encrypted_content`, OpenRouter's `reasoning_details` as JSON). It belongs to the current
    reasoning item and is never shown as text; the latest one wins."""

    data: str


class ToolCallDelta(Struct, frozen=True):
    """Part of a function call. `index` tells parallel calls apart (as in Chat Completions);
    `call_id` and `name` arrive on the first delta of a call, argument fragments after."""

    index: int
    arguments: str = ""
    call_id: str | None = None
    name: str | None = None


class UsageReport(Struct, frozen=True):
    """Usage as the provider counted it; it wins over the gateway's own estimate."""

    usage: Usage
    cost: float | None = None
    """What the call cost, when the upstream says (OpenRouter credits); goes to the usage
    sink, not onto the wire."""


class UpstreamInfo(Struct, frozen=True):
    """What the upstream calls this answer: the model it says answered (which may differ from
    the one asked for: OpenRouter's `openrouter/auto`, aliases, versioned names) and its own
    response id (`chatcmpl-...`, `resp_...`). Emitted at most once per answer, as soon as the
    upstream names them; it carries no output, only what telemetry reports."""

    model: str | None = None
    response_id: str | None = None


UPSTREAM_NAME_MAX = 256
"""The longest upstream model name or response id kept; a longer one is not a name."""


def upstream_info(model: object, response_id: object) -> UpstreamInfo | None:
    """The `UpstreamInfo` for what an upstream answer said, or None when it named nothing
    usable. Only strings of at most `UPSTREAM_NAME_MAX` characters are kept: an odd or missing
    id never fails an answer, it is simply not reported."""
    kept_model = _name(model)
    kept_id = _name(response_id)
    if kept_model is None and kept_id is None:
        return None
    return UpstreamInfo(model=kept_model, response_id=kept_id)


def _name(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= UPSTREAM_NAME_MAX:
        return value
    return None


FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


class Finish(Struct, frozen=True):
    """The provider finished normally. `length` / `content_filter` make the response
    `incomplete`; anything else `completed`."""

    reason: FinishReason = "stop"


ProviderEvent = (
    TextDelta | ReasoningDelta | ReasoningData | ToolCallDelta | UsageReport | Finish | UpstreamInfo
)
