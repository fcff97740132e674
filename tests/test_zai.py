"""Z.AI (GLM): the request knobs it needs (`tool_stream`, `thinking`, `max_tokens`), its
tool_choice rule, its retried 5xx, and its answers (reasoning_content, streamed tool-call
fragments) through both APIs, against a fake Z.AI on loopback."""

from __future__ import annotations

from typing import Any

import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.helpers import sse_events
from tests.test_openai_compatible import make_call
from tests.test_openresponses_schema import create, stream
from tests.upstreams import FakeUpstream, Reply
from xrouter.adapters.providers.openai_compatible.chat_protocol import build_chat_payload
from xrouter.adapters.providers.provider_spec import ProviderSpec, ZaiSpec
from xrouter.adapters.providers.transport import TransportSettings
from xrouter.adapters.providers.zai import ZAI_BASE_URL, ZAI_DIALECT, ZaiProvider
from xrouter.domain.errors import InvalidRequest
from xrouter.entrypoints.provider_config import load_gateway_config, provider_spec
from xrouter.entrypoints.provider_factory import build_provider

JSON = dict[str, Any]
CHAT_PATH = "/api/paas/v4/chat/completions"
MODEL = "zai/glm-4.6"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def zai_over(upstream: FakeUpstream, **settings: Any) -> ZaiProvider:
    transport = TransportSettings(base_url=f"{upstream.origin}/api/paas/v4", **settings)
    return ZaiProvider(ZaiSpec(name="zai", transport=transport, api_key="zai-test-key"))


def gateway(serve_with: Any, upstream: FakeUpstream, **settings: Any) -> LiveServer:
    container = make_container()
    container.model_providers.override(providers.Object([zai_over(upstream, **settings)]))
    return serve_with(container=container)


def payload_for(body: JSON, *, stream: bool) -> JSON:
    provider = ZaiProvider(ZaiSpec(name="zai", transport=TransportSettings(ZAI_BASE_URL)))
    call = make_call(body, upstream_model="glm-4.6")
    return provider.adjust_payload(
        build_chat_payload(call, stream=stream, dialect=ZAI_DIALECT), call
    )


