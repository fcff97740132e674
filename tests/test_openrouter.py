"""The OpenRouter flavour: its payload extensions, reasoning_details round-trips, cost, errors
inside a 200, and the whole gateway against the fake upstream at OpenRouter's base path."""

from __future__ import annotations

import gc
import json
import time
from typing import Any

import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.helpers import sse_events
from tests.test_openai_compatible import make_call
from tests.upstreams import FakeUpstream, Reply
from xrouter.adapters.providers.openai_compatible.chat_parser import (
    ChatStreamParser,
    parse_completion,
)
from xrouter.adapters.providers.openai_compatible.chat_protocol import build_chat_payload
from xrouter.adapters.providers.openrouter import (
    OPENROUTER_BASE_URL,
    OPENROUTER_DIALECT,
    OpenRouterProvider,
    attribution_headers,
    openrouter_settings,
)
from xrouter.adapters.providers.provider_spec import OpenRouterSpec
from xrouter.adapters.providers.upstream_errors import map_stream_error
from xrouter.application.ports import GenerationRequest
from xrouter.domain.errors import GatewayError, PaymentRequired, ProviderError
from xrouter.domain.provider_events import (
    Finish,
    ReasoningData,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UpstreamInfo,
    UsageReport,
)

JSON = dict[str, Any]
CHAT_PATH = "/api/v1/chat/completions"
DETAILS = [
    {"type": "reasoning.text", "text": "Need the weather.", "signature": "sig", "index": 0,
     "format": "anthropic-claude-v1"},
    {"type": "reasoning.encrypted", "data": "b64==", "index": 1, "format": "anthropic-claude-v1"},
]  # fmt: skip


def mapper(error: Any) -> GatewayError:
    return map_stream_error("openrouter", error)


def openrouter_over(upstream: FakeUpstream, **kwargs: Any) -> OpenRouterProvider:
    settings = openrouter_settings(f"{upstream.origin}/api/v1", max_retries=0)
    kwargs.setdefault("api_key", "sk-or-v1-test")
    return OpenRouterProvider(OpenRouterSpec(name="openrouter", transport=settings, **kwargs))


def or_call(body: JSON, passthrough: JSON | None = None) -> GenerationRequest:
    return make_call(body, passthrough=passthrough, upstream_model="anthropic/claude-sonnet-4")


# --- payload --------------------------------------------------------------------------------------


def test_defaults_and_attribution_headers() -> None:
    assert openrouter_settings().base_url == OPENROUTER_BASE_URL == "https://openrouter.ai/api/v1"
    assert attribution_headers(referer="https://app.example", title="My App") == {
        "HTTP-Referer": "https://app.example",
        "X-OpenRouter-Title": "My App",
        "X-Title": "My App",
    }
    assert attribution_headers() == {}


def test_payload_uses_openrouter_names_and_passes_routing_through() -> None:
    spec = OpenRouterSpec(name="openrouter", transport=openrouter_settings(), api_key="k")
    provider = OpenRouterProvider(spec)  # its transport is never used here
    call = or_call(
        {"input": "hi", "max_output_tokens": 100, "reasoning": {"effort": "high"}},
        passthrough={
            "provider": {"order": ["anthropic"], "allow_fallbacks": False},
            "transforms": ["middle-out"],
            "plugins": [{"id": "context-compression", "enabled": False}],
        },
    )
    payload = provider.adjust_payload(
        build_chat_payload(call, stream=False, dialect=OPENROUTER_DIALECT), call
    )
    assert payload == {
        "model": "anthropic/claude-sonnet-4",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "reasoning": {"effort": "high"},
        "provider": {"order": ["anthropic"], "allow_fallbacks": False},
        "transforms": ["middle-out"],
        "plugins": [{"id": "context-compression", "enabled": False}],
    }


def test_client_reasoning_object_wins_over_the_effort() -> None:
    call = or_call(
        {"input": "hi", "reasoning": {"effort": "low"}},
        passthrough={"reasoning": {"max_tokens": 2000, "exclude": True}},
    )
    payload = build_chat_payload(call, stream=False, dialect=OPENROUTER_DIALECT)
    assert payload["reasoning"] == {"max_tokens": 2000, "exclude": True}


def test_reasoning_details_go_back_unchanged_on_the_following_assistant_message() -> None:
    call = or_call(
        {
            "input": [
                {"role": "user", "content": "weather?"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "Need the weather."}],
                    "encrypted_content": json.dumps(DETAILS),
                },
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                # a reasoning item from another kind of upstream: not ours, not sent
                {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAA"},
                {"role": "assistant", "content": "It is sunny."},
            ]
        }
    )
    messages = build_chat_payload(call, stream=False, dialect=OPENROUTER_DIALECT)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "reasoning_details": DETAILS,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
        ],
    }
    assert messages[3] == {"role": "assistant", "content": "It is sunny."}


