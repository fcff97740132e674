"""Wire defects real clients found (issue 13, item 7): a reasoning item's absent
`encrypted_content` sent as null, stored input items listed without the fields the strict SDK
and Open Responses require, the static `/responses/...` POST routes taken for a response id,
and a Responses upstream not sent the client's other tool kinds and `client_metadata`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import openresponses_types as ort
import pytest
from dependency_injector import providers
from pydantic import TypeAdapter

from tests.conftest import LiveServer, make_container
from tests.helpers import sse_events
from tests.test_openai_sdk import make_client
from tests.upstreams import FakeUpstream, Reply
from xrouter.adapters.providers.openai_compatible.provider import OpenAICompatibleProvider
from xrouter.adapters.providers.provider_spec import ProviderSpec
from xrouter.adapters.providers.transport_settings import TransportSettings

JSON = dict[str, Any]
LISTED_ITEM: TypeAdapter[Any] = TypeAdapter(
    ort.Item2 | ort.Item3 | ort.Item4 | ort.Item5 | ort.Item6
)
"""An item as Open Responses lists it (message, function call and output, reasoning,
compaction)."""

WEATHER_TOOL: JSON = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}
# The tools Codex 0.169 sends besides its function tools (shared/reference/RESPONSES_API.md).
NAMESPACE_TOOL: JSON = {
    "type": "namespace",
    "name": "mcp__files",
    "description": "File tools of an MCP server.",
    "tools": [{"type": "function", "name": "read", "parameters": {"type": "object"}}],
}
WEB_SEARCH_TOOL: JSON = {"type": "web_search", "external_web_access": True}
CLIENT_METADATA: JSON = {"session_id": "0199-abc", "turn": 3, "nested": {"k": [1, None]}}


@pytest.fixture
def sdk(server: LiveServer) -> Iterator[openai.OpenAI]:
    with make_client(server) as client:
        yield client


def _reasoning_items(output: list[JSON]) -> list[JSON]:
    return [item for item in output if item["type"] == "reasoning"]


# --- reasoning items: no null encrypted_content ----------------------------------------------


def test_a_reasoning_item_without_encrypted_content_omits_the_key(server: LiveServer) -> None:
    with server.client() as client:
        created = client.post("/v1/responses", json={"model": "local/think", "input": "hi there"})
        retrieved = client.get(f"/v1/responses/{created.json()['id']}")
        streamed = client.post(
            "/v1/responses", json={"model": "local/think", "input": "hi there", "stream": True}
        )
    events, _ = sse_events(streamed.text)
    items = _reasoning_items(created.json()["output"]) + _reasoning_items(
        retrieved.json()["output"]
    )
    items += [
        event["item"]
        for event in events
        if event["type"].startswith("response.output_item.")
        and event["item"]["type"] == "reasoning"
    ]
    items += _reasoning_items(events[-1]["response"]["output"])
    assert len(items) == 5
    for item in items:
        assert "encrypted_content" not in item, item
        assert None not in item.values(), item
        LISTED_ITEM.validate_python(item)


def _gateway(serve_with: Any, upstream: FakeUpstream, protocol: str) -> LiveServer:
    transport = TransportSettings(base_url=upstream.base_url, max_retries=0)
    provider = OpenAICompatibleProvider(
        ProviderSpec(name="up", transport=transport, api_key="sk-test", protocol=protocol)
    )
    container = make_container()
    container.model_providers.override(providers.Object([provider]))
    return serve_with(container=container)


def test_an_upstreams_encrypted_content_is_kept(serve_with: Any, upstream: FakeUpstream) -> None:
    answer = {
        "id": "resp_up",
        "object": "response",
        "status": "completed",
        "model": "gpt-test",
        "output": [
            {"type": "reasoning", "id": "rs_up", "summary": [], "encrypted_content": "gAAA=="},
            {
                "type": "message",
                "id": "msg_up",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "ok", "annotations": []}],
            },
        ],
        "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
    }
    upstream.script("/v1/responses", Reply.json(answer))
    server = _gateway(serve_with, upstream, "responses")
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": "up/gpt-test", "input": "x"})
    assert reply.status_code == 200, reply.text
    (item,) = _reasoning_items(reply.json()["output"])
    assert item["encrypted_content"] == "gAAA=="


# --- stored input items as the strict SDK and Open Responses list them -------------------------

# Input items as clients send them: without ids, statuses or annotations.
CLIENT_INPUT: list[JSON] = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Let me look."}],
    },
    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Call the tool."}]},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks!"}]},
]


def test_stored_input_items_pass_the_strict_sdk(sdk: openai.OpenAI) -> None:
    created = sdk.responses.create(model="local/echo", input=CLIENT_INPUT)  # type: ignore[arg-type]
    page = sdk.responses.input_items.list(created.id, order="asc")
    assert [item.type for item in page.data] == [
        "message",
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert all(item.id for item in page.data)


def test_stored_input_items_are_open_responses_items(server: LiveServer) -> None:
    with server.client() as client:
        created = client.post("/v1/responses", json={"model": "local/echo", "input": CLIENT_INPUT})
        page = client.get(f"/v1/responses/{created.json()['id']}/input_items?order=asc").json()
    items = page["data"]
    assert len(items) == len(CLIENT_INPUT)
    for item in items:
        LISTED_ITEM.validate_python(item)
        if item["type"] in ("message", "function_call", "function_call_output"):
            assert item["status"] == "completed", item
    assert items[1]["content"] == [
        {"type": "output_text", "text": "Let me look.", "annotations": []}
    ]
    # What the client sent is kept as sent: nothing added to the stored items themselves.
    assert items[0]["content"] == [{"type": "input_text", "text": "What is the weather in Paris?"}]


def test_a_status_the_client_sent_is_kept(server: LiveServer) -> None:
    sent = {**CLIENT_INPUT[3], "status": "incomplete"}
    with server.client() as client:
        created = client.post(
            "/v1/responses", json={"model": "local/echo", "input": [sent, CLIENT_INPUT[0]]}
        )
        page = client.get(f"/v1/responses/{created.json()['id']}/input_items?order=asc").json()
    assert page["data"][0]["status"] == "incomplete"


# --- routing: static POST paths under /responses ------------------------------------------


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
@pytest.mark.parametrize("path", ["/responses/input_tokens", "/responses/compact"])
def test_static_responses_paths_are_not_taken_for_an_id(
    server: LiveServer, prefix: str, path: str
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        reply = client.post(f"{prefix}{path}", json={"model": "local/echo", "input": "a b"})
    assert reply.status_code != 405, reply.text
    assert reply.status_code == 200, reply.text
    assert reply.json()["object"] in ("response.input_tokens", "response.compaction")


# --- other tool kinds and client_metadata to a Responses upstream ----------------------------


def _codex_like_body(stream: bool) -> JSON:
    return {
        "model": "up/gpt-test",
        "input": "list the files",
        "tools": [WEATHER_TOOL, NAMESPACE_TOOL, WEB_SEARCH_TOOL],
        "client_metadata": CLIENT_METADATA,
        "stream": stream,
    }


@pytest.mark.parametrize("stream", [False, True])
def test_a_responses_upstream_gets_every_tool_and_client_metadata_as_sent(
    serve_with: Any, upstream: FakeUpstream, stream: bool
) -> None:
    server = _gateway(serve_with, upstream, "responses")
    with server.client() as client:
        reply = client.post("/v1/responses", json=_codex_like_body(stream))
    assert reply.status_code == 200, reply.text
    (sent,) = [request.json for request in upstream.requests("/v1/responses")]
    assert sent["tools"] == [WEATHER_TOOL, NAMESPACE_TOOL, WEB_SEARCH_TOOL]
    assert sent["client_metadata"] == CLIENT_METADATA
    assert sent["tool_choice"] == "auto"


def test_only_other_kinds_of_tools_still_reach_a_responses_upstream(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    server = _gateway(serve_with, upstream, "responses")
    body = {"model": "up/gpt-test", "input": "x", "tools": [WEB_SEARCH_TOOL]}
    with server.client() as client:
        reply = client.post("/v1/responses", json=body)
    assert reply.status_code == 200, reply.text
    (sent,) = [request.json for request in upstream.requests("/v1/responses")]
    assert sent["tools"] == [WEB_SEARCH_TOOL]
    # The response echoes function tools only (the Responses object's `tools` shape).
    assert reply.json()["tools"] == []


def test_a_chat_upstream_still_gets_only_function_tools(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    server = _gateway(serve_with, upstream, "chat")
    with server.client() as client:
        reply = client.post("/v1/responses", json=_codex_like_body(False))
    assert reply.status_code == 200, reply.text
    (sent,) = [request.json for request in upstream.requests("/v1/chat/completions")]
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather"]
    assert "client_metadata" not in sent
    assert "client_metadata" not in json.dumps(sent)
