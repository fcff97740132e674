"""Every body and every SSE event the gateway sends, validated against the Open Responses
pydantic models (`openresponses_types`), with the SSE framing parsed from raw bytes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openresponses_types as ort
import pytest
from pydantic import BaseModel

from tests.conftest import LiveServer
from tests.factories import build_request_body

JSON = dict[str, Any]

STREAM_EVENT_MODELS: dict[str, type[BaseModel]] = {
    "response.created": ort.ResponseCreatedStreamingEvent,
    "response.queued": ort.ResponseQueuedStreamingEvent,
    "response.in_progress": ort.ResponseInProgressStreamingEvent,
    "response.completed": ort.ResponseCompletedStreamingEvent,
    "response.failed": ort.ResponseFailedStreamingEvent,
    "response.incomplete": ort.ResponseIncompleteStreamingEvent,
    "response.output_item.added": ort.ResponseOutputItemAddedStreamingEvent,
    "response.output_item.done": ort.ResponseOutputItemDoneStreamingEvent,
    "response.content_part.added": ort.ResponseContentPartAddedStreamingEvent,
    "response.content_part.done": ort.ResponseContentPartDoneStreamingEvent,
    "response.output_text.delta": ort.ResponseOutputTextDeltaStreamingEvent,
    "response.output_text.done": ort.ResponseOutputTextDoneStreamingEvent,
    "response.output_text.annotation.added": ort.ResponseOutputTextAnnotationAddedStreamingEvent,
    "response.refusal.delta": ort.ResponseRefusalDeltaStreamingEvent,
    "response.refusal.done": ort.ResponseRefusalDoneStreamingEvent,
    "response.reasoning.delta": ort.ResponseReasoningDeltaStreamingEvent,
    "response.reasoning.done": ort.ResponseReasoningDoneStreamingEvent,
    "response.reasoning_summary_part.added": ort.ResponseReasoningSummaryPartAddedStreamingEvent,
    "response.reasoning_summary_part.done": ort.ResponseReasoningSummaryPartDoneStreamingEvent,
    "response.reasoning_summary_text.delta": ort.ResponseReasoningSummaryDeltaStreamingEvent,
    "response.reasoning_summary_text.done": ort.ResponseReasoningSummaryDoneStreamingEvent,
    "response.function_call_arguments.delta": ort.ResponseFunctionCallArgumentsDeltaStreamingEvent,
    "response.function_call_arguments.done": ort.ResponseFunctionCallArgumentsDoneStreamingEvent,
    "error": ort.ErrorStreamingEvent,
}
TERMINAL_EVENTS = {"response.completed", "response.failed", "response.incomplete"}
JSON_SCHEMA_FORMAT_KEYS = {"type", "name", "description", "schema", "strict"}

WEATHER_TOOL: JSON = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
LONG_INPUT = "one two three four five six seven eight"


# --- validation helpers ----------------------------------------------------------------------


def for_model(resource: JSON) -> JSON:
    """`resource`, ready for `ResponseResource`, after checking the echoed json_schema format.

    openresponses-types 2.4 types `JsonSchemaResponseFormat.schema` as `None` (a codegen
    artefact of the spec's untyped `schema`), so any real schema fails it. The keys Open
    Responses requires are checked here; the schema itself is checked to be a JSON object and
    then handed to the model as `None`. Everything else, `strict: bool` included, is the model's.
    """
    fmt = resource.get("text", {}).get("format", {})
    if fmt.get("type") != "json_schema":
        return resource
    assert fmt.keys() >= JSON_SCHEMA_FORMAT_KEYS, f"json_schema format lacks keys: {fmt}"
    assert isinstance(fmt["schema"], dict)
    patched = copy.deepcopy(resource)
    patched["text"]["format"]["schema"] = None
    return patched


def validate_resource(resource: JSON) -> ort.ResponseResource:
    return ort.ResponseResource.model_validate(for_model(resource))


def validate_event(event: JSON) -> BaseModel:
    model = STREAM_EVENT_MODELS.get(event.get("type", ""))
    assert model is not None, f"no Open Responses model for event type {event.get('type')!r}"
    if isinstance(event.get("response"), dict):
        event = {**event, "response": for_model(event["response"])}
    return model.model_validate(event)


@dataclass
class SSEStream:
    status_code: int
    content_type: str
    events: list[JSON]

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]

    def of_type(self, event_type: str) -> list[JSON]:
        return [event for event in self.events if event["type"] == event_type]

    @property
    def terminal(self) -> JSON:
        return self.events[-1]


def parse_sse(raw: bytes) -> list[JSON]:
    """Events of a Responses SSE body, checking the framing on the way."""
    assert raw.endswith(b"data: [DONE]\n\n"), f"stream does not end with [DONE]: {raw[-80:]!r}"
    blocks = raw.decode("utf-8").split("\n\n")
    assert blocks[-1] == "", "the stream ends with a blank line"
    assert blocks[-2] == "data: [DONE]"
    events: list[JSON] = []
    for block in blocks[:-2]:
        lines = block.split("\n")
        assert len(lines) == 2, f"an event is exactly `event:` + one `data:` line: {block!r}"
        event_line, data_line = lines
        assert event_line.startswith("event: "), block
        assert data_line.startswith("data: "), block
        event = json.loads(data_line.removeprefix("data: "))
        assert isinstance(event, dict)
        assert event_line.removeprefix("event: ") == event["type"], "event: must equal type"
        events.append(event)
    assert events, "a stream has at least one event"
    return events


def stream(client: httpx.Client, body: JSON) -> SSEStream:
    with client.stream("POST", "/v1/responses", json={**body, "stream": True}) as response:
        raw = response.read()
        assert response.status_code == 200, raw
        content_type = response.headers["content-type"]
    assert content_type.startswith("text/event-stream")
    events = parse_sse(raw)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    for event in events:
        validate_event(event)
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] in TERMINAL_EVENTS
    assert sum(event["type"] in TERMINAL_EVENTS for event in events) == 1
    check_stream_consistency(events)
    return SSEStream(response.status_code, content_type, events)


def check_stream_consistency(events: list[JSON]) -> None:
    """Items are added at successive output indexes, deltas join to their `.done` text, and
    the final response's output is the list of `output_item.done` items."""
    added = [event for event in events if event["type"] == "response.output_item.added"]
    done = [event for event in events if event["type"] == "response.output_item.done"]
    assert [event["output_index"] for event in added] == list(range(len(added)))
    text: dict[tuple[str, int], str] = {}
    for event in events:
        if event["type"] == "response.output_text.delta":
            key = (event["item_id"], event["content_index"])
            text[key] = text.get(key, "") + event["delta"]
        elif event["type"] == "response.output_text.done":
            assert text.get((event["item_id"], event["content_index"]), "") == event["text"]
    arguments: dict[str, str] = {}
    for event in events:
        if event["type"] == "response.function_call_arguments.delta":
            arguments[event["item_id"]] = arguments.get(event["item_id"], "") + event["delta"]
        elif event["type"] == "response.function_call_arguments.done":
            assert arguments.get(event["item_id"], "") == event["arguments"]
    final = events[-1].get("response")
    if final is not None and final["status"] == "completed":
        assert len(added) == len(done)
        assert final["output"] == [event["item"] for event in done]


def create(client: httpx.Client, body: JSON) -> JSON:
    response = client.post("/v1/responses", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    validate_resource(payload)
    return payload


def retrieve(client: httpx.Client, response_id: str) -> JSON:
    response = client.get(f"/v1/responses/{response_id}")
    assert response.status_code == 200, response.text
    payload = response.json()
    validate_resource(payload)
    return payload


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


# --- the event map itself ------------------------------------------------------------------


def test_event_map_matches_the_models_type_literals() -> None:
    for event_type, model in STREAM_EVENT_MODELS.items():
        annotation = model.model_fields["type"].annotation
        assert [member.value for member in annotation] == [event_type]  # type: ignore[union-attr]
    every_model = {name for name in dir(ort) if name.endswith("StreamingEvent")}
    assert {model.__name__ for model in STREAM_EVENT_MODELS.values()} == every_model


# --- text, reasoning -------------------------------------------------------------------------


def test_echo_stream_and_body(client: httpx.Client) -> None:
    body = {"model": "local/echo", "input": "hello open responses"}
    sse = stream(client, body)
    assert sse.types()[:2] == ["response.created", "response.in_progress"]
    assert sse.terminal["type"] == "response.completed"
    assert sse.events[0]["response"]["status"] == "in_progress"
    assert sse.events[0]["response"]["output"] == []
    deltas = sse.of_type("response.output_text.delta")
    assert "".join(event["delta"] for event in deltas) == "hello open responses"
    final = sse.terminal["response"]
    assert final["usage"]["output_tokens"] > 0

    payload = create(client, body)
    assert payload["status"] == "completed"
    assert payload["output"][0]["content"][0]["text"] == "hello open responses"
    assert retrieve(client, payload["id"])["output"] == payload["output"]
    assert retrieve(client, final["id"])["status"] == "completed"


def test_think_stream_has_reasoning_summary_events(client: httpx.Client) -> None:
    body = {"model": "local/think", "input": "reason about this"}
    sse = stream(client, body)
    types = sse.types()
    for event_type in (
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
    ):
        assert event_type in types
    assert types.index("response.reasoning_summary_part.done") < types.index(
        "response.output_text.delta"
    ), "reasoning comes before the message"
    summary_done = sse.of_type("response.reasoning_summary_text.done")[0]
    summary_deltas = sse.of_type("response.reasoning_summary_text.delta")
    assert "".join(event["delta"] for event in summary_deltas) == summary_done["text"]
    final = sse.terminal["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": summary_done["text"]}]

    payload = create(client, body)
    assert [item["type"] for item in payload["output"]] == ["reasoning", "message"]
    retrieve(client, payload["id"])


# --- function calls --------------------------------------------------------------------------


def test_function_call_stream_and_body(client: httpx.Client) -> None:
    body = {
        "model": "local/echo",
        "input": 'call get_weather {"city": "Paris"}',
        "tools": [WEATHER_TOOL],
    }
    sse = stream(client, body)
    assert sse.terminal["type"] == "response.completed"
    added = sse.of_type("response.output_item.added")
    assert [event["item"]["type"] for event in added] == ["function_call"]
    assert added[0]["item"]["arguments"] == ""
    args_done = sse.of_type("response.function_call_arguments.done")
    assert len(args_done) == 1
    assert args_done[0]["name"] == "get_weather"
    assert json.loads(args_done[0]["arguments"]) == {"city": "Paris"}
    call = sse.terminal["response"]["output"][0]
    assert call["type"] == "function_call"
    assert call["call_id"] and call["id"] and call["status"] == "completed"

    payload = create(client, body)
    assert payload["output"][0]["name"] == "get_weather"
    retrieve(client, payload["id"])


def test_two_parallel_calls(client: httpx.Client) -> None:
    body = {
        "model": "local/echo",
        "input": "call a {} and call b {}",
        "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
    }
    sse = stream(client, body)
    done = sse.of_type("response.output_item.done")
    assert [(event["output_index"], event["item"]["name"]) for event in done] == [
        (0, "a"),
        (1, "b"),
    ]
    call_ids = [event["item"]["call_id"] for event in done]
    assert len(set(call_ids)) == 2

    payload = create(client, body)
    assert [item["name"] for item in payload["output"]] == ["a", "b"]


# --- incomplete and failed -------------------------------------------------------------------


def test_max_output_tokens_gives_incomplete(client: httpx.Client) -> None:
    body = {"model": "local/echo", "input": LONG_INPUT, "max_output_tokens": 2}
    sse = stream(client, body)
    assert sse.terminal["type"] == "response.incomplete"
    final = sse.terminal["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert len(sse.of_type("response.output_text.delta")) == 2

    payload = create(client, body)
    assert payload["status"] == "incomplete"
    assert payload["incomplete_details"] == {"reason": "max_output_tokens"}
    assert payload["max_output_tokens"] == 2
    assert retrieve(client, payload["id"])["status"] == "incomplete"


def test_error_mid_stream_sends_error_then_failed(client: httpx.Client) -> None:
    sse = stream(client, {"model": "local/error-mid-stream", "input": LONG_INPUT})
    types = sse.types()
    assert types[-2:] == ["error", "response.failed"]
    error = sse.of_type("error")[0]
    assert error["error"]["message"]
    assert error["error"]["type"]
    failed = sse.terminal["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == error["error"]["code"]
    assert failed["error"]["message"]
    assert "Traceback" not in json.dumps(sse.events)
    assert len(sse.of_type("response.output_text.delta")) == 2


# --- echoed configuration --------------------------------------------------------------------


def test_json_schema_format_is_echoed_with_every_key(client: httpx.Client) -> None:
    fmt = {"type": "json_schema", "name": "x", "schema": {"type": "object"}}
    body = {"model": "local/echo", "input": "{}", "text": {"format": fmt}}

    payload = create(client, body)
    echoed = payload["text"]["format"]
    assert echoed.keys() >= JSON_SCHEMA_FORMAT_KEYS
    assert echoed["name"] == "x"
    assert echoed["schema"] == {"type": "object"}
    assert isinstance(echoed["strict"], bool)

    sse = stream(client, body)
    for event in (sse.events[0], sse.terminal):
        assert event["response"]["text"]["format"]["name"] == "x"
    retrieve(client, payload["id"])


def test_function_tool_is_echoed_with_strict(client: httpx.Client) -> None:
    tools = [
        {"type": "function", "name": "no_strict"},
        {"type": "function", "name": "strict_off", "strict": False, "parameters": {}},
    ]
    body = {"model": "local/echo", "input": "hi", "tools": tools}
    payload = create(client, body)
    echoed = {tool["name"]: tool for tool in payload["tools"]}
    for tool in echoed.values():
        assert {"type", "name", "description", "parameters", "strict"} <= tool.keys()
    assert echoed["no_strict"]["strict"] is True, "a missing strict means true"
    assert echoed["strict_off"]["strict"] is False

    sse = stream(client, body)
    assert [tool["name"] for tool in sse.events[0]["response"]["tools"]] == [
        "no_strict",
        "strict_off",
    ]


def test_unknown_tool_kinds_leave_a_valid_response(client: httpx.Client) -> None:
    body = {
        "model": "local/echo",
        "input": "hi",
        "tools": [
            {"type": "web_search", "external_web_access": False},
            {"type": "namespace", "name": "ns", "description": "d", "tools": []},
            WEATHER_TOOL,
        ],
    }
    payload = create(client, body)
    assert [tool["name"] for tool in payload["tools"]] == ["get_weather"]
    stream(client, body)


# --- random valid requests -------------------------------------------------------------------


@pytest.mark.parametrize("case", range(20))
def test_random_valid_requests_validate(client: httpx.Client, case: int) -> None:
    spec = build_request_body(seed=case)
    body = spec.to_body()

    payload = create(client, body)
    assert payload["model"] == spec.model
    assert payload["status"] in ("completed", "incomplete")
    for key in ("instructions", "temperature", "top_p", "max_output_tokens", "metadata"):
        if key in body:
            assert payload[key] == body[key], key
    if spec.tool_choice is not None:
        assert payload["tool_choice"] == spec.tool_choice
    assert [tool["name"] for tool in payload["tools"]] == [tool.name for tool in spec.tools]
    if spec.text is not None:
        assert payload["text"]["format"]["type"] == spec.text["format"]["type"]
    if spec.store is not False:
        retrieve(client, payload["id"])

    sse = stream(client, body)
    assert sse.terminal["response"]["status"] == payload["status"]