# --- answers --------------------------------------------------------------------------------------


def test_completion_reasoning_details_and_cost() -> None:
    body = {
        "id": "gen-1",
        "provider": "Anthropic",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "native_finish_reason": "tool_use",
                "message": {
                    "role": "assistant",
                    "content": "",
                    "reasoning": "Need the weather.",
                    "reasoning_details": DETAILS,
                    "tool_calls": [
                        {"id": "t1", "type": "function",
                         "function": {"name": "w", "arguments": "{}"}}
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.00042,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }  # fmt: skip
    events = parse_completion(json.dumps(body).encode(), provider="openrouter", map_error=mapper)
    assert events[:4] == [
        UpstreamInfo(response_id="gen-1"),
        ReasoningDelta("Need the weather."),
        ReasoningData(json.dumps(DETAILS, separators=(",", ":"))),
        ToolCallDelta(index=0, call_id="t1", name="w", arguments="{}"),
    ]
    usage = events[4]
    assert isinstance(usage, UsageReport)
    assert usage.usage.input_tokens_details.cache_write_tokens == 2
    assert usage.usage.output_tokens_details.reasoning_tokens == 4
    assert usage.cost == 0.00042  # for the usage sink, not the wire
    assert events[5] == Finish("tool_calls")


def test_streamed_reasoning_details_are_merged_and_handed_over_before_the_answer() -> None:
    def frame(delta: JSON, finish: str | None = None) -> str:
        return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    parser = ChatStreamParser(provider="openrouter", map_error=mapper)
    events: list[Any] = []
    for data in [
        frame({"reasoning": "Need ", "reasoning_details": [
            {"type": "reasoning.text", "text": "Need ", "index": 0, "format": "f"}]}),
        frame({"reasoning": "weather.", "reasoning_details": [
            {"type": "reasoning.text", "text": "weather.", "index": 0, "signature": None}]}),
        frame({"reasoning_details": [
            {"type": "reasoning.text", "text": "", "index": 0, "signature": "sig"}]}),
        frame({"content": "Sunny."}),
        frame({}, "stop"),
    ]:  # fmt: skip
        events += parser.feed(data)
    events += parser.finish()
    merged = [
        {"type": "reasoning.text", "text": "Need weather.", "index": 0, "format": "f",
         "signature": "sig"}
    ]  # fmt: skip
    assert events == [
        ReasoningDelta("Need "),
        ReasoningDelta("weather."),
        ReasoningData(json.dumps(merged, separators=(",", ":"))),
        TextDelta("Sunny."),
        Finish("stop"),
    ]


TOKENS = "a few tokens at once "


def _merge_seconds(fragments: int) -> float:
    """Seconds to read a stream of `fragments` reasoning_details fragments of one block, then
    the answer that hands them over (the best of three runs)."""
    fragment = json.dumps({"choices": [{"index": 0, "delta": {"reasoning_details": [
        {"type": "reasoning.text", "text": TOKENS, "index": 0}]}}]})  # fmt: skip
    answer = json.dumps({"choices": [{"index": 0, "delta": {"content": "Sunny."}}]})
    best = float("inf")
    for _ in range(3):
        parser = ChatStreamParser(provider="openrouter", map_error=mapper)
        # Without the collector: its full passes over 100k fresh dicts are superlinear too,
        # and this measures the merge.
        gc.disable()
        try:
            started = time.perf_counter()
            for _ in range(fragments):
                parser.feed(fragment)
            (handed_over, _text) = parser.feed(answer)
            best = min(best, time.perf_counter() - started)
        finally:
            gc.enable()
    assert isinstance(handed_over, ReasoningData)
    assert json.loads(handed_over.data)[0]["text"] == TOKENS * fragments
    return best


def test_reasoning_details_fragments_merge_in_linear_time() -> None:
    """One string grown per fragment made 100k fragments take 10 s (64x the time of 20k);
    linear is 5x; 15x allows for a busy machine and still fails the quadratic version."""
    small, large = _merge_seconds(20_000), _merge_seconds(100_000)
    assert large / small < 15, f"20k fragments: {small:.3f} s, 100k fragments: {large:.3f} s"


def test_error_finish_reason_and_per_choice_error_are_failures() -> None:
    streamed = ChatStreamParser(provider="openrouter", map_error=mapper)
    streamed.feed(json.dumps({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}))
    with pytest.raises(ProviderError):
        streamed.feed(
            json.dumps({"choices": [{"index": 0, "delta": {"content": ""},
                                     "finish_reason": "error"}]})
        )  # fmt: skip
    whole = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "error",
                "message": {"role": "assistant", "content": ""},
                "error": {"code": 402, "message": "Insufficient credits"},
            }
        ]
    }
    with pytest.raises(PaymentRequired, match="Insufficient credits"):
        parse_completion(json.dumps(whole).encode(), provider="openrouter", map_error=mapper)


