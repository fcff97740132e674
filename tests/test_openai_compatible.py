"""The OpenAI-compatible provider: pure mappings both ways, the provider over a fake transport
(headers, BYOK, stream vs non-stream), and the whole gateway over real HTTP against the fake
upstream of tests/upstreams.py (client-visible answer and the exact upstream payload)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import msgspec
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.helpers import sse_events
from tests.upstreams import FakeUpstream, Reply
from xrouter.adapters.providers.local import LocalProvider
from xrouter.adapters.providers.openai_compatible import ChatDialect, OpenAICompatibleProvider
from xrouter.adapters.providers.openai_compatible.chat_parser import (
    ChatStreamParser,
    parse_completion,
)
from xrouter.adapters.providers.openai_compatible.chat_protocol import build_chat_payload
from xrouter.adapters.providers.openai_compatible.responses_protocol import (
    ResponsesStreamParser,
    build_responses_payload,
    parse_response,
)
from xrouter.adapters.providers.provider_spec import ProviderSpec
from xrouter.adapters.providers.transport import (
    SSEEvent,
    TransportSettings,
    UpstreamReply,
)
from xrouter.adapters.providers.upstream_errors import map_stream_error
from xrouter.application.ports import CallContext, GenerationRequest
from xrouter.domain.builder import ResponseBuilder
from xrouter.domain.errors import (
    GatewayError,
    InvalidRequest,
    ProviderError,
    Unauthorized,
    UpstreamRateLimited,
)
from xrouter.domain.models import ModelRoute
from xrouter.domain.provider_events import (
    Finish,
    ProviderEvent,
    ReasoningData,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UpstreamInfo,
    UsageReport,
)
from xrouter.domain.responses import (
    FunctionCallItem,
    InputItem,
    InputTokensDetails,
    MessageItem,
    OutputTokensDetails,
    ReasoningItem,
    Response,
    ResponseRequest,
    Usage,
)

JSON = dict[str, Any]
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def make_call(
    body: JSON,
    *,
    passthrough: JSON | None = None,
    context: CallContext | None = None,
    upstream_model: str = "gpt-4o",
) -> GenerationRequest:
    request = msgspec.convert({"model": f"up/{upstream_model}", **body}, ResponseRequest)
    items = (
        [InputItem(role="user", content=request.input)]
        if isinstance(request.input, str)
        else request.input
    )
    return GenerationRequest(
        route=ModelRoute(provider="up", upstream_model=upstream_model),
        request=request,
        items=items,
        instructions=request.instructions,
        passthrough=passthrough or {},
        context=context or CallContext(),
    )


def mapper(error: Any) -> GatewayError:
    return map_stream_error("up", error)


def chunk(delta: JSON | None = None, finish: str | None = None, **extra: Any) -> str:
    body: JSON = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    body["choices"] = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    )
    body.update(extra)
    return json.dumps(body)


def feed_all(parser: ChatStreamParser | ResponsesStreamParser, datas: list[str]) -> list[Any]:
    events: list[Any] = []
    for data in datas:
        events += parser.feed(data)
    return events + parser.finish()


# --- canonical -> chat payload ----------------------------------------------------------------


def test_chat_payload_full_conversation_snapshot() -> None:
    call = make_call(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use metric units."},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Weather here?"},
                        {"type": "input_image", "image_url": "https://x/i.png", "detail": "low"},
                        {"type": "input_file", "file_id": "file-1", "filename": "a.pdf"},
                    ],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
                },
                {
                    "type": "function_call",
                    "call_id": "call_a",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {
                    "type": "function_call",
                    "call_id": "call_b",
                    "name": "get_weather",
                    "arguments": '{"city":"Oslo"}',
                },
                {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
                {
                    "type": "function_call_output",
                    "call_id": "call_b",
                    "output": [{"type": "input_text", "text": "4C"}],
                },
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [WEATHER_TOOL, {"type": "web_search"}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": True,
            "temperature": 0.2,
            "top_p": 0.9,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.3,
            "max_output_tokens": 300,
            "reasoning": {"effort": "low"},
            "user": "u-1",
            "store": True,
            "metadata": {"k": "v"},
        },
        passthrough={"stop": ["\n"], "seed": 7, "logit_bias": {"50256": -100}, "model": "evil"},
    )
    assert build_chat_payload(call, stream=False) == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric units."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "low"}},
                    {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_b", "content": "4C"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": WEATHER_TOOL["parameters"],
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.3,
        "max_completion_tokens": 300,
        "reasoning_effort": "low",
        "user": "u-1",
        "stop": ["\n"],
        "seed": 7,
        "logit_bias": {"50256": -100},
    }


def test_chat_payload_streaming_asks_for_usage_and_omits_tool_options_without_tools() -> None:
    call = make_call({"input": "hi", "tool_choice": "required", "stream": True})
    payload = build_chat_payload(call, stream=True)
    assert payload == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_function_calls_without_preceding_text_make_a_content_null_assistant_message() -> None:
    call = make_call(
        {
            "input": [
                {"role": "user", "content": "go"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
            ]
        }
    )
    messages = build_chat_payload(call, stream=False)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["content"] is None
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["c1"]
    assert [c["id"] for c in messages[3]["tool_calls"]] == ["c2"]


@pytest.mark.parametrize(
    ("text_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {
                "type": "json_schema",
                "name": "answer",
                "schema": {"type": "object"},
                "strict": True,
                "description": "The answer",
            },
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "schema": {"type": "object"},
                    "strict": True,
                    "description": "The answer",
                },
            },
        ),
    ],
)
def test_text_format_becomes_response_format(text_format: JSON, expected: JSON | None) -> None:
    payload = build_chat_payload(
        make_call({"input": "x", "text": {"format": text_format}}), stream=False
    )
    assert payload.get("response_format") == expected


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
        ({"type": "allowed_tools", "mode": "required", "tools": []}, "required"),
    ],
)
def test_tool_choice_mapping(choice: Any, expected: Any) -> None:
    call = make_call(
        {"input": "x", "tools": [{**WEATHER_TOOL, "name": "f"}], "tool_choice": choice}
    )
    assert build_chat_payload(call, stream=False)["tool_choice"] == expected


def test_dialect_chooses_max_tokens_field_and_reasoning_shape() -> None:
    call = make_call({"input": "x", "max_output_tokens": 5, "reasoning": {"effort": "high"}})
    dialect = ChatDialect(max_tokens_field="max_tokens", reasoning_object=True)
    payload = build_chat_payload(call, stream=False, dialect=dialect)
    assert payload["max_tokens"] == 5
    assert "max_completion_tokens" not in payload
    assert payload["reasoning"] == {"effort": "high"}
    assert "reasoning_effort" not in payload


def test_reasoning_items_are_dropped_unless_the_dialect_sends_details_back() -> None:
    details = [{"type": "reasoning.encrypted", "data": "abc", "format": "x", "index": 0}]
    call = make_call(
        {
            "input": [
                {"role": "user", "content": "q"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "encrypted_content": json.dumps(details),
                },
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            ]
        }
    )
    plain = build_chat_payload(call, stream=False)["messages"]
    assert "reasoning_details" not in plain[1]
    sent = build_chat_payload(call, stream=False, dialect=ChatDialect(reasoning_details=True))
    assert sent["messages"][1]["reasoning_details"] == details


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_image", "file_id": "file-1"},
        {"type": "input_file", "file_url": "https://x/a.pdf"},
        {"type": "input_audio", "data": "..."},
    ],
)
def test_parts_chat_cannot_carry_are_a_clear_400(part: JSON) -> None:
    call = make_call({"input": [{"role": "user", "content": [part]}]})
    with pytest.raises(InvalidRequest) as info:
        build_chat_payload(call, stream=False)
    assert info.value.param is not None and info.value.param.startswith("input[0].content[0]")


# --- chat answers -> events -----------------------------------------------------------------------


def test_parse_completion_with_reasoning_parallel_calls_and_usage() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "reasoning_content": "The user wants weather.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"A"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"B"}'},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 10,
            "total_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 8},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }
    parsed = parse_completion(json.dumps(body).encode(), provider="up", map_error=mapper)
    assert parsed == [
        UpstreamInfo(response_id="chatcmpl-1"),
        ReasoningDelta("The user wants weather."),
        TextDelta("Let me check."),
        ToolCallDelta(index=0, call_id="call_1", name="get_weather", arguments='{"city":"A"}'),
        ToolCallDelta(index=1, call_id="call_2", name="get_weather", arguments='{"city":"B"}'),
        UsageReport(
            Usage(
                input_tokens=20,
                output_tokens=10,
                total_tokens=30,
                input_tokens_details=InputTokensDetails(cached_tokens=8),
                output_tokens_details=OutputTokensDetails(reasoning_tokens=4),
            )
        ),
        Finish("tool_calls"),
    ]


@pytest.mark.parametrize(
    ("raw", "calls", "expected"),
    [
        ("stop", False, "stop"),
        ("length", False, "length"),
        ("content_filter", False, "content_filter"),
        ("tool_calls", True, "tool_calls"),
        ("function_call", False, "tool_calls"),
        ("stop", True, "tool_calls"),  # vLLM / Ollama answer calls with "stop"
        ("eos", False, "stop"),
    ],
)
def test_every_finish_reason(raw: str | None, calls: bool, expected: str) -> None:
    message: JSON = {"role": "assistant", "content": "x"}
    if calls:
        message["tool_calls"] = [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]
    body = {"choices": [{"index": 0, "message": message, "finish_reason": raw}]}
    events = parse_completion(json.dumps(body).encode(), provider="up", map_error=mapper)
    assert events[-1] == Finish(expected)  # type: ignore[arg-type]


def test_error_inside_a_200_completion_is_a_failure() -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "error",
                "error": {"code": 429, "message": "Upstream rate limited"},
            }
        ]
    }
    with pytest.raises(UpstreamRateLimited, match="Upstream rate limited"):
        parse_completion(json.dumps(body).encode(), provider="up", map_error=mapper)


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"<html><body>Bad gateway sk-secret-in-page</body></html>", "text/html; charset=utf-8",
         "answered with a 55-byte text/html body that is not a Chat Completions answer: it is "
         "not JSON"),
        (b"", "application/json", "answered with an empty body"),
        (b"  \n", None, "answered with a blank 3-byte body"),
        (b"[1, 2]", "application/json", "Expected `object`, got `array`"),
        (b'{"id": "x", "object": "chat.completion"}', "application/json", "has no `choices`"),
        (b'{"choices": []}', "application/json", "`choices` is empty"),
        (b'{"choices": [{"index": 0, "message": {"content": "hi"}}]}', "application/json",
         "its choice has no `finish_reason`"),
        (b'{"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": null}]}',
         None, "its choice has no `finish_reason`"),
    ],
)  # fmt: skip
def test_a_200_that_is_not_a_completion_fails_saying_what_came_back(
    body: bytes, content_type: str | None, says: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_completion(body, provider="up", map_error=mapper, content_type=content_type)
    assert caught.value.status == 502
    assert "The provider 'up'" in caught.value.message
    assert says in caught.value.message
    assert "sk-secret" not in caught.value.message  # what came back, never what it says


def test_an_error_object_in_a_200_completion_is_the_upstream_s_error() -> None:
    body = b'{"error": {"message": "boom", "code": "server_error"}}'
    with pytest.raises(ProviderError, match="boom"):
        parse_completion(body, provider="up", map_error=mapper)


def test_chat_stream_text_reasoning_usage_and_finish_order() -> None:
    parser = ChatStreamParser(provider="up", map_error=mapper)
    events = feed_all(
        parser,
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "Think"}),
            chunk({"reasoning": "ing."}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "length"),
            chunk(
                None,
                usage={
                    "prompt_tokens": 3,
                    "completion_tokens": 2,
                    "total_tokens": 5,
                    "prompt_tokens_details": None,
                },
            ),
        ],
    )
    assert events == [
        UpstreamInfo(model="m", response_id="c1"),  # from the first chunk only
        ReasoningDelta("Think"),
        ReasoningDelta("ing."),
        TextDelta("Hel"),
        TextDelta("lo"),
        UsageReport(Usage(input_tokens=3, output_tokens=2, total_tokens=5)),
        Finish("length"),
    ]


def test_chat_stream_parallel_tool_calls_keyed_by_index() -> None:
    parser = ChatStreamParser(provider="up", map_error=mapper)
    events = feed_all(
        parser,
        [
            chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                   "function": {"name": "f", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                   "function": {"name": "g", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
        ],
    )  # fmt: skip
    assert events == [
        UpstreamInfo(model="m", response_id="c1"),
        ToolCallDelta(index=0, call_id="call_a", name="f"),
        ToolCallDelta(index=0, arguments='{"x":'),
        ToolCallDelta(index=1, call_id="call_b", name="g"),
        ToolCallDelta(index=0, arguments="1}"),
        ToolCallDelta(index=1, arguments="{}"),
        Finish("tool_calls"),
    ]


def test_chat_stream_tolerates_resent_ids_missing_indexes_and_reused_index() -> None:
    parser = ChatStreamParser(provider="up", map_error=mapper)
    events = feed_all(
        parser,
        [
            # id resent on every delta
            chunk({"tool_calls": [{"index": 0, "id": "a",
                                   "function": {"name": "f", "arguments": "{"}}]}),
            chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"arguments": "}"}}]}),
            # a second call that reuses index 0 with a new id
            chunk({"tool_calls": [{"index": 0, "id": "b",
                                   "function": {"name": "g", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "[]"}}]}),
            # no index at all
            chunk({"tool_calls": [{"id": "c", "function": {"name": "h", "arguments": ""}}]}),
            chunk({"tool_calls": [{"function": {"arguments": "1"}}]}),
            chunk({}, "stop"),
        ],
    )  # fmt: skip
    assert events == [
        UpstreamInfo(model="m", response_id="c1"),
        ToolCallDelta(index=0, call_id="a", name="f", arguments="{"),
        ToolCallDelta(index=0, arguments="}"),
        ToolCallDelta(index=1, call_id="b", name="g"),
        ToolCallDelta(index=1, arguments="[]"),
        ToolCallDelta(index=2, call_id="c", name="h"),
        ToolCallDelta(index=2, arguments="1"),
        Finish("tool_calls"),
    ]


def test_chat_stream_without_finish_reason_fails_rather_than_finishing() -> None:
    parser = ChatStreamParser(provider="up", map_error=mapper)
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    with pytest.raises(ProviderError, match="without a finish_reason"):
        feed_all(parser, [chunk({"content": "hi"}), chunk(None, usage=usage)])
    empty = ChatStreamParser(provider="up", map_error=mapper)
    with pytest.raises(ProviderError, match="without a finish_reason"):
        empty.finish()


def test_chat_stream_error_frame_raises_the_mapped_error() -> None:
    parser = ChatStreamParser(provider="up", map_error=mapper)
    parser.feed(chunk({"content": "partial"}))
    with pytest.raises(GatewayError) as info:
        parser.feed(json.dumps({"error": {"message": "context too long",
                                          "code": "context_length_exceeded"}}))  # fmt: skip
    assert isinstance(info.value, InvalidRequest)
    assert "context too long" in info.value.message


def test_a_chat_answer_names_the_upstream_model_and_id_and_odd_values_are_ignored() -> None:
    """gen_ai.response.model / .id: what the upstream says, which may differ from the model
    asked for (OpenRouter routes `openrouter/auto`); an odd value is dropped, never a failure."""
    choices = [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]

    def first(body: JSON) -> Any:
        return parse_completion(json.dumps(body).encode(), provider="up", map_error=mapper)[0]

    routed = {"id": "gen-1", "model": "anthropic/claude-sonnet-4", "choices": choices}
    assert first(routed) == UpstreamInfo(model="anthropic/claude-sonnet-4", response_id="gen-1")
    assert first({"id": 7, "model": "m" * 257, "choices": choices}) == TextDelta("hi")
    assert first({"id": None, "model": ["m"], "choices": choices}) == TextDelta("hi")
    assert first({"id": "x" * 256, "model": {}, "choices": choices}) == UpstreamInfo(
        response_id="x" * 256
    )


def test_a_chat_stream_names_the_upstream_once_from_the_first_chunk_that_says() -> None:
    parser = ChatStreamParser(provider="up", map_error=mapper)
    events = feed_all(
        parser,
        [
            json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
            chunk({"content": "a"}, id="chatcmpl-9", model="gpt-4o-2024-08-06"),
            chunk({"content": "b"}, "stop", id="chatcmpl-other", model="other"),
        ],
    )
    assert events == [
        UpstreamInfo(model="gpt-4o-2024-08-06", response_id="chatcmpl-9"),
        TextDelta("a"),
        TextDelta("b"),
        Finish("stop"),
    ]
    odd = ChatStreamParser(provider="up", map_error=mapper)
    assert feed_all(odd, [chunk({"content": "a"}, "stop", id=1, model=False)]) == [
        TextDelta("a"),
        Finish("stop"),
    ]


# --- Responses upstream ------------------------------------------------------------------------


def test_responses_payload_snapshot() -> None:
    call = make_call(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "hi", "id": "msg_client"},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "enc"},
                {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text",
                                                                  "text": "bare"}]},
                {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f",
                 "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
            "tools": [WEATHER_TOOL, {"type": "web_search"}],
            "tool_choice": "required",
            "text": {"format": {"type": "json_object"}},
            "reasoning": {"effort": "high", "summary": "auto"},
            "max_output_tokens": 64,
            "temperature": 0.5,
            "include": ["reasoning.encrypted_content"],
        },
        passthrough={"stop": ["x"], "seed": 1},
    )  # fmt: skip
    assert build_responses_payload(call, stream=True) == {
        "model": "gpt-4o",
        "input": [
            {"type": "message", "role": "user", "content": "hi"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "enc"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ],
        "store": False,
        "stream": True,
        "instructions": "Be brief.",
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": True,
        "text": {"format": {"type": "json_object"}, "verbosity": "medium"},
        "reasoning": {"effort": "high", "summary": "auto"},
        "max_output_tokens": 64,
        "temperature": 0.5,
        "include": ["reasoning.encrypted_content"],
    }


def rsp_event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def test_usage_without_total_or_details_is_summed_with_zero_details_in_both_protocols() -> None:
    chat = {
        "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3},
    }
    response = {
        "status": "completed",
        "output": [],
        "usage": {"input_tokens": 4, "output_tokens": 3, "input_tokens_details": None},
    }
    from_chat = parse_completion(json.dumps(chat).encode(), provider="up", map_error=mapper)
    from_responses = parse_response(json.dumps(response).encode(), provider="up", map_error=mapper)
    expected = UsageReport(Usage(input_tokens=4, output_tokens=3, total_tokens=7))
    assert expected in from_chat
    assert expected in from_responses


RESPONSES_USAGE = {
    "input_tokens": 10,
    "output_tokens": 6,
    "total_tokens": 16,
    "input_tokens_details": {"cached_tokens": 2},
    "output_tokens_details": {"reasoning_tokens": 3},
}
EXPECTED_USAGE = Usage(
    input_tokens=10,
    output_tokens=6,
    total_tokens=16,
    input_tokens_details=InputTokensDetails(cached_tokens=2),
    output_tokens_details=OutputTokensDetails(reasoning_tokens=3),
)


def test_responses_stream_events() -> None:
    parser = ResponsesStreamParser(provider="up", map_error=mapper)
    events = feed_all(
        parser,
        [
            rsp_event("response.created", response={"status": "in_progress"}),
            rsp_event("response.output_item.added", output_index=0,
                      item={"type": "reasoning", "id": "rs_u", "summary": []}),
            rsp_event("response.reasoning_summary_text.delta", output_index=0, delta="Hmm"),
            rsp_event("response.reasoning_summary_part.added", output_index=0, summary_index=1),
            rsp_event("response.reasoning_summary_text.delta", output_index=0, delta="ok"),
            rsp_event("response.output_item.done", output_index=0,
                      item={"type": "reasoning", "id": "rs_u", "encrypted_content": "ENC"}),
            rsp_event("response.output_item.added", output_index=1,
                      item={"type": "function_call", "call_id": "c1", "name": "f",
                            "arguments": ""}),
            rsp_event("response.function_call_arguments.delta", output_index=1, delta='{"a"'),
            rsp_event("response.output_item.added", output_index=2,
                      item={"type": "function_call", "call_id": "c2", "name": "g",
                            "arguments": ""}),
            rsp_event("response.function_call_arguments.delta", output_index=2, delta="{}"),
            rsp_event("response.function_call_arguments.delta", output_index=1, delta=":1}"),
            rsp_event("response.output_item.done", output_index=1,
                      item={"type": "function_call", "call_id": "c1", "name": "f",
                            "arguments": '{"a":1}'}),
            rsp_event("response.completed",
                      response={"status": "completed", "usage": RESPONSES_USAGE}),
        ],
    )  # fmt: skip
    assert events == [
        ReasoningDelta("Hmm"),
        ReasoningDelta("\n\n"),
        ReasoningDelta("ok"),
        ReasoningData("ENC"),
        ToolCallDelta(index=0, call_id="c1", name="f"),
        ToolCallDelta(index=0, arguments='{"a"'),
        ToolCallDelta(index=1, call_id="c2", name="g"),
        ToolCallDelta(index=1, arguments="{}"),
        ToolCallDelta(index=0, arguments=":1}"),
        UsageReport(EXPECTED_USAGE),
        Finish("tool_calls"),
    ]
    assert parser.done


def test_responses_stream_fills_in_items_a_server_only_sent_as_done() -> None:
    parser = ResponsesStreamParser(provider="up", map_error=mapper)
    events = feed_all(
        parser,
        [
            rsp_event("response.output_item.done", output_index=0,
                      item={"type": "message", "content": [{"type": "output_text",
                                                            "text": "Hello"}]}),
            rsp_event("response.output_item.done", output_index=1,
                      item={"type": "function_call", "call_id": "c", "name": "f",
                            "arguments": "{}"}),
            rsp_event("response.completed", response={"status": "completed"}),
        ],
    )  # fmt: skip
    assert events == [
        TextDelta("Hello"),
        ToolCallDelta(index=0, call_id="c", name="f"),
        ToolCallDelta(index=0, arguments="{}"),
        Finish("tool_calls"),
    ]


@pytest.mark.parametrize(
    ("reason", "expected"), [("max_output_tokens", "length"), ("content_filter", "content_filter")]
)
def test_responses_incomplete_finishes_by_reason(reason: str, expected: str) -> None:
    parser = ResponsesStreamParser(provider="up", map_error=mapper)
    events = feed_all(
        parser,
        [
            rsp_event("response.output_text.delta", output_index=0, delta="Hi"),
            rsp_event(
                "response.incomplete",
                response={"status": "incomplete", "incomplete_details": {"reason": reason}},
            ),
        ],
    )
    assert events == [TextDelta("Hi"), Finish(expected)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        rsp_event(
            "response.failed",
            response={"status": "failed", "error": {"code": "rate_limit_exceeded",
                                                    "message": "slow down"}},
        ),
        rsp_event("error", error={"type": "x", "code": "rate_limit_exceeded",
                                  "message": "slow down"}),
    ],
)  # fmt: skip
def test_responses_failures_raise(data: str) -> None:
    parser = ResponsesStreamParser(provider="up", map_error=mapper)
    with pytest.raises(UpstreamRateLimited, match="slow down"):
        parser.feed(data)


def test_responses_stream_cut_before_completed_fails() -> None:
    parser = ResponsesStreamParser(provider="up", map_error=mapper)
    parser.feed(rsp_event("response.output_text.delta", output_index=0, delta="Hi"))
    with pytest.raises(ProviderError, match=r"before response\.completed"):
        parser.finish()


def test_the_terminal_event_s_type_says_how_the_response_ended() -> None:
    """A terminal event whose embedded response lacks a status (or has none at all) ends as
    its type says, never as `completed` by default."""
    parser = ResponsesStreamParser(provider="up", map_error=mapper)
    events = feed_all(
        parser,
        [
            rsp_event("response.output_text.delta", output_index=0, delta="Hi"),
            rsp_event("response.incomplete", response={"incomplete_details": None}),
        ],
    )
    assert events == [TextDelta("Hi"), Finish("length")]
    bare = ResponsesStreamParser(provider="up", map_error=mapper)
    assert feed_all(bare, [rsp_event("response.completed")]) == [Finish("stop")]


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"<!doctype html><title>Login</title>", "text/html",
         "a 35-byte text/html body that is not a Responses API response object: it is not JSON"),
        (b"", "application/json", "answered with an empty body"),
        (b'"completed"', "application/json", "Expected `object`, got `str`"),
        (b"{}", "application/json", "it has no `status` and no `output`"),
        (b'{"id": "resp_1", "output": []}', "application/json", "it has no `status`"),
        (b'{"id": "resp_1", "status": "completed"}', "application/json", "it has no `output`"),
        (b'{"status": "in_progress", "output": []}', "application/json",
         "ended the response with status 'in_progress'"),
    ],
)  # fmt: skip
def test_a_200_that_is_not_a_response_object_fails_saying_what_came_back(
    body: bytes, content_type: str, says: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_response(body, provider="up", map_error=mapper, content_type=content_type)
    assert caught.value.status == 502
    assert "The provider 'up'" in caught.value.message
    assert says in caught.value.message


def _parse_seconds(deltas: int) -> float:
    """Seconds to parse a Responses stream of `deltas` token-sized text deltas and the done
    item that repeats them (the best of three runs, so a busy machine cannot fake a trend)."""
    datas = [rsp_event("response.output_text.delta", output_index=0, delta="token ")] * deltas
    text = "token " * deltas
    done = rsp_event(
        "response.output_item.done",
        output_index=0,
        item={"type": "message", "content": [{"type": "output_text", "text": text}]},
    )
    best = float("inf")
    for _ in range(3):
        parser = ResponsesStreamParser(provider="up", map_error=mapper)
        started = time.perf_counter()
        for data in datas:
            parser.feed(data)
        assert parser.feed(done) == []  # everything was streamed: nothing to fill in
        best = min(best, time.perf_counter() - started)
    return best


def test_streamed_text_accumulates_in_linear_time() -> None:
    """Issue 9, item 13: one string grown per delta cost 1.3 us a delta at first and 68.7 us at
    100k deltas (quadratic: here 5x the deltas took 38x the time). Linear is 5x; 15x allows
    for a busy machine and still fails the quadratic version."""
    small, large = _parse_seconds(20_000), _parse_seconds(100_000)
    assert large / small < 15, f"20k deltas: {small:.3f} s, 100k deltas: {large:.3f} s"


def test_parse_whole_response_object() -> None:
    body = {
        "id": "resp_u",
        "object": "response",
        "status": "completed",
        "output": [
            {
                "type": "reasoning",
                "id": "rs_u",
                "summary": [{"type": "summary_text", "text": "Plan"}],
                "encrypted_content": "ENC",
            },
            {
                "type": "message",
                "id": "msg_u",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Done.", "annotations": []}],
            },
            {"type": "function_call", "id": "fc", "call_id": "c1", "name": "f", "arguments": "{}"},
        ],
        "usage": RESPONSES_USAGE,
    }
    assert parse_response(json.dumps(body).encode(), provider="up", map_error=mapper) == [
        UpstreamInfo(response_id="resp_u"),
        ReasoningDelta("Plan"),
        ReasoningData("ENC"),
        TextDelta("Done."),
        ToolCallDelta(index=0, call_id="c1", name="f", arguments="{}"),
        UsageReport(EXPECTED_USAGE),
        Finish("tool_calls"),
    ]


def test_a_responses_upstream_names_its_response_id_and_model() -> None:
    body = {"id": "resp_9", "model": "gpt-5-2025-08-07", "status": "completed", "output": []}
    assert parse_response(json.dumps(body).encode(), provider="up", map_error=mapper) == [
        UpstreamInfo(model="gpt-5-2025-08-07", response_id="resp_9"),
        Finish("stop"),
    ]
    odd = {"id": 5, "model": "m" * 300, "status": "completed", "output": []}
    assert parse_response(json.dumps(odd).encode(), provider="up", map_error=mapper) == [
        Finish("stop")
    ]


def test_a_responses_stream_names_the_upstream_once_from_response_created() -> None:
    named = {"id": "resp_9", "model": "gpt-5-2025-08-07"}
    parser = ResponsesStreamParser(provider="up", map_error=mapper)
    events = feed_all(
        parser,
        [
            rsp_event("response.created", response={**named, "status": "in_progress"}),
            rsp_event("response.in_progress", response={**named, "status": "in_progress"}),
            rsp_event("response.output_text.delta", output_index=0, delta="Hi"),
            rsp_event("response.completed", response={**named, "status": "completed"}),
        ],
    )
    assert events == [
        UpstreamInfo(model="gpt-5-2025-08-07", response_id="resp_9"),
        TextDelta("Hi"),
        Finish("stop"),
    ]
    # A server that skips response.created names them at its terminal event, before Finish.
    late = ResponsesStreamParser(provider="up", map_error=mapper)
    events = feed_all(
        late,
        [
            rsp_event("response.output_text.delta", output_index=0, delta="Hi"),
            rsp_event("response.completed", response={"id": "resp_2", "status": "completed"}),
        ],
    )
    assert events == [TextDelta("Hi"), UpstreamInfo(response_id="resp_2"), Finish("stop")]


# --- the builder keeps opaque reasoning state ---------------------------------------------------


def test_builder_records_reasoning_data_on_the_reasoning_item() -> None:
    counter = iter(range(100))
    builder = ResponseBuilder(
        Response(id="resp_1", created_at=0, status="in_progress", model="m"),
        lambda prefix: f"{prefix}_{next(counter)}",
    )
    builder.start()
    for event in [ReasoningDelta("why"), ReasoningData('[{"type":"x"}]'), TextDelta("ok")]:
        builder.feed(event)
    builder.close_items()
    final = builder.complete(Usage(input_tokens=1, output_tokens=1, total_tokens=2), 0).response
    reasoning, message = final.output
    assert isinstance(reasoning, ReasoningItem) and isinstance(message, MessageItem)
    assert reasoning.encrypted_content == '[{"type":"x"}]'  # round-trips through the client
    assert not any(isinstance(item, FunctionCallItem) for item in final.output)


def _built(deltas: list[ProviderEvent]) -> tuple[ResponseBuilder, list[Any]]:
    """A builder fed `deltas` from start to completion, and every event it produced."""
    counter = iter(range(100))
    builder = ResponseBuilder(
        Response(id="resp_1", created_at=0, status="in_progress", model="up/auto"),
        lambda prefix: f"{prefix}_{next(counter)}",
    )
    events: list[Any] = builder.start()
    for delta in deltas:
        events += builder.feed(delta)
    events += builder.close_items()
    events.append(builder.complete(Usage(input_tokens=1, output_tokens=2, total_tokens=3), 0))
    return builder, events


def test_the_builder_keeps_what_the_upstream_named_and_outputs_nothing_for_it() -> None:
    answer: list[ProviderEvent] = [ReasoningDelta("why"), TextDelta("o"), TextDelta("k")]
    plain, plain_events = _built([*answer, Finish("stop")])
    named, named_events = _built(
        [
            UpstreamInfo(model="routed/model-1"),
            answer[0],
            UpstreamInfo(model="later", response_id="gen-1"),  # fills only the missing id
            *answer[1:],
            UpstreamInfo(model="last", response_id="gen-2"),
            Finish("stop"),
        ]
    )
    assert named_events == plain_events  # no extra SSE event, same output, same numbering
    assert named.response == plain.response
    assert named.response.model == "up/auto"  # the model the client asked for, on the wire
    assert named.chunks == plain.chunks == 3
    assert (named.upstream_model, named.upstream_response_id) == ("routed/model-1", "gen-1")
    assert (plain.upstream_model, plain.upstream_response_id) == (None, None)


# --- the provider over a fake transport ----------------------------------------------------------


class FakeTransport:
    model_entries: ClassVar[list[JSON]] = [{"id": "gpt-4o", "owned_by": "openai", "created": 5}]
    """What GET /models answers (set on an instance to change it)."""
    """Records calls; answers with canned bodies or SSE data."""

    def __init__(
        self, *, content: bytes = b"", events: list[str] | None = None, one_read: bool = False
    ) -> None:
        """`one_read`: all `events` come in one read of the body (a fast upstream), not one
        read each."""
        self.content = content
        self.events = events or []
        self.one_read = one_read
        self.calls: list[tuple[str, str, JSON, dict[str, str], bool]] = []
        self.closed = False
        self.require_done: bool | None = None

    async def post_json(
        self, path: str, body: bytes, headers: Mapping[str, str], *, byok: bool = False
    ) -> UpstreamReply:
        self.calls.append(("POST", path, json.loads(body), dict(headers), byok))
        return UpstreamReply(200, {}, self.content)  # type: ignore[arg-type]

    async def stream_events(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        byok: bool = False,
        require_done: bool = True,
    ) -> AsyncIterator[list[SSEEvent]]:
        self.calls.append(("STREAM", path, json.loads(body), dict(headers), byok))
        self.require_done = require_done
        try:
            if self.one_read:
                yield [SSEEvent(None, data) for data in self.events]
                return
            for data in self.events:
                yield [SSEEvent(None, data)]
        finally:
            self.closed = True

    async def get_json(self, path: str, headers: Mapping[str, str], *, byok: bool = False) -> Any:
        self.calls.append(("GET", path, {}, dict(headers), byok))
        return {"object": "list", "data": self.model_entries}


def provider_over(transport: FakeTransport, **kwargs: Any) -> OpenAICompatibleProvider:
    kwargs.setdefault("api_key", "sk-test")
    extra_headers = kwargs.pop("extra_headers", None)
    spec = ProviderSpec(name="up", transport=TransportSettings(base_url="http://unused"), **kwargs)
    return OpenAICompatibleProvider(
        spec,
        transport=transport,  # type: ignore[arg-type]
        extra_headers=extra_headers,
    )


async def collect(provider: OpenAICompatibleProvider, call: GenerationRequest) -> list[Any]:
    return [event async for batch in provider.stream(call) for event in batch]


COMPLETION = json.dumps(
    {"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]}
).encode()


async def test_provider_sends_key_traceparent_and_extra_headers() -> None:
    transport = FakeTransport(content=COMPLETION)
    provider = provider_over(transport, extra_headers={"X-Extra": "1"})
    context = CallContext(client_token="client-token", traceparent="00-abc-def-01")
    events = await collect(provider, make_call({"input": "hi"}, context=context))
    assert events == [TextDelta("hi"), Finish("stop")]
    method, path, _, headers, byok = transport.calls[0]
    assert (method, path, byok) == ("POST", "/chat/completions", False)
    assert headers == {
        "X-Extra": "1",
        "Authorization": "Bearer sk-test",
        "traceparent": "00-abc-def-01",
    }


async def test_byok_forwards_the_client_token_never_the_configured_key() -> None:
    transport = FakeTransport(content=COMPLETION)
    provider = provider_over(transport, byok=True)
    await collect(provider, make_call({"input": "hi"}, context=CallContext(client_token="mine")))
    assert transport.calls[0][3]["Authorization"] == "Bearer mine"
    assert transport.calls[0][4] is True
    with pytest.raises(Unauthorized):
        await collect(provider, make_call({"input": "hi"}))
    assert len(transport.calls) == 1


async def test_provider_streams_chat_and_closes_the_upstream_stream() -> None:
    transport = FakeTransport(events=[chunk({"content": "a"}), chunk({"content": "b"}, "stop")])
    provider = provider_over(transport)
    events = await collect(provider, make_call({"input": "hi", "stream": True}))
    assert events == [
        UpstreamInfo(model="m", response_id="c1"),
        TextDelta("a"),
        TextDelta("b"),
        Finish("stop"),
    ]
    assert transport.calls[0][0:2] == ("STREAM", "/chat/completions")
    assert transport.calls[0][2]["stream"] is True
    assert transport.require_done is True  # a chat stream without [DONE] was cut short
    assert transport.closed


async def test_provider_yields_one_batch_per_read_of_the_upstream() -> None:
    transport = FakeTransport(
        events=[chunk({"content": "a"}), chunk({"content": "b"}), chunk({}, "stop")],
        one_read=True,
    )
    provider = provider_over(transport)
    batches = [b async for b in provider.stream(make_call({"input": "hi", "stream": True}))]
    assert batches == [
        [UpstreamInfo(model="m", response_id="c1"), TextDelta("a"), TextDelta("b")],
        [Finish("stop")],  # said once the stream ended
    ]


async def test_a_failure_inside_a_read_comes_after_the_events_before_it() -> None:
    error = json.dumps({"error": {"message": "overloaded", "code": 529}})
    transport = FakeTransport(events=[chunk({"content": "a"}), error], one_read=True)
    provider = provider_over(transport)
    stream = provider.stream(make_call({"input": "hi", "stream": True}))
    assert await anext(stream) == [UpstreamInfo(model="m", response_id="c1"), TextDelta("a")]
    with pytest.raises(ProviderError, match="overloaded"):
        await anext(stream)
    assert transport.closed


async def test_provider_stops_reading_a_responses_stream_at_its_terminal_event() -> None:
    transport = FakeTransport(
        events=[
            rsp_event("response.output_text.delta", output_index=0, delta="a"),
            rsp_event("response.completed", response={"status": "completed"}),
            "this is never parsed",
        ]
    )
    provider = provider_over(transport, protocol="responses")
    events = await collect(provider, make_call({"input": "hi", "stream": True}))
    assert events == [TextDelta("a"), Finish("stop")]
    assert transport.calls[0][1] == "/responses"
    assert transport.require_done is False  # OpenAI's Responses streams send no [DONE]
    assert transport.closed


async def test_the_local_provider_names_its_model_as_an_upstream_would() -> None:
    """No response id of its own; and `local/error` fails before naming anything, as an
    upstream that answers with an error status does."""
    local = LocalProvider()
    events = [
        e async for b in local.stream(make_call({"input": "hi"}, upstream_model="echo")) for e in b
    ]
    assert events == [UpstreamInfo(model="echo"), TextDelta("hi"), Finish("stop")]
    failing = local.stream(make_call({"input": "hi"}, upstream_model="error"))
    with pytest.raises(ProviderError, match="before its first chunk"):
        await anext(failing)


async def test_discovery_prefixes_ids_and_static_models_are_separate() -> None:
    transport = FakeTransport()
    provider = provider_over(transport, static_models=["local-model"])
    assert [m.id for m in provider.static_models()] == ["up/local-model"]
    models = await provider.list_models()
    assert [(m.id, m.owned_by, m.created) for m in models] == [("up/gpt-4o", "openai", 5)]
    assert transport.calls[0][1] == "/models"
    assert transport.calls[0][3]["Authorization"] == "Bearer sk-test"
    assert provider.knows_model("anything/at-all")


async def test_discovery_keeps_a_context_length_the_upstream_gives_in_any_of_its_names() -> None:
    """OpenRouter says `context_length`, vLLM `max_model_len`; an odd value is left out, never
    a failed discovery."""
    transport = FakeTransport()
    entries = [
        {"id": "a", "context_length": 200_000},
        {"id": "b", "max_model_len": 32_768},
        {"id": "c", "context_length": "lots", "max_model_len": True},
        {"id": "d"},
    ]
    transport.model_entries = entries
    models = await provider_over(transport).list_models()
    assert [(m.id, m.context_length) for m in models] == [
        ("up/a", 200_000), ("up/b", 32_768), ("up/c", None), ("up/d", None),
    ]  # fmt: skip


def test_events_type_is_exhaustive() -> None:
    # Every event a parser yields is one the builder understands.
    kinds: tuple[type[ProviderEvent], ...] = (
        TextDelta, ReasoningDelta, ReasoningData, ToolCallDelta, UsageReport, Finish,
        UpstreamInfo,
    )  # fmt: skip
    assert set(ProviderEvent.__args__) == set(kinds)  # type: ignore[attr-defined]


# --- the gateway over real HTTP against the fake upstream ---------------------------------------


def gateway(serve_with: Any, upstream: FakeUpstream, **kwargs: Any) -> LiveServer:
    transport = TransportSettings(base_url=upstream.base_url, max_retries=0)
    kwargs.setdefault("api_key", "sk-test")
    provider = OpenAICompatibleProvider(ProviderSpec(name="up", transport=transport, **kwargs))
    container = make_container()
    container.model_providers.override(providers.Object([provider]))
    return serve_with(container=container)


def upstream_bodies(upstream: FakeUpstream, path: str) -> list[JSON]:
    return [request.json for request in upstream.requests(path)]


CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
TOOLS = [{**WEATHER_TOOL, "strict": None}]
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": WEATHER_TOOL["parameters"],
        },
    }
]


def upstream_chunk(delta: JSON, finish: str | None = None) -> JSON:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


PARALLEL_CALL_FRAMES: list[Any] = [
    upstream_chunk({"role": "assistant", "content": None}),
    upstream_chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""}}]}),
    upstream_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    upstream_chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""}}]}),
    upstream_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    upstream_chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"city":"Oslo"}'}}]}),
    upstream_chunk({}, "tool_calls"),
    b": keep-alive comment\n\n",
    {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
     "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21,
                              "prompt_tokens_details": {"cached_tokens": 4},
                              "completion_tokens_details": {"reasoning_tokens": 0}}},
]  # fmt: skip

PARALLEL_CALL_COMPLETION = {
    "id": "chatcmpl-up",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-test",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                    {"id": "call_b", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
}  # fmt: skip


def function_calls(output: list[JSON]) -> list[tuple[str, str, str]]:
    return [
        (item["call_id"], item["name"], item["arguments"])
        for item in output
        if item["type"] == "function_call"
    ]


EXPECTED_CALLS = [
    ("call_a", "get_weather", '{"city":"Paris"}'),
    ("call_b", "get_weather", '{"city":"Oslo"}'),
]


def test_responses_non_stream_over_chat_upstream(serve_with: Any, upstream: FakeUpstream) -> None:
    server = gateway(serve_with, upstream)
    with server.client() as client:
        reply = client.post(
            "/v1/responses",
            json={"model": "up/gpt-test", "input": "hello there", "instructions": "Be kind."},
            headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "completed"
    assert body["model"] == "up/gpt-test"
    assert body["output"][0]["content"][0]["text"] == "hello there"
    # the upstream's own usage wins over the gateway's count
    assert body["usage"]["input_tokens"] == 4 and body["usage"]["output_tokens"] == 2
    (request,) = upstream.requests(CHAT_PATH)
    assert request.json == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "hello there"},
        ],
    }
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["traceparent"].startswith("00-0af7651916cd43dd")


def test_responses_stream_over_chat_upstream(serve_with: Any, upstream: FakeUpstream) -> None:
    server = gateway(serve_with, upstream)
    with server.client() as client:
        reply = client.post(
            "/v1/responses", json={"model": "up/gpt-test", "input": "one two three", "stream": True}
        )
    assert reply.status_code == 200
    events, _ = sse_events(reply.text)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["one ", "two ", "three"]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["total_tokens"] == 6
    assert upstream_bodies(upstream, CHAT_PATH) == [
        {
            "model": "gpt-test",
            "messages": [{"role": "user", "content": "one two three"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ]


def test_chat_client_stream_and_non_stream(serve_with: Any, upstream: FakeUpstream) -> None:
    server = gateway(serve_with, upstream)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi you"}]
    with server.client() as client:
        whole = client.post(
            "/v1/chat/completions",
            json={"model": "up/gpt-test", "messages": messages, "seed": 3, "stop": ["x"],
                  "max_completion_tokens": 50},
        )  # fmt: skip
        streamed = client.post(
            "/v1/chat/completions",
            json={"model": "up/gpt-test", "messages": messages, "stream": True},
        )
    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["message"]["content"] == "hi you"
    assert whole.json()["choices"][0]["finish_reason"] == "stop"
    chunks, others = sse_events(streamed.text)
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == "hi you"
    )
    assert others == ["[DONE]"]
    assert upstream_bodies(upstream, CHAT_PATH) == [
        {"model": "gpt-test", "messages": messages, "max_completion_tokens": 50,
         "stop": ["x"], "seed": 3},
        {"model": "gpt-test", "messages": messages, "stream": True,
         "stream_options": {"include_usage": True}},
    ]  # fmt: skip


def test_parallel_tool_calls_streamed_to_a_responses_client(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(CHAT_PATH, Reply.sse(PARALLEL_CALL_FRAMES))
    server = gateway(serve_with, upstream)
    with server.client() as client:
        reply = client.post(
            "/v1/responses",
            json={"model": "up/gpt-test", "input": "weather?", "tools": TOOLS, "stream": True},
        )
    events, _ = sse_events(reply.text)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert function_calls(done) == EXPECTED_CALLS
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert function_calls(final["output"]) == EXPECTED_CALLS
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 4
    (body,) = upstream_bodies(upstream, CHAT_PATH)
    assert body["tools"] == CHAT_TOOLS
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is True


def test_parallel_tool_calls_to_a_chat_client_and_the_next_turn(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(CHAT_PATH, Reply.json(PARALLEL_CALL_COMPLETION))
    server = gateway(serve_with, upstream)
    messages: list[JSON] = [{"role": "user", "content": "weather?"}]
    with server.client() as client:
        first = client.post(
            "/v1/chat/completions",
            json={"model": "up/gpt-test", "messages": messages, "tools": CHAT_TOOLS},
        )
        assert first.status_code == 200, first.text
        choice = first.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        calls = choice["message"]["tool_calls"]
        assert [(c["id"], c["function"]["arguments"]) for c in calls] == [
            ("call_a", '{"city":"Paris"}'),
            ("call_b", '{"city":"Oslo"}'),
        ]
        messages += [
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_b", "content": "4C"},
        ]
        second = client.post(
            "/v1/chat/completions",
            json={"model": "up/gpt-test", "messages": messages, "tools": CHAT_TOOLS,
                  "stream": True},
        )  # fmt: skip
    assert second.status_code == 200
    _, second_turn = upstream_bodies(upstream, CHAT_PATH)
    assert second_turn["messages"] == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "4C"},
    ]  # fmt: skip


def test_mid_stream_error_frame_fails_the_response(serve_with: Any, upstream: FakeUpstream) -> None:
    upstream.script(
        CHAT_PATH,
        Reply.sse(
            [upstream_chunk({"content": "partial "}),
             {"error": {"message": "Provider went away", "code": 502}}],
            done=False,
        ),
    )  # fmt: skip
    server = gateway(serve_with, upstream)
    with server.client() as client:
        reply = client.post(
            "/v1/responses", json={"model": "up/gpt-test", "input": "x", "stream": True}
        )
    events, _ = sse_events(reply.text)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert "Provider went away" in events[-1]["response"]["error"]["message"]


def test_upstream_404_is_model_not_found(serve_with: Any, upstream: FakeUpstream) -> None:
    upstream.script(
        CHAT_PATH, Reply.error(404, "The model `nope` does not exist", code="model_not_found")
    )
    server = gateway(serve_with, upstream)
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": "up/nope", "input": "x"})
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"


def test_byok_gateway_forwards_the_client_key(serve_with: Any, upstream: FakeUpstream) -> None:
    server = gateway(serve_with, upstream, api_key="sk-operator", byok=True)
    with server.client() as client:
        reply = client.post(
            "/v1/responses",
            json={"model": "up/gpt-test", "input": "x"},
            headers={"Authorization": "Bearer sk-client-key"},
        )
    assert reply.status_code == 200, reply.text
    (request,) = upstream.requests(CHAT_PATH)
    assert request.headers["authorization"] == "Bearer sk-client-key"


@pytest.mark.parametrize("stream", [False, True])
def test_responses_upstream(serve_with: Any, upstream: FakeUpstream, stream: bool) -> None:
    server = gateway(serve_with, upstream, protocol="responses")
    with server.client() as client:
        reply = client.post(
            "/v1/responses",
            json={"model": "up/gpt-test", "input": "alpha beta", "instructions": "I",
                  "max_output_tokens": 20, "stream": stream},
        )  # fmt: skip
    assert reply.status_code == 200, reply.text
    if stream:
        events, _ = sse_events(reply.text)
        final = events[-1]["response"]
        assert events[-1]["type"] == "response.completed"
    else:
        final = reply.json()
    assert final["output"][-1]["content"][0]["text"] == "alpha beta"
    assert final["usage"]["output_tokens"] == 2
    assert upstream_bodies(upstream, RESPONSES_PATH) == [
        {"model": "gpt-test", "input": [{"type": "message", "role": "user",
                                         "content": "alpha beta"}],
         "store": False, "stream": stream, "instructions": "I", "max_output_tokens": 20},
    ]  # fmt: skip


def test_chat_client_over_responses_upstream_with_parallel_calls(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    frames = [
        {"type": "response.created", "response": {"status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "function_call", "id": "fc_1", "call_id": "call_a",
                  "name": "get_weather", "arguments": ""}},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"type": "function_call", "id": "fc_2", "call_id": "call_b",
                  "name": "get_weather", "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "output_index": 0,
         "delta": '{"city":"Paris"}'},
        {"type": "response.function_call_arguments.delta", "output_index": 1,
         "delta": '{"city":"Oslo"}'},
        {"type": "response.completed", "response": {"status": "completed", "usage": {
            "input_tokens": 5, "output_tokens": 7, "total_tokens": 12}}},
    ]  # fmt: skip
    upstream.script(RESPONSES_PATH, Reply.sse(frames, done=False))
    server = gateway(serve_with, upstream, protocol="responses")
    with server.client() as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "up/gpt-test", "messages": [{"role": "user", "content": "w?"}],
                  "tools": CHAT_TOOLS, "stream": True,
                  "stream_options": {"include_usage": True}},
        )  # fmt: skip
    chunks, _ = sse_events(reply.text)
    arguments: dict[int, str] = {}
    for chunk_body in chunks:
        for choice in chunk_body["choices"]:
            for call in choice["delta"].get("tool_calls") or []:
                arguments[call["index"]] = arguments.get(call["index"], "") + (
                    call["function"].get("arguments") or ""
                )
    assert arguments == {0: '{"city":"Paris"}', 1: '{"city":"Oslo"}'}
    assert chunks[-1]["usage"]["total_tokens"] == 12
    (body,) = upstream_bodies(upstream, RESPONSES_PATH)
    assert body["tools"] == [
        {"type": "function", "name": "get_weather", "description": "Weather in a city",
         "parameters": WEATHER_TOOL["parameters"]}
    ]  # fmt: skip


def test_responses_upstream_gets_the_same_body_from_a_chat_client_with_chat_only_options(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    """Chat-only options (domain/passthrough.py) never reach a Responses upstream: OpenAI
    rejects unknown fields, and OpenRouter's chat `reasoning` object would replace the
    canonical `reasoning`. The routing extensions both APIs have do reach it."""
    server = gateway(serve_with, upstream, protocol="responses")
    extensions = {"provider": {"order": ["anthropic"]}, "transforms": ["middle-out"]}
    chat_only = {
        "stop": ["END"],
        "seed": 7,
        "top_k": 40,
        "reasoning": {"max_tokens": 99},
        "web_search_options": {},
        "include_reasoning": True,
        "min_p": 0.1,
    }
    with server.client() as client:
        via_chat = client.post(
            CHAT_PATH,
            json={"model": "up/gpt-test", "messages": [{"role": "user", "content": "hi"}],
                  "reasoning_effort": "low", **chat_only, **extensions},
        )  # fmt: skip
        via_responses = client.post(
            RESPONSES_PATH,
            json={"model": "up/gpt-test", "input": [{"role": "user", "content": "hi"}],
                  "reasoning": {"effort": "low"}, "store": False, **extensions},
        )  # fmt: skip
    assert via_chat.status_code == via_responses.status_code == 200, via_chat.text
    from_chat, from_responses = upstream_bodies(upstream, RESPONSES_PATH)
    assert from_chat == from_responses
    assert from_chat["reasoning"] == {"effort": "low"}
    assert from_chat["provider"] == {"order": ["anthropic"]}
    assert not (set(chat_only) - {"reasoning"}) & set(from_chat)


# --- a malformed answer is a failure, never a completed response (issue 9, item 2) --------------

HTML_PAGE = b"<html><title>502</title><body>Bad gateway, key sk-leaked-in-page</body></html>"
TEXT_FRAMES: list[Any] = [
    upstream_chunk({"role": "assistant", "content": ""}),
    upstream_chunk({"content": "cut "}),
    upstream_chunk({"content": "short"}),
]


def ask(client: Any, api: str, *, stream: bool) -> Any:
    """POST one question through the Responses or the Chat Completions API."""
    if api == "chat":
        body: JSON = {"model": "up/gpt-test", "messages": [{"role": "user", "content": "q"}]}
        return client.post(CHAT_PATH, json={**body, "stream": stream})
    return client.post(
        RESPONSES_PATH, json={"model": "up/gpt-test", "input": "q", "stream": stream}
    )


def assert_502(answer: Any, says: str) -> None:
    assert answer.status_code == 502, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert error["code"] == "provider_error"
    assert re.search(r"\bup\b", error["message"]), "the message names the provider"
    assert says in error["message"]
    assert "sk-leaked" not in answer.text


def assert_failed_mid_stream(client: Any, answer: Any, api: str, says: str) -> None:
    """After output: `error` + `response.failed` (chat: an error frame, no finish_reason), and
    the stored response is failed."""
    assert answer.status_code == 200
    events, _ = sse_events(answer.text)
    if api == "chat":
        assert says in events[-1]["error"]["message"]
        assert not any(
            choice.get("finish_reason") for event in events for choice in event.get("choices", [])
        )
        return
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert "response.completed" not in [e["type"] for e in events]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and says in failed["error"]["message"]
    stored = client.get(f"/v1/responses/{failed['id']}")
    assert stored.status_code == 200
    assert stored.json()["status"] == "failed"


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (Reply(headers={"Content-Type": "text/html"}, body=HTML_PAGE),
         f"a {len(HTML_PAGE)}-byte text/html body"),
        (Reply(headers={"Content-Type": "application/json"}), "an empty body"),
        (Reply.json({"id": "chatcmpl-1", "object": "chat.completion"}), "no `choices`"),
        (Reply.json({"choices": [{"index": 0, "message": {"content": "hi"}}]}),
         "no `finish_reason`"),
    ],
    ids=["html", "empty", "no-choices", "no-finish-reason"],
)  # fmt: skip
def test_a_malformed_chat_answer_is_a_502(
    serve_with: Any, upstream: FakeUpstream, reply: Reply, says: str, api: str
) -> None:
    upstream.script(CHAT_PATH, reply)
    server = gateway(serve_with, upstream)
    with server.client() as client:
        assert_502(ask(client, api, stream=False), says)


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (Reply(headers={"Content-Type": "text/html"}, chunks=[HTML_PAGE]), "text/html"),
        (Reply.sse([]), "without a finish_reason"),
        (Reply.sse([upstream_chunk({"role": "assistant", "content": ""})]),
         "without a finish_reason"),
    ],
    ids=["html", "only-done", "no-text-no-finish"],
)  # fmt: skip
def test_a_malformed_chat_stream_before_any_output_is_a_502(
    serve_with: Any, upstream: FakeUpstream, reply: Reply, says: str, api: str
) -> None:
    upstream.script(CHAT_PATH, reply)
    server = gateway(serve_with, upstream)
    with server.client() as client:
        assert_502(ask(client, api, stream=True), says)


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (Reply.sse(TEXT_FRAMES), "without a finish_reason"),
        (Reply.sse([*TEXT_FRAMES, upstream_chunk({}, "stop")], done=False), "[DONE]"),
    ],
    ids=["no-finish-reason", "no-done"],
)  # fmt: skip
def test_a_chat_stream_cut_after_output_fails_the_response(
    serve_with: Any, upstream: FakeUpstream, reply: Reply, says: str, api: str
) -> None:
    upstream.script(CHAT_PATH, reply)
    server = gateway(serve_with, upstream)
    with server.client() as client:
        assert_failed_mid_stream(client, ask(client, api, stream=True), api, says)


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (Reply(headers={"Content-Type": "text/html"}, body=HTML_PAGE),
         f"a {len(HTML_PAGE)}-byte text/html body"),
        (Reply(headers={"Content-Type": "application/json"}), "an empty body"),
        (Reply.json({"id": "resp_1", "object": "response"}), "no `status` and no `output`"),
    ],
    ids=["html", "empty", "no-status"],
)  # fmt: skip
def test_a_malformed_responses_answer_is_a_502(
    serve_with: Any, upstream: FakeUpstream, reply: Reply, says: str, api: str
) -> None:
    upstream.script(RESPONSES_PATH, reply)
    server = gateway(serve_with, upstream, protocol="responses")
    with server.client() as client:
        assert_502(ask(client, api, stream=False), says)


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_a_responses_stream_without_its_terminal_event_fails(
    serve_with: Any, upstream: FakeUpstream, api: str
) -> None:
    frames = [
        {"type": "response.created", "response": {"status": "in_progress"}},
        {"type": "response.output_text.delta", "output_index": 0, "delta": "cut "},
        {"type": "response.output_text.delta", "output_index": 0, "delta": "short"},
    ]
    upstream.script(
        RESPONSES_PATH, [Reply.sse(frames, done=False), Reply.sse(frames[:1], done=False)]
    )
    server = gateway(serve_with, upstream, protocol="responses")
    with server.client() as client:
        cut = ask(client, api, stream=True)
        assert_failed_mid_stream(client, cut, api, "before response.completed")
        assert_502(ask(client, api, stream=True), "before response.completed")
