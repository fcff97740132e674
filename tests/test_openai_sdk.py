"""The official `openai` SDK as a real client of the live gateway, in strict validation mode.

`_strict_response_validation=True` makes the SDK validate every body and event against its own
pydantic models, so a missing or mistyped key fails the call instead of passing silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall

from tests.conftest import LiveServer

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def make_client(server: LiveServer, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url + prefix,
        api_key="test",
        _strict_response_validation=True,
        max_retries=0,
    )


@pytest.fixture
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with make_client(server) as sdk:
        yield sdk


def test_create_returns_the_echo_with_usage(client: openai.OpenAI) -> None:
    response = client.responses.create(model="local/echo", input="Hello from the SDK")

    assert response.status == "completed"
    assert response.output_text == "Hello from the SDK"
    assert response.id.startswith("resp_")
    assert response.model == "local/echo"
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )


def test_create_stream_events_are_ordered_and_join_to_the_answer(client: openai.OpenAI) -> None:
    stream = client.responses.create(model="local/echo", input="one two three four", stream=True)
    events = list(stream)

    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[1] == "response.in_progress"
    assert types[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 1, "the local provider streams a word per chunk"
    assert "".join(deltas) == "one two three four"
    done = [event for event in events if event.type == "response.output_text.done"]
    assert [event.text for event in done] == ["one two three four"]
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.status == "completed"
    assert completed.response.output_text == "one two three four"


def test_stream_helper_gives_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="local/think", input="think about this") as stream:
        text_deltas = [
            event.delta for event in stream if event.type == "response.output_text.delta"
        ]
        final = stream.get_final_response()

    assert "".join(text_deltas) == "think about this"
    assert final.status == "completed"
    assert final.output_text == "think about this"
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.usage is not None and final.usage.output_tokens > 0


def test_function_call_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="local/echo",
        input='call get_weather {"city": "Paris"}',
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    calls = [item for item in first.output if isinstance(item, ResponseFunctionToolCall)]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert call.call_id
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert first.output_text == ""

    second = client.responses.create(
        model="local/echo",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert second.status == "completed"
    assert second.previous_response_id == first.id
    assert second.output_text == "Tool get_weather returned: sunny"


def test_retrieve_then_delete_then_not_found(client: openai.OpenAI) -> None:
    created = client.responses.create(model="local/echo", input="keep me")

    retrieved = client.responses.retrieve(created.id)
    assert retrieved.id == created.id
    assert retrieved.output_text == "keep me"
    assert retrieved.status == "completed"

    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(created.id)
    assert caught.value.status_code == 404
    assert created.id in caught.value.message


def test_input_items_list(client: openai.OpenAI) -> None:
    created = client.responses.create(
        model="local/echo",
        input=[
            {"role": "user", "content": "first"},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "second"}],
            },
        ],
    )

    page = client.responses.input_items.list(created.id, order="asc")
    items = page.data
    assert len(items) == 2
    assert all(item.type == "message" for item in items)
    assert all(item.id for item in items)
    texts = [
        "".join(getattr(part, "text", "") for part in getattr(item, "content", []))
        for item in items
    ]
    assert texts == ["first", "second"]

    newest_first = client.responses.input_items.list(created.id)
    assert [item.id for item in newest_first.data] == [item.id for item in reversed(items)]


def test_unknown_model_is_not_found_with_code(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="nowhere/nothing", input="hi")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert caught.value.type == "invalid_request_error"


def test_bad_temperature_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="local/echo", input="hi", temperature=5)
    assert caught.value.status_code == 400
    assert caught.value.param == "temperature"


def test_unknown_previous_response_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="local/echo", input="hi", previous_response_id="resp_does_not_exist"
        )
    assert caught.value.code == "previous_response_not_found"
    assert caught.value.param == "previous_response_id"


def test_provider_failure_is_a_server_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.create(model="local/error", input="hi")
    assert caught.value.status_code == 502
    assert caught.value.code == "provider_error"


def test_mid_stream_failure_raises_in_the_sdk(client: openai.OpenAI) -> None:
    stream = client.responses.create(
        model="local/error-mid-stream", input="one two three four", stream=True
    )
    seen: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        seen.extend(event.type for event in stream)
    assert "failed mid-stream" in caught.value.message
    assert seen[0] == "response.created"
    assert seen.count("response.output_text.delta") == 2


def test_request_id_is_exposed_to_the_sdk(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="local/echo", input="id please")
    assert raw.headers["x-request-id"]
    assert raw.parse().output_text == "id please"


def test_api_v1_prefix_works_with_the_sdk(server: LiveServer) -> None:
    with make_client(server, "/api/v1") as sdk:
        created = sdk.responses.create(model="local/echo", input="via api prefix")
        assert created.output_text == "via api prefix"
        # The store is shared across prefixes.
        with make_client(server) as plain:
            assert plain.responses.retrieve(created.id).id == created.id


async def test_async_client_streams(server: LiveServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=server.base_url + "/v1",
        api_key="test",
        _strict_response_validation=True,
        max_retries=0,
    ) as sdk:
        stream = await sdk.responses.create(model="local/echo", input="async hello", stream=True)
        events = [event async for event in stream]

    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == "async hello"
