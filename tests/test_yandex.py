"""Yandex AI Studio: its configuration (kind, default base URL, folder, auth scheme), what it
is sent (model URI, `OpenAI-Project`, `Api-Key` or IAM `Bearer`, instructions, reasoning),
and its answers repaired (cumulative snapshots into deltas, tool calls printed as text into
function calls) through both APIs, stream and not, against a fake Yandex on loopback."""

from __future__ import annotations

from typing import Any

import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.helpers import sse_events
from tests.test_openresponses_schema import create, stream
from tests.upstreams import FakeUpstream, Reply
from xrouter.adapters.providers.yandex.provider import YandexProvider
from xrouter.adapters.providers.yandex.snapshots import SnapshotDeltas
from xrouter.adapters.providers.yandex.spec import YANDEX_BASE_URL, YandexSpec
from xrouter.adapters.providers.yandex.text_tools import PrintedCall, PrintedToolCalls
from xrouter.application.ports import Provider
from xrouter.entrypoints.env_fields import ConfigError
from xrouter.entrypoints.provider_config import load_gateway_config, provider_spec
from xrouter.entrypoints.provider_factory import build_provider

JSON = dict[str, Any]
PATH = "/v1/responses"
FOLDER = "b1gfolder"
MODEL = "yandex/yandexgpt/latest"
URI = f"gpt://{FOLDER}/yandexgpt/latest"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CHAT_WEATHER = {
    "type": "function",
    "function": {k: v for k, v in WEATHER.items() if k != "type"},
}


def configured(upstream: FakeUpstream | None = None, **env: str) -> Provider:
    """The provider the gateway builds from `XR_YANDEX_*` variables (at the fake when given)."""
    environ = {"XR_YANDEX_API_KEY": "AQVN-test-key", **env}
    if upstream is not None:
        environ["XR_YANDEX_BASE_URL"] = upstream.base_url
        environ.setdefault("XR_YANDEX_MAX_RETRIES", "0")
    (config,) = load_gateway_config(environ, None, False).providers
    return build_provider(provider_spec(config, False))


def gateway(serve_with: Any, provider: Provider) -> LiveServer:
    container = make_container()
    container.model_providers.override(providers.Object([provider]))
    return serve_with(container=container)


def response_frames(pieces: list[str], *, text: str | None = None) -> list[JSON]:
    """A Yandex Responses stream whose text deltas are `pieces` (snapshots or deltas)."""
    done_text = text if text is not None else pieces[-1]
    message = {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": done_text, "annotations": []}],
    }
    response = {"id": "resp_y1", "object": "response", "model": URI, "status": "in_progress"}
    return [
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**message, "status": "in_progress", "content": []}},
        *({"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
           "item_id": "msg_1", "delta": piece} for piece in pieces),
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": {
            **response, "status": "completed", "output": [message],
            "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}}},
    ]  # fmt: skip


def whole_response(text: str) -> JSON:
    return {
        "id": "resp_y1", "object": "response", "model": URI, "status": "completed",
        "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8},
    }  # fmt: skip


# --- configuration ---------------------------------------------------------------------------


def test_kind_defaults_base_url_protocol_and_auth() -> None:
    env = {"XR_YANDEX_API_KEY": "k", "XR_YANDEX_FOLDER_ID": FOLDER}
    (config,) = load_gateway_config(env, None, False).providers
    spec = provider_spec(config, False)
    assert isinstance(spec, YandexSpec)
    assert spec.transport.base_url == YANDEX_BASE_URL == "https://ai.api.cloud.yandex.net/v1"
    assert spec.protocol == "responses"
    assert (spec.folder_id, spec.auth) == (FOLDER, "api_key")
    assert isinstance(build_provider(spec), YandexProvider)

    # Another name with the kind gets the same defaults; the scheme and protocol can be set.
    env = {"XR_YC_KIND": "yandex", "XR_YC_API_KEY": "t1.iam", "XR_YC_AUTH_SCHEME": "iam",
           "XR_YC_PROTOCOL": "chat"}  # fmt: skip
    (config,) = load_gateway_config(env, None, False).providers
    spec = provider_spec(config, False)
    assert isinstance(spec, YandexSpec)
    assert spec.transport.base_url == YANDEX_BASE_URL
    assert (spec.auth, spec.protocol, spec.folder_id) == ("iam", "chat", None)

    with pytest.raises(ConfigError, match="auth_scheme"):
        load_gateway_config({**env, "XR_YC_AUTH_SCHEME": "oauth"}, None, False)


# --- what Yandex is sent --------------------------------------------------------------------


