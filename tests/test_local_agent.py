"""`local/agent` over real HTTP: a function call from any prompt when function tools are
declared, arguments built from the tool's JSON schema, then text that quotes the tool's output.

Both APIs, streamed and not; Responses bodies and events checked against the Open Responses
models (`openresponses_types`), Chat Completions answers and chunks against /openapi.json
(`tests/schema_check.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.schema_check import check
from tests.test_openresponses_schema import create, stream
from xrouter.adapters.providers.local_agent import schema_arguments

JSON = dict[str, Any]
CHAT = "/v1/chat/completions"
QUESTION = "What's the weather like in San Francisco?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location"],
    },
}
CLOCK = {
    "type": "function",
    "name": "get_time",
    "parameters": {
        "type": "object",
        "properties": {"zone": {"enum": ["UTC", "CET"]}},
        "required": ["zone"],
    },
}
RUNNER_REQUEST: JSON = {
    "model": "local/agent",
    "input": [{"type": "message", "role": "user", "content": QUESTION}],
    "tools": [WEATHER],
}
"""What the Open Responses compliance runner's "Tool Calling" test sends (scripts/compliance.sh)."""


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def doc(client: httpx.Client) -> JSON:
    document: JSON = client.get("/openapi.json").json()
    return document


def only_call(response: JSON) -> JSON:
    assert response["status"] == "completed", response
    [item] = response["output"]
    assert item["type"] == "function_call", item
    call: JSON = item
    return call


def chat_schema(doc: JSON, media: str) -> Any:
    return doc["paths"][CHAT]["post"]["responses"]["200"]["content"][media]["schema"]