# --- over real HTTP -------------------------------------------------------------------------------


async def test_provider_sends_headers_and_passthrough_and_reports_cost(
    upstream: FakeUpstream,
) -> None:
    upstream.script(
        CHAT_PATH,
        Reply.json(
            {
                "id": "gen-1",
                "model": "anthropic/claude-4-sonnet-20250522",  # what answered the alias
                "choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                          "cost": 0.25},
            }
        ),
    )  # fmt: skip
    provider = openrouter_over(upstream, referer="https://app.example", title="My App")
    call = or_call({"input": "hi"}, passthrough={"provider": {"sort": "price"}})
    events = [event async for batch in provider.stream(call) for event in batch]
    await provider.aclose()
    assert events[:2] == [
        UpstreamInfo(model="anthropic/claude-4-sonnet-20250522", response_id="gen-1"),
        TextDelta("ok"),
    ]
    assert events[-1] == Finish("stop")
    assert [e.cost for e in events if isinstance(e, UsageReport)] == [0.25]
    (request,) = upstream.requests(CHAT_PATH)
    assert request.json == {
        "model": "anthropic/claude-sonnet-4",
        "messages": [{"role": "user", "content": "hi"}],
        "provider": {"sort": "price"},
    }
    assert request.headers["authorization"] == "Bearer sk-or-v1-test"
    assert request.headers["http-referer"] == "https://app.example"
    assert request.headers["x-openrouter-title"] == "My App"
    assert request.headers["x-title"] == "My App"


def gateway(serve_with: Any, upstream: FakeUpstream, **kwargs: Any) -> LiveServer:
    container = make_container()
    container.model_providers.override(providers.Object([openrouter_over(upstream, **kwargs)]))
    return serve_with(container=container)


