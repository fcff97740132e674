"""Client options the canonical request cannot express, carried to providers untouched as
`GenerationRequest.passthrough`. This is the one list of them: the Chat Completions mapping
and `ResponseRequest.passthrough()` read the options by these names, and every upstream
protocol says which of them it forwards and which it drops (tests/test_passthrough.py holds
each protocol to the whole list, so a new option cannot be forgotten by one of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RESPONSES_PASSTHROUGH: tuple[str, ...] = ("provider", "transforms", "plugins")
"""OpenRouter's routing extensions: fields of both APIs' requests, so both carry them.
(`models`, OpenRouter's fallback list, is the gateway's own: `application/fallbacks.py`.)"""

CHAT_ONLY_PASSTHROUGH: tuple[str, ...] = (
    "stop",
    "seed",
    "logit_bias",
    "logprobs",
    "web_search_options",
    # OpenRouter's chat extensions (docs/providers.md)
    "route",
    "reasoning",
    "include_reasoning",
    "top_k",
    "repetition_penalty",
    "min_p",
    "top_a",
    "prediction",
    "debug",
)
"""Chat Completions options with no place in a Responses request (OpenRouter's chat
`reasoning` object is not the Responses `reasoning` config, which is mapped, not passed
through): a Chat Completions client can send them, a Responses client cannot, and a Responses
upstream is never sent them."""

CHAT_PASSTHROUGH = CHAT_ONLY_PASSTHROUGH + RESPONSES_PASSTHROUGH
"""Every option a Chat Completions request carries to providers."""


def options_set(request: object, names: tuple[str, ...]) -> dict[str, Any]:
    """The options among `names` the client set on `request` (a field left at None is not
    sent on)."""
    options = {name: getattr(request, name) for name in names}
    return {name: value for name, value in options.items() if value is not None}


def forwarded(passthrough: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The options among `names` in a call's `passthrough`: what one protocol sends on."""
    return {name: passthrough[name] for name in names if name in passthrough}