def test_model_uri_project_header_api_key_instructions_and_reasoning(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(PATH, Reply.json(whole_response("Hi")))
    server = gateway(serve_with, configured(upstream, XR_YANDEX_FOLDER_ID=FOLDER))
    with server.client() as client:
        answer = create(
            client,
            {"model": MODEL, "input": "hello", "instructions": "Be brief.",
             "reasoning": {"effort": "low"}},
        )  # fmt: skip
    assert answer["output"][0]["content"][0]["text"] == "Hi"
    (request,) = upstream.requests(PATH)
    assert request.headers["authorization"] == "Api-Key AQVN-test-key"
    assert request.headers["openai-project"] == FOLDER
    assert request.json == {
        "model": URI,
        "input": [{"type": "message", "role": "user", "content": "hello"}],
        "instructions": "Be brief.",
        "reasoning": {"effort": "low"},
        "store": False,
        "stream": False,
    }


def test_iam_token_is_a_bearer_and_a_gpt_uri_names_its_own_folder(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(PATH, Reply.json(whole_response("Hi")))
    provider = configured(upstream, XR_YANDEX_API_KEY="t1.iam-token", XR_YANDEX_AUTH_SCHEME="iam")
    server = gateway(serve_with, provider)
    with server.client() as client:
        create(client, {"model": "yandex/gpt://b1gother/qwen3-235b-a22b-fp8/latest", "input": "x"})
    (request,) = upstream.requests(PATH)
    assert request.headers["authorization"] == "Bearer t1.iam-token"
    assert request.headers["openai-project"] == "b1gother"
    assert request.json["model"] == "gpt://b1gother/qwen3-235b-a22b-fp8/latest"


def test_a_model_without_a_folder_is_a_configuration_error_naming_the_setting(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    server = gateway(serve_with, configured(upstream))
    with server.client() as client:
        responses = client.post("/v1/responses", json={"model": MODEL, "input": "hi"})
        chat = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        )
    for reply in (responses, chat):
        assert reply.status_code == 500, reply.text
        error = reply.json()["error"]
        assert error["code"] == "provider_misconfigured"
        assert "XR_YANDEX_FOLDER_ID" in error["message"]
    assert upstream.hits(PATH) == 0


# --- cumulative snapshots -------------------------------------------------------------------


SNAPSHOTS = ["Hel", "Hello", "Hello, wor", "Hello, world!"]


def test_snapshots_stream_as_deltas_on_the_responses_api(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(PATH, Reply.sse(response_frames(SNAPSHOTS), done=False))
    server = gateway(serve_with, configured(upstream, XR_YANDEX_FOLDER_ID=FOLDER))
    with server.client() as client:
        streamed = stream(client, {"model": MODEL, "input": "greet"})
    deltas = [e["delta"] for e in streamed.of_type("response.output_text.delta")]
    assert deltas == ["Hel", "lo", ", wor", "ld!"]
    final = streamed.terminal["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello, world!"
    assert final["usage"]["total_tokens"] == 8
    assert upstream.requests(PATH)[0].json["stream"] is True


def test_snapshots_stream_as_deltas_on_chat_completions(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(PATH, Reply.sse(response_frames(SNAPSHOTS), done=False))
    server = gateway(serve_with, configured(upstream, XR_YANDEX_FOLDER_ID=FOLDER))
    with server.client() as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
    chunks, others = sse_events(reply.text)
    assert others == ["[DONE]"]
    content = [c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices")]
    assert [piece for piece in content if piece] == ["Hel", "lo", ", wor", "ld!"]


def test_real_deltas_pass_unchanged(serve_with: Any, upstream: FakeUpstream) -> None:
    pieces = ["Hello", ", ", "Hello", " again"]
    upstream.script(PATH, Reply.sse(response_frames(pieces, text="Hello, Hello again"), done=False))
    server = gateway(serve_with, configured(upstream, XR_YANDEX_FOLDER_ID=FOLDER))
    with server.client() as client:
        streamed = stream(client, {"model": MODEL, "input": "greet"})
    assert [e["delta"] for e in streamed.of_type("response.output_text.delta")] == pieces
    final = streamed.terminal["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello, Hello again"


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["a", "ab", "abc"], ["a", "b", "c"]),
        (["a", "b", "c"], ["a", "b", "c"]),
        (["ab", "abcd", "x"], ["ab", "cd", "x"]),  # switched to deltas: passed on as they come
        (["", "a", "", "ab"], ["a", "b"]),
    ],
)
def test_snapshot_rule(pieces: list[str], expected: list[str]) -> None:
    rule = SnapshotDeltas()
    assert [d for d in map(rule.feed, pieces) if d] == expected


# --- tool calls printed as text -------------------------------------------------------------


FENCED = 'Checking.\n```get_weather\n{"city": "Oslo"}\n```'
TAGGED = '[TOOL_CALL_START]get_weather\n{"city": "Rome"}[TOOL_CALL_END]'


def test_fenced_call_in_a_stream_is_a_function_call_on_the_responses_api(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    # Cumulative snapshots of the printed call, cut mid-marker: both quirks at once.
    snapshots = [FENCED[:12], FENCED[:20], FENCED[:34], FENCED]
    upstream.script(PATH, Reply.sse(response_frames(snapshots), done=False))
    server = gateway(serve_with, configured(upstream, XR_YANDEX_FOLDER_ID=FOLDER))
    with server.client() as client:
        streamed = stream(client, {"model": MODEL, "input": "weather?", "tools": [WEATHER]})
    final = streamed.terminal["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["output"][0]["content"][0]["text"] == "Checking.\n"
    call = final["output"][1]
    assert (call["name"], call["arguments"]) == ("get_weather", '{"city": "Oslo"}')
    assert call["call_id"].startswith("call_")
    assert "```" not in "".join(e["delta"] for e in streamed.of_type("response.output_text.delta"))


def test_tagged_call_is_a_tool_call_on_chat_completions_stream_and_not(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(
        PATH,
        [
            Reply.json(whole_response(TAGGED)),
            Reply.sse(response_frames([TAGGED[:9], TAGGED[:30], TAGGED]), done=False),
        ],
    )
    server = gateway(serve_with, configured(upstream, XR_YANDEX_FOLDER_ID=FOLDER))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
            "tools": [CHAT_WEATHER]}  # fmt: skip
    with server.client() as client:
        whole = client.post("/v1/chat/completions", json=body)
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
    assert whole.status_code == 200, whole.text
    (choice,) = whole.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert not choice["message"].get("content")
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["function"] == {"name": "get_weather", "arguments": '{"city": "Rome"}'}

    chunks, _ = sse_events(streamed.text)
    deltas = [c["choices"][0] for c in chunks if c.get("choices")]
    calls = [call for d in deltas for call in d["delta"].get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "get_weather"
    assert "".join(c["function"].get("arguments") or "" for c in calls) == '{"city": "Rome"}'
    assert deltas[-1]["finish_reason"] == "tool_calls"
    assert not any(d["delta"].get("content") for d in deltas)
    # The tools went to Yandex as declared.
    assert upstream.requests(PATH)[0].json["tools"][0]["name"] == "get_weather"


def test_code_blocks_and_undeclared_names_stay_text(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    text = 'Use:\n```python\nprint(1)\n```\n```get_time {"tz": "UTC"}```'
    upstream.script(PATH, Reply.json(whole_response(text)))
    server = gateway(serve_with, configured(upstream, XR_YANDEX_FOLDER_ID=FOLDER))
    with server.client() as client:
        answer = create(client, {"model": MODEL, "input": "x", "tools": [WEATHER]})
    assert [item["type"] for item in answer["output"]] == ["message"]
    assert answer["output"][0]["content"][0]["text"] == text


@pytest.mark.parametrize("size", [1, 2, 5, 17])
def test_printed_calls_found_whatever_the_cut(size: int) -> None:
    text = f"a ```get_weather {{}}``` b {TAGGED} c ```sh\nls\n``` [TOOL_CALL_START]x"
    finder = PrintedToolCalls(frozenset({"get_weather"}))
    pieces = [p for i in range(0, len(text), size) for p in finder.feed(text[i : i + size])]
    pieces += finder.finish()
    calls = [p for p in pieces if isinstance(p, PrintedCall)]
    assert calls == [
        PrintedCall("get_weather", "{}"),
        PrintedCall("get_weather", '{"city": "Rome"}'),
    ]
    assert "".join(p for p in pieces if isinstance(p, str)) == (
        "a  b  c ```sh\nls\n``` [TOOL_CALL_START]x"
    )


# --- discovery ------------------------------------------------------------------------------


async def test_discovery_lists_the_folders_models_by_their_short_names(
    upstream: FakeUpstream,
) -> None:
    upstream.models = [URI, "gpt://b1gother/llama/latest", "yandexgpt-lite"]
    provider = configured(upstream, XR_YANDEX_FOLDER_ID=FOLDER)
    assert isinstance(provider, YandexProvider)
    listed = [model.id for model in await provider.list_models()]
    await provider.aclose()
    assert listed == [
        "yandex/yandexgpt/latest",
        "yandex/gpt://b1gother/llama/latest",
        "yandex/yandexgpt-lite",
    ]
    (request,) = upstream.requests("/v1/models")
    assert request.headers["authorization"] == "Api-Key AQVN-test-key"
    assert request.headers["openai-project"] == FOLDER
