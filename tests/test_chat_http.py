"""Scenario matrix for `POST /v1/chat/completions` over real HTTP, and the openai SDK on it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import openai
import pytest

from tests.conftest import LiveServer
from tests.helpers import (
    raw_post,
    read_until,
    server_with_slow_stage,
    trace,
    usage_records,
    wait_for,
)
from xrouter.domain.lifecycle import Action

CHAT = "/v1/chat/completions"
TOOLS = [
    {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "time", "parameters": {"type": "object"}}},
]


def data_frames(raw: str) -> list[str]:
    frames = [block for block in raw.split("\n\n") if block]
    assert all(frame.startswith("data: ") and "\n" not in frame for frame in frames), frames
    return [frame[6:] for frame in frames]


def test_success_non_stream(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post(
            CHAT,
            json={"model": "local/echo", "messages": [{"role": "user", "content": "hi there"}]},
        )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hi there",
        "refusal": None,
        "annotations": [],
        "tool_calls": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_success_stream_with_usage(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post(
            CHAT,
            json={
                "model": "local/echo",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "one two three"}],
            },
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = data_frames(response.text)
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert all("usage" in chunk for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "one two three"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(chunk["usage"] is None for chunk in chunks[:-1])


@pytest.mark.parametrize("stream", [False, True])
def test_provider_error_before_output_is_a_json_502(server: LiveServer, stream: bool) -> None:
    with server.client() as client:
        response = client.post(
            CHAT,
            json={
                "model": "local/error",
                "stream": stream,
                "messages": [{"role": "user", "content": "x"}],
            },
        )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_error"


def test_provider_error_mid_stream_is_an_error_frame_then_done(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post(
            CHAT,
            json={
                "model": "local/error-mid-stream",
                "stream": True,
                "messages": [{"role": "user", "content": "a b c d"}],
            },
        )
    frames = data_frames(response.text)
    assert frames[-1] == "[DONE]"
    error = json.loads(frames[-2])
    assert set(error) == {"error"} and error["error"]["code"] == "provider_error"


def test_timeout(serve_with: Callable[..., LiveServer]) -> None:
    server = serve_with(generation_timeout_s=0.3, local_slow_delay_s=0.5)
    body = {"model": "local/slow", "messages": [{"role": "user", "content": "a b c"}]}
    with server.client() as client:
        plain = client.post(CHAT, json=body)
        streamed = client.post(CHAT, json={**body, "stream": True})
    assert plain.status_code == 504
    assert json.loads(data_frames(streamed.text)[-2])["error"]["code"] == "provider_timeout"


@pytest.mark.parametrize("stage", ["ingest", "tokenize"])
def test_disconnect_before_generate_fails_at_once(
    serve_with: Callable[..., LiveServer], stage: str
) -> None:
    server = server_with_slow_stage(serve_with, stage)
    request_id = f"chat-gone-in-{stage}"
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "x"}]}
    sock = raw_post(server, body, request_id, path=CHAT)
    time.sleep(0.2)
    sock.close()
    wait_for(lambda: Action.DISCONNECT_EARLY in trace(server, request_id), timeout=2)
    assert server.listener.traces()[request_id][-1].from_stage == stage


def test_disconnect_during_generate_lets_generation_complete(
    serve_with: Callable[..., LiveServer],
) -> None:
    server = serve_with(local_slow_delay_s=0.1)
    body = {
        "model": "local/slow",
        "stream": True,
        "messages": [{"role": "user", "content": "a b c d e"}],
    }
    sock = raw_post(server, body, "chat-gone-late", path=CHAT)
    read_until(sock, b'"content":"a ')
    sock.close()
    wait_for(lambda: Action.RECORD_USAGE in trace(server, "chat-gone-late"))
    actions = trace(server, "chat-gone-late")
    assert actions.index(Action.DISCONNECT_LATE) < actions.index(Action.FINISH)
    assert usage_records(server, "chat-gone-late")[0].status == "completed"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "local/echo", "messages": []}, "messages"),
        ({"model": "local/echo"}, "messages"),
        (
            {"model": "local/echo", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        ({"model": "local/echo", "messages": "hello"}, "messages"),
        ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model"),
        (
            {"model": "local/echo", "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
        ),
    ],
)
def test_bad_input_names_the_field(server: LiveServer, body: dict[str, object], param: str) -> None:
    with server.client() as client:
        response = client.post(CHAT, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


# --- the official SDK in strict mode -------------------------------------------------------------


def sdk(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url + "/v1",
        api_key="test",
        max_retries=0,
        _strict_response_validation=True,
    )


def test_sdk_create_and_stream_with_usage(server: LiveServer) -> None:
    client = sdk(server)
    completion = client.chat.completions.create(
        model="local/echo", messages=[{"role": "user", "content": "hello sdk"}]
    )
    assert completion.choices[0].message.content == "hello sdk"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="local/echo",
            messages=[{"role": "user", "content": "hello sdk"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello sdk"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_sdk_stream_accumulates_parallel_tool_calls(server: LiveServer) -> None:
    client = sdk(server)
    with client.chat.completions.stream(
        model="local/echo",
        messages=[{"role": "user", "content": 'call weather {"city": "Paris"} and call time'}],
        tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("weather", '{"city":"Paris"}'),
        ("time", "{}"),
    ]
    assert len({c.id for c in calls}) == 2


def test_sdk_tool_round_trip_and_errors(server: LiveServer) -> None:
    client = sdk(server)
    answer = client.chat.completions.create(
        model="local/echo",
        messages=[
            {"role": "user", "content": "call weather"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content == "Tool weather returned: sunny"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope/x", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="local/echo", messages=[])
