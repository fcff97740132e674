"""Chat Completions <-> canonical mapping, both ways, without the web layer."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tests.fakes import ScriptedProvider, build_harness
from xrouter.application.chat_completions import ChatCompletions
from xrouter.application.chat_mapping import ChunkMapper, to_canonical, to_chat_completion
from xrouter.domain import events as ev
from xrouter.domain.chat import ChatCompletionChunk, ChatRequest, ChatStreamError
from xrouter.domain.errors import InvalidRequest
from xrouter.domain.provider_events import Finish, TextDelta, ToolCallDelta
from xrouter.domain.responses import (
    FunctionCallItem,
    IncompleteDetails,
    MessageItem,
    OutputText,
    Response,
    ResponseRequest,
    Usage,
)


def chat(**body: object) -> ChatRequest:
    return msgspec.convert({"model": "fake/model", **body}, ChatRequest)


CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "developer", "content": "Use tools."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather in Paris and Rome?"},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
    {"role": "assistant", "content": "Paris sunny, Rome rain."},
    {"role": "user", "content": "Thanks"},
]


def test_multi_turn_with_parallel_tool_calls_maps_item_by_item() -> None:
    request, passthrough = to_canonical(
        chat(
            messages=CONVERSATION,
            tools=[{"type": "function", "function": {"name": "weather", "parameters": {}}}],
            tool_choice={"type": "function", "function": {"name": "weather"}},
            parallel_tool_calls=True,
            max_tokens=50,
            reasoning_effort="low",
            temperature=0.5,
            stop=["END"],
            seed=7,
            metadata={"k": "v"},
        )
    )
    assert isinstance(request.input, list)
    summary = [(i.type, i.role, i.call_id) for i in request.input]
    assert summary == [
        ("message", "system", None),
        ("message", "developer", None),
        ("message", "user", None),
        ("function_call", None, "call_1"),
        ("function_call", None, "call_2"),
        ("function_call_output", None, "call_1"),
        ("function_call_output", None, "call_2"),
        ("message", "assistant", None),
        ("message", "user", None),
    ]
    assert request.input[2].content == [
        {"type": "input_text", "text": "Weather in Paris and Rome?"},
        {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
    ]
    assert request.input[4].arguments == '{"city":"Rome"}'
    assert request.input[6].output == "rain"
    assert request.input[7].content == [
        {"type": "output_text", "text": "Paris sunny, Rome rain.", "annotations": []}
    ]
    assert request.tool_choice == {"type": "function", "name": "weather"}
    assert request.tools[0].name == "weather"
    assert request.max_output_tokens == 50
    assert request.reasoning is not None and request.reasoning.effort == "low"
    assert request.temperature == 0.5 and request.metadata == {"k": "v"}
    assert request.store is False
    assert passthrough == {"stop": ["END"], "seed": 7}


def test_json_schema_response_format_becomes_text_format() -> None:
    request, _ = to_canonical(
        chat(
            messages=[{"role": "user", "content": "x"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
            },
            max_completion_tokens=9,
        )
    )
    assert request.text is not None
    assert request.text.format == {
        "type": "json_schema",
        "name": "out",
        "schema": {"type": "object"},
        "strict": True,
        "description": None,
    }
    assert request.max_output_tokens == 9


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            {"messages": [{"role": "user", "content": "x"}], "modalities": ["text", "audio"]},
            "modalities",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "audio": {"voice": "alloy"}}, "audio"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_requests_the_canonical_form_cannot_carry_are_refused(
    body: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_canonical(chat(**body))
    assert caught.value.param == param


def _response(output: list[object], **fields: object) -> Response:
    values: dict[str, object] = {
        "id": "resp_abc",
        "created_at": 1,
        "status": "completed",
        "model": "fake/model",
        "output": output,
        "usage": Usage(input_tokens=3, output_tokens=2, total_tokens=5),
        **fields,
    }
    return Response(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("output", "fields", "reason"),
    [
        ([MessageItem(id="m", status="completed", content=[OutputText("hi")])], {}, "stop"),
        (
            [FunctionCallItem(id="f", call_id="c", name="n", arguments="{}", status="completed")],
            {},
            "tool_calls",
        ),
        (
            [],
            {"status": "incomplete", "incomplete_details": IncompleteDetails("max_output_tokens")},
            "length",
        ),
        (
            [],
            {"status": "incomplete", "incomplete_details": IncompleteDetails("content_filter")},
            "content_filter",
        ),
    ],
)
def test_every_finish_reason(output: list[object], fields: dict[str, object], reason: str) -> None:
    completion = to_chat_completion(_response(output, **fields))
    assert completion.choices[0].finish_reason == reason
    assert completion.id == "chatcmpl-abc"
    assert completion.usage is not None and completion.usage.prompt_tokens == 3


def test_stream_mapping_one_id_role_first_tool_indexes_and_usage_chunk() -> None:
    harness = build_harness(
        ScriptedProvider(
            [
                ToolCallDelta(0, call_id="call_a", name="a"),
                ToolCallDelta(1, call_id="call_b", name="b"),
                ToolCallDelta(0, arguments='{"x":'),
                ToolCallDelta(1, arguments="{}"),
                ToolCallDelta(0, arguments="1}"),
                Finish("tool_calls"),
            ]
        )
    )
    mapper = ChunkMapper(include_usage=True)

    async def run() -> list[ChatCompletionChunk | ChatStreamError]:
        request = ResponseRequest(model="fake/model", input="x", stream=True)
        execution = await harness.create.start(request)
        events = [e async for e in execution.events()]
        return [chunk for event in events for chunk in mapper.map(event)]

    chunks = asyncio.run(run())
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    typed = [c for c in chunks if isinstance(c, ChatCompletionChunk)]
    assert len({c.id for c in typed}) == 1
    assert typed[0].choices[0].delta.role == "assistant"
    calls = [tc for c in typed if c.choices for tc in c.choices[0].delta.tool_calls or []]
    firsts = [(tc.index, tc.id, tc.function.name) for tc in calls if tc.id]
    assert firsts == [(0, "call_a", "a"), (1, "call_b", "b")]
    arguments = {0: "", 1: ""}
    for tc in calls:
        assert tc.index is not None
        arguments[tc.index] += tc.function.arguments or ""
    assert arguments == {0: '{"x":1}', 1: "{}"}
    assert typed[-2].choices[0].finish_reason == "tool_calls"
    assert typed[-1].choices == [] and typed[-1].usage is not None


def test_error_event_becomes_an_error_frame() -> None:
    mapper = ChunkMapper(include_usage=False)
    error = ev.ErrorEvent(
        sequence_number=5,
        code="provider_error",
        message="boom",
        param=None,
        error=ev.ErrorBody(type="server_error", code="provider_error", message="boom"),
    )
    (frame,) = mapper.map(error)
    assert isinstance(frame, ChatStreamError)
    assert msgspec.json.decode(msgspec.json.encode(frame))["error"]["message"] == "boom"


async def test_chat_and_responses_reach_the_provider_as_the_same_canonical_request() -> None:
    provider = ScriptedProvider([TextDelta("ok"), Finish()])
    harness = build_harness(provider)
    tools = [
        {
            "type": "function",
            "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}},
        }
    ]
    await ChatCompletions(harness.create).run(
        chat(messages=CONVERSATION, tools=tools, temperature=0.2, max_completion_tokens=20)
    )
    await harness.create.run(
        msgspec.convert(
            {
                "model": "fake/model",
                "store": False,
                "temperature": 0.2,
                "max_output_tokens": 20,
                "tools": [
                    {
                        "type": "function",
                        "name": "weather",
                        "description": "d",
                        "parameters": {"type": "object"},
                    }
                ],
                "input": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "developer", "content": "Use tools."},
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "Weather in Paris and Rome?"},
                            {
                                "type": "input_image",
                                "image_url": "https://x.test/a.png",
                                "detail": "low",
                            },
                        ],
                    },
                    {
                        "type": "function_call",
                        "call_id": "call_1",
                        "name": "weather",
                        "arguments": '{"city":"Paris"}',
                    },
                    {
                        "type": "function_call",
                        "call_id": "call_2",
                        "name": "weather",
                        "arguments": '{"city":"Rome"}',
                    },
                    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                    {"type": "function_call_output", "call_id": "call_2", "output": "rain"},
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "output_text",
                                "text": "Paris sunny, Rome rain.",
                                "annotations": [],
                            }
                        ],
                    },
                    {"role": "user", "content": "Thanks"},
                ],
            },
            ResponseRequest,
        )
    )
    via_chat, via_responses = provider.calls
    assert via_chat.items == via_responses.items
    assert via_chat.request == via_responses.request
    assert via_chat.passthrough == via_responses.passthrough == {}


def test_openrouter_extensions_pass_through_from_both_apis() -> None:
    canonical, passthrough = to_canonical(
        chat(
            messages=[{"role": "user", "content": "x"}],
            provider={"order": ["anthropic"]},
            models=["openrouter/a", "openrouter/b"],
            top_k=40,
            transforms=[],
        )
    )
    assert passthrough == {"provider": {"order": ["anthropic"]}, "top_k": 40, "transforms": []}
    # `models` is the gateway's own fallback list (application/fallbacks.py), not passed on.
    assert canonical.models == ["openrouter/a", "openrouter/b"]
    request = msgspec.convert(
        {"model": "m/x", "input": "x", "provider": {"allow_fallbacks": False}, "plugins": []},
        ResponseRequest,
    )
    assert request.passthrough() == {"provider": {"allow_fallbacks": False}, "plugins": []}