def test_processing_comments_reasoning_and_usage_through_the_gateway(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    def frame(delta: JSON, finish: str | None = None) -> JSON:
        return {
            "id": "gen-1", "object": "chat.completion.chunk", "provider": "Anthropic",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                         "native_finish_reason": finish}],
        }  # fmt: skip

    upstream.script(
        CHAT_PATH,
        Reply.sse(
            [
                b": OPENROUTER PROCESSING\n\n",
                frame({"role": "assistant", "reasoning": "Thinking."}),
                b": OPENROUTER PROCESSING\n\n",
                frame({"content": "Hello"}),
                frame({"content": " world"}, "stop"),
                {"id": "gen-1", "choices": [], "usage": {
                    "prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10, "cost": 0.1,
                    "completion_tokens_details": {"reasoning_tokens": 1}}},
            ]
        ),
    )  # fmt: skip
    server = gateway(serve_with, upstream)
    with server.client() as client:
        reply = client.post(
            "/v1/responses",
            json={"model": "openrouter/anthropic/claude-sonnet-4", "input": "hi", "stream": True,
                  "max_output_tokens": 64, "reasoning": {"effort": "low"}},
        )  # fmt: skip
    events, _ = sse_events(reply.text)
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["summary"][0]["text"] == "Thinking."
    assert final["output"][1]["content"][0]["text"] == "Hello world"
    assert final["usage"]["total_tokens"] == 10
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 1
    (request,) = upstream.requests(CHAT_PATH)
    assert request.json == {
        "model": "anthropic/claude-sonnet-4",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 64,
        "reasoning": {"effort": "low"},
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_mid_stream_error_frame_is_a_failed_response(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    upstream.script(
        CHAT_PATH,
        Reply.sse(
            [
                {"id": "gen-1", "choices": [{"index": 0, "delta": {"content": "Par"}}]},
                {"id": "gen-1", "object": "chat.completion.chunk", "provider": "Anthropic",
                 "error": {"code": "server_error", "message": "Provider disconnected"},
                 "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]},
            ],
            done=False,
        ),
    )  # fmt: skip
    server = gateway(serve_with, upstream)
    with server.client() as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "openrouter/anthropic/claude-sonnet-4", "stream": True,
                  "messages": [{"role": "user", "content": "hi"}]},
        )  # fmt: skip
    chunks, _ = sse_events(reply.text)
    assert "Provider disconnected" in chunks[-1]["error"]["message"]
    assert not any(c.get("choices") and c["choices"][0].get("finish_reason") for c in chunks)


def test_error_inside_a_200_and_402_are_failures(serve_with: Any, upstream: FakeUpstream) -> None:
    upstream.script(
        CHAT_PATH,
        [
            Reply.json(
                {"id": "gen-1", "choices": [{"index": 0, "finish_reason": "error",
                                             "message": {"role": "assistant", "content": ""},
                                             "error": {"code": 502, "message": "Model down"}}]}
            ),
            Reply.json({"error": {"code": 402, "message": "Insufficient credits"}}, status=402),
        ],
    )  # fmt: skip
    server = gateway(serve_with, upstream)
    body = {"model": "openrouter/openai/gpt-4o", "input": "hi"}
    with server.client() as client:
        inside = client.post("/v1/responses", json=body)
        credits = client.post("/v1/responses", json=body)
    assert inside.status_code == 502
    assert "Model down" in inside.json()["error"]["message"]
    assert credits.status_code == 402
    assert credits.json()["error"]["code"] == "insufficient_quota"


def test_reasoning_details_round_trip_from_a_responses_client(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    server = gateway(serve_with, upstream)
    with server.client() as client:
        reply = client.post(
            "/v1/responses",
            json={
                "model": "openrouter/anthropic/claude-sonnet-4",
                "input": [
                    {"role": "user", "content": "weather?"},
                    {"type": "reasoning", "id": "rs_1", "summary": [],
                     "encrypted_content": json.dumps(DETAILS)},
                    {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                    {"role": "user", "content": "thanks"},
                ],
            },
        )  # fmt: skip
    assert reply.status_code == 200, reply.text
    (request,) = upstream.requests(CHAT_PATH)
    assert request.json["messages"][1]["reasoning_details"] == DETAILS


# --- malformed answers are failures (issue 9, item 2) ---------------------------------------------

CLOUDFLARE_PAGE = (
    b"<!DOCTYPE html><html><title>openrouter.ai | 524: A timeout occurred</title></html>"
)


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (Reply(headers={"Content-Type": "text/html; charset=UTF-8"}, body=CLOUDFLARE_PAGE),
         f"a {len(CLOUDFLARE_PAGE)}-byte text/html body"),
        (Reply(headers={"Content-Type": "application/json"}), "an empty body"),
        (Reply.json({"id": "gen-1", "provider": "Anthropic"}), "no `choices`"),
    ],
    ids=["html", "empty", "no-choices"],
)  # fmt: skip
def test_a_200_that_is_not_a_completion_is_a_502(
    serve_with: Any, upstream: FakeUpstream, reply: Reply, says: str
) -> None:
    upstream.script(CHAT_PATH, reply)
    server = gateway(serve_with, upstream)
    with server.client() as client:
        answer = client.post(
            "/v1/responses", json={"model": "openrouter/openai/gpt-4o", "input": "hi"}
        )
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["code"] == "provider_error"
    assert "'openrouter'" in error["message"] and says in error["message"]
    assert "524" not in error["message"]  # what came back, never what it says


def test_a_stream_without_a_finish_reason_fails_before_or_after_output(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    processing = b": OPENROUTER PROCESSING\n\n"
    text = {"id": "gen-1", "choices": [{"index": 0, "delta": {"content": "Par"}}]}
    upstream.script(
        CHAT_PATH,
        [Reply.sse([processing, processing]), Reply.sse([processing, text]),
         Reply.sse([processing, text])],
    )  # fmt: skip
    server = gateway(serve_with, upstream)
    model = "openrouter/anthropic/claude-sonnet-4"
    with server.client() as client:
        silent = client.post("/v1/responses", json={"model": model, "input": "hi", "stream": True})
        cut = client.post("/v1/responses", json={"model": model, "input": "hi", "stream": True})
        chat = client.post(
            "/v1/chat/completions",
            json={"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert silent.status_code == 502, silent.text  # nothing sent yet: a JSON error
        assert "without a finish_reason" in silent.json()["error"]["message"]
        events, _ = sse_events(cut.text)
        assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
        failed = events[-1]["response"]
        assert "without a finish_reason" in failed["error"]["message"]
        assert client.get(f"/v1/responses/{failed['id']}").json()["status"] == "failed"
    chunks, _ = sse_events(chat.text)
    assert "without a finish_reason" in chunks[-1]["error"]["message"]
    assert not any(c.get("choices") and c["choices"][0].get("finish_reason") for c in chunks)
