"""GigaChat mappings, pure: canonical request -> GigaChat body, GigaChat answers and stream chunks
-> canonical events, and the call ids that carry `functions_state_id`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.gigachat_fake import MODEL_VERSION, chunk, completion, make_call, usage
from xrouter.adapters.providers.gigachat.call_ids import new_call_id, state_id_of
from xrouter.adapters.providers.gigachat.chat_parser import StreamParser, parse_completion
from xrouter.adapters.providers.gigachat.chat_protocol import build_payload, function_result
from xrouter.adapters.providers.upstream_errors import map_stream_error
from xrouter.domain.errors import (
    GatewayError,
    InvalidRequest,
    ProviderError,
    UpstreamRateLimited,
)
from xrouter.domain.provider_events import (
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UpstreamInfo,
    UsageReport,
)
from xrouter.domain.responses import InputTokensDetails, Usage

JSON = dict[str, Any]
STATE = "6e0a3c3e-8d0c-4c0b-9d5c-0d8b7f1c2a11"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
CLOCK = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}


def mapper(error: Any) -> GatewayError:
    return map_stream_error("gigachat", error)


def parse(body: JSON) -> list[Any]:
    return parse_completion(json.dumps(body).encode(), provider="gigachat", map_error=mapper)


def stream(chunks: list[JSON | str]) -> list[Any]:
    parser = StreamParser(provider="gigachat", map_error=mapper)
    events: list[Any] = []
    for data in chunks:
        events += parser.feed(data if isinstance(data, str) else json.dumps(data))
    return events + parser.finish()


# --- canonical -> GigaChat ------------------------------------------------------------------------


def test_payload_snapshot_of_a_function_calling_conversation() -> None:
    call_id = new_call_id(STATE)
    call = make_call(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "system", "content": "Answer in Russian."},
                {"role": "user", "content": [{"type": "input_text", "text": "Погода в Париже?"}]},
                {"role": "developer", "content": [{"type": "input_text", "text": "Use °C."}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                {"type": "function_call", "call_id": call_id, "name": "get_weather",
                 "arguments": '{"city":"Paris"}'},
                {"type": "function_call_output", "call_id": call_id, "output": "18C"},
                {"type": "reasoning", "summary": []},
            ],
            "tools": [WEATHER, {"type": "web_search"}],
            "tool_choice": "auto",
            "temperature": 0.7,
            "top_p": 0.9,
            "max_output_tokens": 256,
            "presence_penalty": 0.5,
        },
        passthrough={"repetition_penalty": 1.1, "seed": 3, "stop": ["x"]},
    )  # fmt: skip
    assert build_payload(call, stream=True) == {
        "model": "GigaChat-2-Max",
        "messages": [
            {"role": "system", "content": "Be brief.\n\nAnswer in Russian.\n\nUse °C."},
            {"role": "user", "content": "Погода в Париже?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "function_call": {"name": "get_weather", "arguments": {"city": "Paris"}},
                "functions_state_id": STATE,
            },
            {"role": "function", "name": "get_weather", "content": '{"result":"18C"}'},
        ],
        "functions": [
            {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER["parameters"],
            }
        ],
        "function_call": "auto",
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 256,
        "repetition_penalty": 1.1,
        "stream": True,
    }


def test_calls_from_another_provider_carry_no_state_and_each_get_a_message() -> None:
    call = make_call(
        {
            "input": [
                {"role": "user", "content": "two cities"},
                {"type": "function_call", "call_id": "call_a", "name": "get_weather",
                 "arguments": '{"city":"Paris"}'},
                {"type": "function_call", "call_id": "call_b", "name": "get_weather",
                 "arguments": ""},
                {"type": "function_call_output", "call_id": "call_a", "output": '{"t": 18}'},
                {"type": "function_call_output", "call_id": "call_b",
                 "output": [{"type": "input_text", "text": "[4, 5]"}]},
            ]
        }
    )  # fmt: skip
    assert build_payload(call, stream=False)["messages"][1:] == [
        {"role": "assistant", "content": "",
         "function_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"role": "assistant", "content": "",
         "function_call": {"name": "get_weather", "arguments": {}}},
        {"role": "function", "name": "get_weather", "content": '{"t": 18}'},
        {"role": "function", "name": "get_weather", "content": '{"result":[4,5]}'},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('{"temp": 18}', '{"temp": 18}'),  # a JSON object goes as sent
        ("18C", '{"result":"18C"}'),
        ("42", '{"result":42}'),
        ('"quoted"', '{"result":"quoted"}'),
        ("", '{"result":""}'),
        (None, '{"result":""}'),
        ("Привет", '{"result":"Привет"}'),  # raw UTF-8, no \\u escapes
    ],
)
def test_function_results_are_json_objects(output: str | None, expected: str) -> None:
    assert function_result(output, "input[0]") == expected


@pytest.mark.parametrize(
    ("choice", "tools", "expected_call", "expected_names"),
    [
        ("auto", [WEATHER, CLOCK], "auto", ["get_weather", "get_time"]),
        ("none", [WEATHER], "none", ["get_weather"]),
        ("required", [WEATHER], {"name": "get_weather"}, ["get_weather"]),
        ("required", [WEATHER, CLOCK], "auto", ["get_weather", "get_time"]),
        ({"type": "function", "name": "get_time"}, [WEATHER, CLOCK], {"name": "get_time"},
         ["get_weather", "get_time"]),
        ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function",
          "name": "get_time"}]}, [WEATHER, CLOCK], {"name": "get_time"}, ["get_time"]),
        ({"type": "web_search_preview"}, [WEATHER], "auto", ["get_weather"]),
    ],
)  # fmt: skip
def test_tool_choice_becomes_function_call(
    choice: Any, tools: list[JSON], expected_call: Any, expected_names: list[str]
) -> None:
    payload = build_payload(
        make_call({"input": "x", "tools": tools, "tool_choice": choice}), stream=False
    )
    assert payload["function_call"] == expected_call
    assert [f["name"] for f in payload["functions"]] == expected_names


def test_no_function_tools_means_no_function_options_and_temperature_zero_is_raised() -> None:
    payload = build_payload(
        make_call({"input": "x", "tools": [{"type": "web_search"}], "temperature": 0}),
        stream=False,
    )
    assert "functions" not in payload and "function_call" not in payload
    assert payload["temperature"] == 0.001  # GigaChat wants > 0


def test_uploaded_files_go_as_attachments() -> None:
    call = make_call(
        {"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "file_id": "b1a2-img"},
            {"type": "input_file", "file_id": "c3d4-doc"},
        ]}]}
    )  # fmt: skip
    assert build_payload(call, stream=False)["messages"] == [
        {"role": "user", "content": "What is this?", "attachments": ["b1a2-img", "c3d4-doc"]}
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://x/i.png"}]}]},
         "input[0].content[0].file_id"),
        ({"input": [{"role": "user", "content": [
            {"type": "input_file", "file_url": "https://x/a.pdf"}]}]},
         "input[0].content[0].file_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"role": "system", "content": [{"type": "input_image", "file_id": "f"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]},
         "input[0].arguments"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]},
         "input[0].arguments"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
         "input[0].call_id"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n", "schema": {}}}},
         "text.format.type"),
        ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
         "tool_choice.name"),
    ],
)  # fmt: skip
def test_what_gigachat_cannot_take_is_a_clear_400(body: JSON, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        build_payload(make_call(body), stream=False)
    assert caught.value.status == 400
    assert caught.value.param == param


# --- GigaChat -> canonical -----------------------------------------------------------------------


def test_text_answer_with_usage_and_cached_tokens() -> None:
    events = parse(completion("Привет!", usage_=usage(prompt=40, completion=3, precached=32)))
    assert events == [
        UpstreamInfo(model=MODEL_VERSION),  # the versioned model; GigaChat sends no id
        TextDelta("Привет!"),
        UsageReport(
            Usage(
                input_tokens=40,
                output_tokens=3,
                total_tokens=43,
                input_tokens_details=InputTokensDetails(cached_tokens=32),
            )
        ),
        Finish("stop"),
    ]


def test_function_call_gets_a_call_id_carrying_the_state_and_json_string_arguments() -> None:
    events = parse(
        completion(
            "",
            finish="function_call",
            function_call={"name": "get_weather", "arguments": {"city": "Москва", "days": 2}},
            state_id=STATE,
        )
    )
    info, call, usage_report, finish = events
    assert info == UpstreamInfo(model=MODEL_VERSION)
    assert isinstance(call, ToolCallDelta) and isinstance(usage_report, UsageReport)
    assert (call.index, call.name) == (0, "get_weather")
    assert json.loads(call.arguments) == {"city": "Москва", "days": 2}
    assert "Москва" in call.arguments  # raw UTF-8
    assert call.call_id is not None and state_id_of(call.call_id) == STATE
    assert finish == Finish("tool_calls")


def test_call_ids_are_unique_and_foreign_ids_carry_no_state() -> None:
    ids = {new_call_id(STATE) for _ in range(50)}
    assert len(ids) == 50
    assert {state_id_of(i) for i in ids} == {STATE}
    plain = new_call_id(None)
    assert plain.startswith("call_") and state_id_of(plain) is None
    assert state_id_of("call_abc") is None and state_id_of(None) is None
    assert state_id_of(new_call_id("bad state with spaces")) is None


@pytest.mark.parametrize(
    ("raw", "call", "expected"),
    [
        ("stop", False, "stop"),
        ("length", False, "length"),
        ("blacklist", False, "content_filter"),
        ("function_call", True, "tool_calls"),
        ("stop", True, "tool_calls"),
        ("something_new", False, "stop"),
    ],
)
def test_every_finish_reason(raw: str, call: bool, expected: str) -> None:
    function_call = {"name": "f", "arguments": {}} if call else None
    body = completion("text", finish=raw, function_call=function_call)
    assert parse(body)[-1] == Finish(expected)  # type: ignore[arg-type]
    frames: list[JSON | str] = [chunk({"content": "text"})]
    if call:
        frames.append(chunk({"function_call": function_call}))
    frames.append(chunk({"content": ""}, raw, usage()))
    assert stream(frames)[-1] == Finish(expected)  # type: ignore[arg-type]


def test_finish_reason_error_fails() -> None:
    with pytest.raises(ProviderError, match="invalid arguments"):
        parse(completion("", finish="error"))
    with pytest.raises(ProviderError, match="invalid arguments"):
        stream([chunk({"content": ""}, "error", usage())])
    with pytest.raises(ProviderError, match="no function_call"):
        parse(completion("", finish="function_call"))


def test_stream_text_reasoning_usage_and_finish_in_order() -> None:
    events = stream(
        [
            chunk({"role": "assistant", "reasoning_content": "Thinking."}),
            chunk({"content": "Hello"}),
            chunk({"content": " world"}),
            chunk({"content": ""}, "length", usage(5, 2)),
        ]
    )
    assert events == [
        UpstreamInfo(model=MODEL_VERSION),  # once, from the first chunk
        ReasoningDelta("Thinking."),
        TextDelta("Hello"),
        TextDelta(" world"),
        UsageReport(Usage(input_tokens=5, output_tokens=2, total_tokens=7)),
        Finish("length"),
    ]


def test_streamed_function_call_arrives_whole_with_its_state_in_a_later_chunk() -> None:
    events = stream(
        [
            chunk({"role": "assistant", "content": "",
                   "function_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}),
            chunk({"content": "", "functions_state_id": STATE}, "function_call", usage()),
        ]
    )  # fmt: skip
    call = events[1]
    assert isinstance(call, ToolCallDelta)
    assert (call.name, call.arguments, state_id_of(call.call_id)) == (
        "get_weather",
        '{"city":"Oslo"}',
        STATE,
    )
    assert events[-1] == Finish("tool_calls")


def test_an_id_is_taken_when_one_comes_and_odd_values_are_ignored() -> None:
    """GigaChat documents no answer id (the SDK models one on the message): whichever comes
    is reported, top level first; a value that is not a short string is dropped, not fatal."""
    top = {**completion("hi"), "id": "answer-1"}
    top["choices"][0]["message"]["id"] = "message-1"
    assert parse(top)[0] == UpstreamInfo(model=MODEL_VERSION, response_id="answer-1")
    on_message = completion("hi")
    on_message["choices"][0]["message"]["id"] = "message-1"
    assert parse(on_message)[0] == UpstreamInfo(model=MODEL_VERSION, response_id="message-1")
    odd = {**completion("hi"), "model": 42, "id": "x" * 257}
    odd["choices"][0]["message"]["id"] = 7
    assert parse(odd)[0] == TextDelta("hi")
    events = stream(
        [
            {**chunk({"content": "a", "id": "message-1"}), "model": None},
            {**chunk({"content": "b"}), "id": "answer-2"},  # named already: not again
            chunk({"content": ""}, "stop", usage()),
        ]
    )
    assert events[:3] == [UpstreamInfo(response_id="message-1"), TextDelta("a"), TextDelta("b")]


def test_builtin_function_progress_is_not_part_of_the_answer() -> None:
    events = stream(
        [
            chunk({"role": "function_in_progress", "content": "drawing..."}),
            chunk({"role": "assistant", "content": "Done"}),
            chunk({"content": ""}, "stop", usage()),
        ]
    )
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("Done")]


def test_stream_failures() -> None:
    with pytest.raises(ProviderError, match="without a finish reason"):
        stream([chunk({"content": "cut"})])
    with pytest.raises(UpstreamRateLimited):
        stream([chunk({"content": "a"}), {"status": 429, "message": "Too many requests"}])
    with pytest.raises(ProviderError, match="not JSON"):
        stream(["{oops"])
    with pytest.raises(ProviderError, match="`choices` is empty"):
        parse({"choices": [], "usage": usage()})


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"<html>502 Bad Gateway</html>", "text/html",
         "answered with a 28-byte text/html body that is not a GigaChat chat answer: it is not "
         "JSON"),
        (b"", "application/json", "answered with an empty body"),
        (b'{"object": "chat.completion"}', "application/json", "it has no `choices`"),
        (json.dumps({"choices": [{"index": 0, "message": {"content": "hi"}}]}).encode(),
         "application/json", "its choice has no `finish_reason`"),
    ],
)  # fmt: skip
def test_a_200_that_is_not_an_answer_fails_saying_what_came_back(
    body: bytes, content_type: str, says: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_completion(body, provider="gigachat", map_error=mapper, content_type=content_type)
    assert caught.value.status == 502
    assert says in caught.value.message
