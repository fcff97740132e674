"""The passthrough options (domain/passthrough.py) against everything that reads them: both
APIs' request types, the chat mapping, and each upstream protocol, which must forward or
deliberately drop every option. A new option that one of them forgets fails here."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from xrouter.adapters.providers.gigachat import chat_protocol as gigachat
from xrouter.adapters.providers.openai_compatible import chat_protocol as chat
from xrouter.adapters.providers.openai_compatible import responses_protocol as responses
from xrouter.application.chat_mapping import to_canonical
from xrouter.application.ports import GenerationRequest
from xrouter.domain.chat import ChatRequest
from xrouter.domain.models import ModelRoute
from xrouter.domain.passthrough import (
    CHAT_ONLY_PASSTHROUGH,
    CHAT_PASSTHROUGH,
    RESPONSES_PASSTHROUGH,
)
from xrouter.domain.responses import InputItem, JSONObject, ResponseRequest

# A value of its field's type for every option a chat client may pass through.
SAMPLES: JSONObject = {
    "stop": ["END"],
    "seed": 7,
    "logit_bias": {"50256": -100.0},
    "logprobs": True,
    "web_search_options": {"search_context_size": "low"},
    "route": "fallback",
    "reasoning": {"max_tokens": 2000},
    "include_reasoning": True,
    "top_k": 40,
    "repetition_penalty": 1.1,
    "min_p": 0.05,
    "top_a": 0.2,
    "prediction": {"type": "content", "content": "x"},
    "debug": {"echo_upstream_body": True},
    "provider": {"order": ["anthropic"]},
    "transforms": ["middle-out"],
    "plugins": [{"id": "web"}],
}

# Each protocol: what it builds a payload with, what it forwards, what it drops.
PROTOCOLS: dict[str, tuple[Any, tuple[str, ...], tuple[str, ...]]] = {
    "chat": (chat.build_chat_payload, chat.FORWARDED_OPTIONS, ()),
    "responses": (
        responses.build_responses_payload,
        responses.FORWARDED_OPTIONS,
        responses.DROPPED_OPTIONS,
    ),
    "gigachat": (gigachat.build_payload, gigachat.FORWARDED_OPTIONS, gigachat.DROPPED_OPTIONS),
}


def test_the_lists_are_fields_of_the_requests_that_carry_them() -> None:
    assert set(SAMPLES) == set(CHAT_PASSTHROUGH)
    assert len(CHAT_PASSTHROUGH) == len(set(CHAT_PASSTHROUGH))
    assert not set(CHAT_ONLY_PASSTHROUGH) & set(RESPONSES_PASSTHROUGH)
    assert set(CHAT_PASSTHROUGH) <= set(ChatRequest.__struct_fields__)
    assert set(RESPONSES_PASSTHROUGH) <= set(ResponseRequest.__struct_fields__)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_protocol_forwards_or_drops_every_option(protocol: str) -> None:
    _, forwards, drops = PROTOCOLS[protocol]
    assert not set(forwards) & set(drops), "an option both forwarded and dropped"
    assert set(forwards) | set(drops) == set(CHAT_PASSTHROUGH), (
        "every passthrough option is forwarded or dropped, and nothing else is named"
    )


def call_for(passthrough: JSONObject) -> GenerationRequest:
    request = ResponseRequest(model="up/m", input="hi")
    return GenerationRequest(
        route=ModelRoute(provider="up", upstream_model="m"),
        request=request,
        items=[InputItem(role="user", content="hi")],
        instructions=None,
        passthrough=passthrough,
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_chat_request_with_every_option_reaches_each_upstream_with_its_own(
    protocol: str,
) -> None:
    chat_request = msgspec.convert(
        {"model": "up/m", "messages": [{"role": "user", "content": "hi"}], **SAMPLES},
        ChatRequest,
    )
    _, passthrough = to_canonical(chat_request)
    assert passthrough == SAMPLES
    build, forwards, _ = PROTOCOLS[protocol]
    payload = build(call_for(passthrough), stream=False)
    sent = {name: payload[name] for name in SAMPLES if name in payload}
    assert sent == {name: SAMPLES[name] for name in forwards}


def test_a_responses_request_passes_through_its_extensions_only() -> None:
    request = msgspec.convert(
        {"model": "up/m", "input": "hi", **{name: SAMPLES[name] for name in SAMPLES}},
        ResponseRequest,
    )
    assert request.passthrough() == {name: SAMPLES[name] for name in RESPONSES_PASSTHROUGH}