def chat_tools(*tools: JSON) -> list[JSON]:
    return [
        {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in tools
    ]


# --- Responses -------------------------------------------------------------------------------


def test_the_runners_weather_question_gets_a_call_with_schema_arguments(
    client: httpx.Client,
) -> None:
    call = only_call(create(client, RUNNER_REQUEST))
    assert call["name"] == "get_weather" and call["call_id"] == "call_local_0"
    # Only required properties are filled; a string gets the user's words.
    assert json.loads(call["arguments"]) == {"location": QUESTION}

    events = stream(client, RUNNER_REQUEST).events
    [done] = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done["arguments"] == call["arguments"], "the same request gets the same call"
    assert events[-1]["type"] == "response.completed"
    assert only_call(events[-1]["response"])["arguments"] == call["arguments"]


def test_after_the_tool_output_it_answers_in_text_quoting_it(client: httpx.Client) -> None:
    first = create(client, RUNNER_REQUEST)
    call = only_call(first)
    result = {"type": "function_call_output", "call_id": call["call_id"], "output": "18C, fog"}
    follow_up = {"model": "local/agent", "previous_response_id": first["id"], "input": [result]}
    for answer in (
        create(client, follow_up),
        stream(client, follow_up).terminal["response"],
    ):
        [message] = answer["output"]
        assert message["type"] == "message"
        assert message["content"][0]["text"] == "Tool get_weather returned: 18C, fog"
    # The whole conversation sent again (no previous_response_id): the loop still ends.
    again = create(client, {**RUNNER_REQUEST, "input": RUNNER_REQUEST["input"] + [call, result]})
    assert again["output"][0]["content"][0]["text"] == "Tool get_weather returned: 18C, fog"


def test_tool_choice_none_named_and_parallel(client: httpx.Client) -> None:
    both = {"model": "local/agent", "input": "what now", "tools": [WEATHER, CLOCK]}
    assert only_call(create(client, both))["name"] == "get_weather", "the first tool by default"

    named = create(client, {**both, "tool_choice": {"type": "function", "name": "get_time"}})
    assert (only_call(named)["name"], only_call(named)["arguments"]) == (
        "get_time",
        '{"zone":"UTC"}',
    )

    quiet = create(client, {**both, "tool_choice": "none"})
    assert quiet["output"][0]["content"][0]["text"] == "what now"

    # `call <tool>` phrases win, as on local/echo: parallel calls, or one when not parallel.
    phrased = {**both, "input": 'call get_time {"zone": "CET"} and call get_weather'}
    parallel = create(client, phrased)["output"]
    assert [(c["name"], c["arguments"]) for c in parallel] == [
        ("get_time", '{"zone":"CET"}'),
        ("get_weather", "{}"),
    ]
    single = create(client, {**phrased, "parallel_tool_calls": False})["output"]
    assert [c["name"] for c in single] == ["get_time"]


def test_without_tools_or_after_an_assistant_turn_it_echoes(client: httpx.Client) -> None:
    plain = create(client, {"model": "local/agent", "input": "just talk"})
    assert plain["output"][0]["content"][0]["text"] == "just talk"
    streamed = stream(client, {"model": "local/agent", "input": "just talk"}).terminal
    assert streamed["response"]["output"] == [
        {**plain["output"][0], "id": streamed["response"]["output"][0]["id"]}
    ]
    # The last item is not the user's: no call (a model answers the user, not itself).
    ends_with_assistant = {
        **RUNNER_REQUEST,
        "input": RUNNER_REQUEST["input"] + [{"role": "assistant", "content": "Noted."}],
    }
    answer = create(client, ends_with_assistant)
    assert answer["output"][0]["type"] == "message"


def test_it_is_listed_with_the_local_models(client: httpx.Client) -> None:
    listed = client.get("/v1/models").json()
    assert "local/agent" in {model["id"] for model in listed["data"]}
    assert client.get("/v1/models/local/agent").status_code == 200


# --- Chat Completions ------------------------------------------------------------------------


def test_chat_completions_call_streamed_and_not(client: httpx.Client, doc: JSON) -> None:
    body = {
        "model": "local/agent",
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": chat_tools(WEATHER),
    }
    answer = client.post(CHAT, json=body)
    assert answer.status_code == 200, answer.text
    assert not check(doc, chat_schema(doc, "application/json"), answer.json())
    [choice] = answer.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    [tool_call] = choice["message"]["tool_calls"]
    assert tool_call["function"] == {
        "name": "get_weather",
        "arguments": json.dumps({"location": QUESTION}, separators=(",", ":")),
    }

    streamed = client.post(CHAT, json={**body, "stream": True})
    assert streamed.status_code == 200
    chunks = [
        json.loads(line[len("data: ") :])
        for line in streamed.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    for chunk in chunks:
        assert not check(doc, chat_schema(doc, "text/event-stream"), chunk), chunk
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    arguments = "".join(
        call["function"].get("arguments") or ""
        for delta in deltas
        for call in delta.get("tool_calls") or []
    )
    assert arguments == tool_call["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_chat_completions_tool_result_ends_the_loop(client: httpx.Client, doc: JSON) -> None:
    function = {"name": "get_weather", "arguments": "{}"}
    call = {"id": "call_1", "type": "function", "function": function}
    body = {
        "model": "local/agent",
        "tools": chat_tools(WEATHER),
        "messages": [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    }
    answer = client.post(CHAT, json=body)
    assert answer.status_code == 200, answer.text
    assert not check(doc, chat_schema(doc, "application/json"), answer.json())
    [choice] = answer.json()["choices"]
    assert (choice["finish_reason"], choice["message"]["content"]) == (
        "stop",
        "Tool get_weather returned: sunny",
    )


# --- the argument builder ------------------------------------------------------------------------


def test_arguments_follow_every_schema_shape() -> None:
    schema: JSON = {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "fixed": {"const": 7},
            "maybe": {"type": ["null", "integer"]},
            "nested": {
                "type": "object",
                "properties": {"inner": {"type": "boolean"}, "skip": {"type": "string"}},
                "required": ["inner"],
            },
            "loose": {"type": "object"},
            "referenced": {"$ref": "#/$defs/thing"},
            "optional": {"type": "string"},
        },
        "required": [],
    }
    schema["required"] = [name for name in schema["properties"] if name != "optional"]
    assert schema_arguments(schema, "hello") == {
        "text": "hello",
        "count": 0,
        "ratio": 0,
        "flag": False,
        "tags": [],
        "mode": "fast",
        "fixed": 7,
        "maybe": 0,
        "nested": {"inner": False},
        "loose": {},
        "referenced": None,
    }
    assert schema_arguments({}, "x") is None
    assert schema_arguments({"type": "object"}, "x") == {}
