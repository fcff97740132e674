"""The DeepSeek kind: its default URL and catalog, the thinking switch, reasoning_content, and
tool calls printed as DSML recovered as function calls, through both APIs, stream and not,
against a fake DeepSeek on loopback that records what it received."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.helpers import sse_events
from tests.test_openai_compatible import make_call
from tests.test_openresponses_schema import validate_event, validate_resource
from tests.upstreams import FakeUpstream, Reply
from xrouter.adapters.providers.deepseek.catalog import CATALOG, find_model
from xrouter.adapters.providers.deepseek.dsml import DsmlExtractor, RecoveredCall
from xrouter.adapters.providers.deepseek.provider import DeepSeekProvider, deepseek_settings
from xrouter.adapters.providers.deepseek.spec import DEEPSEEK_BASE_URL, DeepSeekSpec
from xrouter.entrypoints.provider_config import load_gateway_config, provider_spec
from xrouter.entrypoints.provider_factory import build_provider

JSON = dict[str, Any]
CHAT_PATH = "/chat/completions"
BAR = "\uff5c"  # the fullwidth bar DeepSeek's markup uses


def dsml(*invokes: str) -> str:
    return (
        f"<{BAR}DSML{BAR}function_calls>\n" + "".join(invokes) + f"</{BAR}DSML{BAR}function_calls>"
    )


def invoke(name: str, **params: tuple[str, bool]) -> str:
    body = "".join(
        f'<{BAR}DSML{BAR}parameter name="{key}" string="{"true" if raw else "false"}">'
        f"{value}</{BAR}DSML{BAR}parameter>\n"
        for key, (value, raw) in params.items()
    )
    return f'<{BAR}DSML{BAR}invoke name="{name}">\n{body}</{BAR}DSML{BAR}invoke>\n'


WEATHER = dsml(invoke("get_weather", city=("Paris", True), days=("3", False)))
WEATHER_ARGS = {"city": "Paris", "days": 3}
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]


def deepseek_over(upstream: FakeUpstream) -> DeepSeekProvider:
    settings = deepseek_settings(upstream.origin, max_retries=0)
    return DeepSeekProvider(DeepSeekSpec(name="deepseek", transport=settings, api_key="sk-ds"))


def gateway(serve_with: Any, upstream: FakeUpstream) -> LiveServer:
    container = make_container()
    container.model_providers.override(providers.Object([deepseek_over(upstream)]))
    return serve_with(container=container)


def completion(content: str | None, *, reasoning: str | None = None, finish: str = "stop") -> JSON:
    message: JSON = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "id": "ds-1", "object": "chat.completion", "model": "deepseek-v4-pro",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }  # fmt: skip


def chunk(delta: JSON, finish: str | None = None) -> JSON:
    return {"id": "ds-1", "object": "chat.completion.chunk", "model": "deepseek-v4-pro",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip


def text_frames(text: str, size: int) -> list[JSON]:
    """`text` as content deltas of `size` characters: markup split anywhere."""
    return [chunk({"content": text[i : i + size]}) for i in range(0, len(text), size)]


# --- configuration and catalog ------------------------------------------------------------------


def test_the_kind_is_configured_from_its_key_alone_with_the_default_url() -> None:
    config = load_gateway_config({"XR_DEEPSEEK_API_KEY": "sk-ds"}, None, byok=False)
    (deepseek,) = config.providers
    assert (deepseek.kind, deepseek.base_url) == ("deepseek", DEEPSEEK_BASE_URL)
    assert DEEPSEEK_BASE_URL == "https://api.deepseek.com"
    provider = build_provider(provider_spec(deepseek, byok=False))
    assert isinstance(provider, DeepSeekProvider)
    listed = [m.id for m in provider.static_models()]
    assert listed == [f"deepseek/{m.id}" for m in CATALOG]  # listed with discovery off too


def test_catalog_limits_and_configured_models_listed_once() -> None:
    pro = find_model("deepseek-v4-pro")
    assert pro is not None and (pro.context_window, pro.max_output_tokens) == (1_048_576, 393_216)
    assert find_model("deepseek-coder") is None
    spec = DeepSeekSpec(
        name="ds", transport=deepseek_settings(), static_models=("deepseek-v4-pro", "mine")
    )
    listed = [m.id for m in DeepSeekProvider(spec).static_models()]
    assert listed.count("ds/deepseek-v4-pro") == 1 and "ds/mine" in listed
    contexts = {m.id: m.context_length for m in DeepSeekProvider(spec).static_models()}
    assert contexts["ds/deepseek-chat"] == 131_072  # from the catalog, for GET /v1/models
    assert contexts["ds/mine"] is None  # configured by the operator: not known


def test_the_responses_protocol_is_refused() -> None:
    spec = DeepSeekSpec(name="ds", transport=deepseek_settings(), protocol="responses")
    with pytest.raises(ValueError, match="Chat Completions only"):
        DeepSeekProvider(spec)


# --- the thinking switch ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "effort", "sent"),
    [
        ("deepseek-v4-pro", "high", {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}),
        ("deepseek-chat", "low", {"thinking": {"type": "enabled"}, "reasoning_effort": "low"}),
        ("deepseek-v4-flash", "none", {"thinking": {"type": "disabled"}}),
        ("deepseek-coder", "high", {"reasoning_effort": "high"}),  # unknown: no switch
        ("deepseek-v4-pro", None, {}),  # no reasoning asked: the upstream's default
    ],
)
async def test_thinking_switch_as_received(
    upstream: FakeUpstream, model: str, effort: str | None, sent: JSON
) -> None:
    upstream.script(CHAT_PATH, Reply.json(completion("ok")))
    provider = deepseek_over(upstream)
    body: JSON = {"input": "hi", "max_output_tokens": 50}
    if effort is not None:
        body["reasoning"] = {"effort": effort}
    events = [e async for b in provider.stream(make_call(body, upstream_model=model)) for e in b]
    await provider.aclose()
    assert events
    (request,) = upstream.requests(CHAT_PATH)
    assert request.json == {
        "model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, **sent
    }  # fmt: skip
    assert request.headers["authorization"] == "Bearer sk-ds"


# --- DSML recovery, the extractor alone -----------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_a_block_split_anywhere_is_one_call_and_no_markup_leaks(size: int) -> None:
    text = "Let me check.\n\n" + WEATHER + "\nDone < 5"
    extractor = DsmlExtractor()
    pieces = []
    for i in range(0, len(text), size):
        pieces.extend(extractor.feed(text[i : i + size]))
    pieces.extend(extractor.finish())
    texts = "".join(p for p in pieces if isinstance(p, str))
    calls = [p for p in pieces if isinstance(p, RecoveredCall)]
    assert texts == "Let me check.Done < 5"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", WEATHER_ARGS)]


def test_json_body_ascii_bars_no_wrapper_and_several_calls() -> None:
    text = '<|DSML|invoke name="a">{"x": [1, 2]}</|DSML|invoke>' + invoke(
        "b", note=("not json {", False)
    )
    extractor = DsmlExtractor()
    pieces = extractor.feed(text) + extractor.finish()
    assert [(p.name, json.loads(p.arguments)) for p in pieces if isinstance(p, RecoveredCall)] == [
        ("a", {"x": [1, 2]}),
        ("b", {"note": "not json {"}),
    ]
    assert not [p for p in pieces if isinstance(p, str)]


def test_text_that_only_looks_like_markup_is_text_and_a_cut_block_stays_text() -> None:
    extractor = DsmlExtractor()
    assert "".join(map(str, extractor.feed("a <b> and <"))) == "a <b> and"
    assert "".join(map(str, extractor.feed(f"{BAR}x"))) == f" <{BAR}x"
    cut = DsmlExtractor()
    pieces = cut.feed(f'<{BAR}DSML{BAR}invoke name="a">') + cut.finish()
    assert pieces == [f'<{BAR}DSML{BAR}invoke name="a">'] and cut.calls == 0


# --- through the gateway ----------------------------------------------------------------------


def test_dsml_in_a_whole_answer_is_a_function_call_on_both_apis(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    answer = completion("Checking.\n" + WEATHER, reasoning="The user wants weather.")
    upstream.script(CHAT_PATH, [Reply.json(answer), Reply.json(answer)])
    server = gateway(serve_with, upstream)
    with server.client() as client:
        responses = client.post(
            "/v1/responses",
            json={"model": "deepseek/deepseek-v4-pro", "input": "weather?", "tools": TOOLS},
        )
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "deepseek/deepseek-v4-pro",
                  "messages": [{"role": "user", "content": "weather?"}]},
        )  # fmt: skip
    assert responses.status_code == 200, responses.text
    resource = responses.json()
    validate_resource(resource)
    kinds = [item["type"] for item in resource["output"]]
    assert kinds == ["reasoning", "message", "function_call"]
    assert "The user wants weather." in json.dumps(resource["output"][0])
    assert resource["output"][1]["content"][0]["text"] == "Checking."
    call = resource["output"][2]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == WEATHER_ARGS
    assert call["call_id"].startswith("call_")
    assert chat.status_code == 200, chat.text
    choice = chat.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == WEATHER_ARGS
    sent = upstream.requests(CHAT_PATH)[0].json
    assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_streamed_reasoning_and_dsml_never_leak_as_text(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    frames = [
        chunk({"role": "assistant", "reasoning_content": "Need "}),
        chunk({"reasoning_content": "weather."}),
        *text_frames("Checking.\n" + WEATHER, 5),
        chunk({}, "stop"),
    ]
    upstream.script(CHAT_PATH, [Reply.sse(frames), Reply.sse(frames)])
    server = gateway(serve_with, upstream)
    with server.client() as client:
        responses = client.post(
            "/v1/responses",
            json={"model": "deepseek/deepseek-v4-pro", "input": "weather?", "stream": True,
                  "reasoning": {"effort": "high"}},
        )  # fmt: skip
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "deepseek/deepseek-v4-pro", "stream": True,
                  "messages": [{"role": "user", "content": "weather?"}]},
        )  # fmt: skip
    events, _ = sse_events(responses.text)
    for event in events:
        validate_event(event)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Checking."
    assert "DSML" not in responses.text
    reasoning = "".join(
        e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta"
    ) or "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert reasoning == "Need weather."
    final = events[-1]
    assert final["type"] == "response.completed"
    call = final["response"]["output"][-1]
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == WEATHER_ARGS
    assert upstream.requests(CHAT_PATH)[0].json["thinking"] == {"type": "enabled"}

    chunks, _ = sse_events(chat.text)
    assert "DSML" not in chat.text
    content = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert content == "Checking."
    calls = [
        tc
        for c in chunks
        if c.get("choices")
        for tc in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(tc["function"].get("arguments") or "" for tc in calls)
    assert json.loads(arguments) == WEATHER_ARGS
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]
    assert finishes[-1] == "tool_calls"
