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


FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


class Finish(Struct, frozen=True):
    """The provider finished normally. `length` / `content_filter` make the response
    `incomplete`; anything else `completed`."""

    reason: FinishReason = "stop"


ProviderEvent = TextDelta | ReasoningDelta | ReasoningData | ToolCallDelta | UsageReport | Finish