def chunk(delta: JSON, finish: str | None = None) -> JSON:
    return {
        "id": "zai-1", "created": 1, "model": "glm-4.6", "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }  # fmt: skip


USAGE = {"id": "zai-1", "choices": [], "usage": {
    "prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}}  # fmt: skip

TOOL_STREAM = [
    chunk({"role": "assistant", "reasoning_content": "Need the weather."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}, "tool_calls"),
    USAGE,
]  # fmt: skip

TOOL_COMPLETION = {
    "id": "zai-1", "created": 1, "model": "glm-4.6", "object": "chat.completion",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "", "reasoning_content": "Need the weather.",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
}  # fmt: skip


# --- configuration --------------------------------------------------------------------------------


def test_an_api_key_alone_serves_zai_at_its_default_url() -> None:
    config = load_gateway_config({"XR_ZAI_API_KEY": "k"}, None, byok=False)
    (zai,) = config.providers
    assert (zai.name, zai.kind, zai.base_url) == ("zai", "zai", "https://api.z.ai/api/paas/v4")
    assert isinstance(build_provider(provider_spec(zai, False)), ZaiProvider)


def test_the_kind_under_another_name_brings_the_same_defaults(tmp_path: Any) -> None:
    file = tmp_path / "xrouter.toml"
    file.write_text('[providers.glm]\nkind = "zai"\napi_key_env = "GLM_KEY"\n')
    config = load_gateway_config({"GLM_KEY": "k"}, str(file), byok=False)
    (glm,) = config.providers
    assert (glm.kind, glm.base_url, glm.api_key) == ("zai", ZAI_BASE_URL, "k")
    spec = provider_spec(glm, False)
    assert isinstance(spec, ZaiSpec)
    assert isinstance(build_provider(spec), ZaiProvider)


def test_zai_speaks_chat_only() -> None:
    spec = ZaiSpec(name="zai", transport=TransportSettings(ZAI_BASE_URL), protocol="responses")
    with pytest.raises(ValueError, match="Chat Completions only"):
        ZaiProvider(spec)
    assert not isinstance(ProviderSpec(name="x", transport=TransportSettings("u")), ZaiSpec)


# --- payload --------------------------------------------------------------------------------------


def test_streamed_call_with_tools_asks_for_tool_stream_and_thinking() -> None:
    payload = payload_for(
        {"input": "weather?", "tools": [WEATHER], "max_output_tokens": 200,
         "reasoning": {"effort": "high"}},
        stream=True,
    )  # fmt: skip
    assert payload == {
        "model": "glm-4.6",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather in a city.",
            "parameters": WEATHER["parameters"]}}],
        "tool_choice": "auto",
        "tool_stream": True,
        "max_tokens": 200,
        "thinking": {"type": "enabled"},
        "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip


def test_tool_stream_only_when_streaming_with_tools() -> None:
    assert "tool_stream" not in payload_for({"input": "hi", "tools": [WEATHER]}, stream=False)
    assert "tool_stream" not in payload_for({"input": "hi"}, stream=True)


@pytest.mark.parametrize(
    ("effort", "thinking"),
    [("none", {"type": "disabled"}), ("minimal", {"type": "enabled"}),
     ("low", {"type": "enabled"}), ("xhigh", {"type": "enabled"})],
)  # fmt: skip
def test_effort_none_disables_thinking_and_any_other_enables_it(
    effort: str, thinking: JSON
) -> None:
    payload = payload_for({"input": "hi", "reasoning": {"effort": effort}}, stream=False)
    assert payload["thinking"] == thinking
    assert "reasoning_effort" not in payload


def test_no_effort_sends_no_thinking_switch() -> None:
    payload = payload_for({"input": "hi"}, stream=False)
    assert "thinking" not in payload and "reasoning_effort" not in payload


def test_tool_choice_none_is_honoured_by_sending_no_tools() -> None:
    payload = payload_for({"input": "hi", "tools": [WEATHER], "tool_choice": "none"}, stream=True)
    assert not {"tools", "tool_choice", "parallel_tool_calls", "tool_stream"} & set(payload)


@pytest.mark.parametrize(
    "choice",
    ["required", {"type": "function", "name": "get_weather"},
     {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function",
                                                              "name": "get_weather"}]}],
)  # fmt: skip
def test_a_forced_tool_choice_is_refused_naming_the_param(choice: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        payload_for({"input": "hi", "tools": [WEATHER], "tool_choice": choice}, stream=False)
    assert caught.value.param == "tool_choice"
    assert "auto" in str(caught.value)


# --- over real HTTP -------------------------------------------------------------------------------


async def test_provider_sends_the_key_and_the_zai_payload(upstream: FakeUpstream) -> None:
    upstream.script(CHAT_PATH, Reply.sse(TOOL_STREAM))
    provider = zai_over(upstream, max_retries=0)
    call = make_call(
        {"input": "weather?", "tools": [WEATHER], "stream": True, "reasoning": {"effort": "none"}},
        upstream_model="glm-4.6",
    )
    events = [event async for batch in provider.stream(call) for event in batch]
    await provider.aclose()
    assert events
    (request,) = upstream.requests(CHAT_PATH)
    assert request.headers["authorization"] == "Bearer zai-test-key"
    assert request.json["tool_stream"] is True
    assert request.json["tool_choice"] == "auto"
    assert request.json["thinking"] == {"type": "disabled"}
    assert "parallel_tool_calls" not in request.json


def test_streamed_tool_call_and_reasoning_through_the_responses_api(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(CHAT_PATH, Reply.sse(TOOL_STREAM))
    server = gateway(serve_with, upstream, max_retries=0)
    with server.client() as client:
        events = stream(
            client,
            {"model": MODEL, "input": "weather?", "tools": [WEATHER],
             "reasoning": {"effort": "high"}},
        ).events  # fmt: skip
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert [item["type"] for item in final["output"]] == ["reasoning", "function_call"]
    assert final["output"][0]["summary"][0]["text"] == "Need the weather."
    call = final["output"][1]
    assert (call["name"], call["arguments"], call["call_id"]) == (
        "get_weather", '{"city": "Paris"}', "call_1")  # fmt: skip
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(deltas) == '{"city": "Paris"}' and len(deltas) == 2
    assert final["usage"]["total_tokens"] == 14
    (request,) = upstream.requests(CHAT_PATH)
    assert request.json["tool_stream"] is True
    assert request.json["thinking"] == {"type": "enabled"}


def test_whole_tool_call_through_the_responses_api(serve_with: Any, upstream: FakeUpstream) -> None:
    upstream.script(CHAT_PATH, Reply.json(TOOL_COMPLETION))
    server = gateway(serve_with, upstream, max_retries=0)
    with server.client() as client:
        answer = create(client, {"model": MODEL, "input": "weather?", "tools": [WEATHER]})
    assert [item["type"] for item in answer["output"]] == ["reasoning", "function_call"]
    assert answer["output"][1]["arguments"] == '{"city": "Paris"}'
    (request,) = upstream.requests(CHAT_PATH)
    assert "tool_stream" not in request.json and request.json["tool_choice"] == "auto"


def test_tool_call_through_chat_completions_stream_and_not(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(CHAT_PATH, [Reply.sse(TOOL_STREAM), Reply.json(TOOL_COMPLETION)])
    server = gateway(serve_with, upstream, max_retries=0)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "parameters": WEATHER["parameters"]}}],
        "reasoning_effort": "none",
    }  # fmt: skip
    with server.client() as client:
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
        whole = client.post("/v1/chat/completions", json=body)
    chunks, others = sse_events(streamed.text)
    assert others == ["[DONE]"]
    arguments = "".join(
        call["function"].get("arguments") or ""
        for c in chunks
        for choice in c.get("choices", [])
        for call in choice["delta"].get("tool_calls") or []
    )
    assert arguments == '{"city": "Paris"}'
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["tool_calls"]
    message = whole.json()["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert whole.json()["choices"][0]["finish_reason"] == "tool_calls"
    sent = [r.json for r in upstream.requests(CHAT_PATH)]
    assert [r.get("tool_stream") for r in sent] == [True, None]
    assert [r["thinking"] for r in sent] == [{"type": "disabled"}] * 2


def test_a_forced_tool_choice_is_a_400_before_any_upstream_call(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    server = gateway(serve_with, upstream, max_retries=0)
    with server.client() as client:
        responses = client.post(
            "/v1/responses",
            json={"model": MODEL, "input": "hi", "tools": [WEATHER], "tool_choice": "required"},
        )
        chat = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                  "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                  "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        )  # fmt: skip
    for reply in (responses, chat):
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"] == "tool_choice"
    assert upstream.hits(CHAT_PATH) == 0


def test_operation_failed_5xx_is_retried(serve_with: Any, upstream: FakeUpstream) -> None:
    failed = Reply(
        status=500,
        body=b'{"error":{"code":"500","message":"Operation failed"}}',
        headers={"Content-Type": "application/json"},
    )
    upstream.script(CHAT_PATH, [failed, failed])
    server = gateway(serve_with, upstream, max_retries=2, backoff_initial_s=0.01)
    with server.client() as client:
        answer = create(client, {"model": MODEL, "input": "hello there"})
    assert answer["output"][0]["content"][0]["text"] == "hello there"
    assert upstream.hits(CHAT_PATH) == 3


def test_operation_failed_after_the_retries_is_a_502_naming_zai(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    failed = Reply(
        status=500,
        body=b'{"error":{"code":"500","message":"Operation failed"}}',
        headers={"Content-Type": "application/json"},
    )
    upstream.script(CHAT_PATH, [failed, failed])
    server = gateway(serve_with, upstream, max_retries=1, backoff_initial_s=0.01)
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": MODEL, "input": "hi"})
    assert reply.status_code == 502
    assert "zai" in reply.json()["error"]["message"]
    assert "Operation failed" in reply.json()["error"]["message"]
    assert upstream.hits(CHAT_PATH) == 2


FAILED_INSIDE_200 = {"error": {"code": "500", "message": "Operation failed"}}


def test_operation_failed_inside_a_200_is_retried(serve_with: Any, upstream: FakeUpstream) -> None:
    upstream.script(CHAT_PATH, Reply.json(FAILED_INSIDE_200))  # then the default echo
    server = gateway(serve_with, upstream, max_retries=1, backoff_initial_s=0.01)
    with server.client() as client:
        answer = create(client, {"model": MODEL, "input": "hello there"})
    assert answer["output"][0]["content"][0]["text"] == "hello there"
    assert upstream.hits(CHAT_PATH) == 2


def test_a_transient_first_stream_event_is_retried_on_both_apis(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    network = {"error": {"code": "1234", "message": "Network error, error id: e1"}}
    upstream.script(
        CHAT_PATH,
        [Reply.sse([chunk({"role": "assistant"}) | network], done=False),
         Reply.sse([network], done=False)],
    )  # fmt: skip
    server = gateway(serve_with, upstream, max_retries=2, backoff_initial_s=0.01)
    with server.client() as client:
        events = stream(client, {"model": MODEL, "input": "hello there"}).events
        chat = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "stream": True,
                  "messages": [{"role": "user", "content": "two words"}]},
        )  # fmt: skip
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "hello there"
    chunks, others = sse_events(chat.text)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert (text, others) == ("two words", ["[DONE]"])
    assert upstream.hits(CHAT_PATH) == 4  # two failed attempts, then one call per API


def test_no_new_attempt_once_output_went_out(serve_with: Any, upstream: FakeUpstream) -> None:
    upstream.script(
        CHAT_PATH, Reply.sse([chunk({"content": "Par"}), FAILED_INSIDE_200], done=False)
    )
    server = gateway(serve_with, upstream, max_retries=2, backoff_initial_s=0.01)
    with server.client() as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
    chunks, _ = sse_events(reply.text)
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert text == "Par"
    assert "Operation failed" in chunks[-1]["error"]["message"]
    assert upstream.hits(CHAT_PATH) == 1


def test_a_transient_failure_inside_a_200_after_the_retries_is_a_502(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(CHAT_PATH, [Reply.json(FAILED_INSIDE_200)] * 2)
    server = gateway(serve_with, upstream, max_retries=1, backoff_initial_s=0.01)
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": MODEL, "input": "hi"})
    assert reply.status_code == 502
    assert "Operation failed" in reply.json()["error"]["message"]
    assert upstream.hits(CHAT_PATH) == 2


def test_a_client_error_inside_a_200_is_not_retried(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(
        CHAT_PATH, Reply.json({"error": {"code": "1214", "message": "Invalid messages"}})
    )
    server = gateway(serve_with, upstream, max_retries=2, backoff_initial_s=0.01)
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": MODEL, "input": "hi"})
    assert reply.status_code == 502
    assert upstream.hits(CHAT_PATH) == 1
