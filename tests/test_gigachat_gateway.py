"""The whole gateway over real HTTP with the GigaChat provider against the HTTPS fake: function
calling round trips through /v1/responses and /v1/chat/completions (checking the exact bodies
GigaChat received), streaming, finish reasons, error mapping, model discovery."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.gigachat_fake import (
    MODEL_VERSION,
    Certificates,
    GigaChatFake,
    api_error,
    certificates_fixture,  # noqa: F401  (the fixture)
    chunk,
    completion,
    gigachat_fixture,  # noqa: F401  (the fixture)
    provider_for,
    usage,
)
from tests.helpers import sse_events
from tests.upstreams import Reply
from xrouter.adapters.providers.gigachat.call_ids import state_id_of

JSON = dict[str, Any]
MODEL = "gigachat/GigaChat-2-Max"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STATE = "9c1f0e52-3b7a-4d65-8f0e-2a4c6b8d1e37"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CHAT_WEATHER = {
    "type": "function",
    "function": {k: v for k, v in WEATHER.items() if k != "type"},
}
GIGACHAT_FUNCTIONS = [{k: v for k, v in WEATHER.items() if k != "type"}]
CALL_REPLY = completion(
    "",
    finish="function_call",
    function_call={"name": "get_weather", "arguments": {"city": "Paris"}},
    state_id=STATE,
    usage_=usage(prompt=30, completion=7, precached=16),
)


def gateway(
    serve_with: Any, fake: GigaChatFake, certificates: Certificates, **overrides: Any
) -> LiveServer:
    discovery = overrides.pop("discovery", False)
    provider = provider_for(fake, certificates, **overrides)
    container = make_container(discovery=discovery)
    container.model_providers.override(providers.Object([provider]))
    return serve_with(container=container)


# --- function calling round trips ----------------------------------------------------------------


def test_responses_function_calling_round_trip_stateless_and_by_previous_response_id(
    serve_with: Any, gigachat: GigaChatFake, certificates: Certificates
) -> None:
    gigachat.api.script(
        gigachat.CHAT,
        [Reply.json(CALL_REPLY), Reply.json(completion("18C in Paris.")),
         Reply.json(completion("Still 18C."))],
    )  # fmt: skip
    server = gateway(serve_with, gigachat, certificates)
    question = {"role": "user", "content": "Weather in Paris?"}
    with server.client() as client:
        first = client.post(
            "/v1/responses",
            json={"model": MODEL, "input": [question], "tools": [WEATHER],
                  "tool_choice": "required"},
        )  # fmt: skip
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["id"].startswith("resp_") and body["status"] == "completed"
        assert body["model"] == MODEL
        (call,) = body["output"]
        assert call["type"] == "function_call" and call["name"] == "get_weather"
        assert call["arguments"] == '{"city":"Paris"}'
        assert state_id_of(call["call_id"]) == STATE
        assert body["usage"]["input_tokens"] == 30
        assert body["usage"]["input_tokens_details"]["cached_tokens"] == 16
        result = {"type": "function_call_output", "call_id": call["call_id"], "output": "18C"}
        stateless = client.post(
            "/v1/responses",
            json={"model": MODEL, "input": [question, call, result], "tools": [WEATHER]},
        )
        chained = client.post(
            "/v1/responses",
            json={"model": MODEL, "previous_response_id": body["id"], "input": [result],
                  "tools": [WEATHER]},
        )  # fmt: skip
    assert stateless.status_code == 200, stateless.text
    assert stateless.json()["output"][0]["content"][0]["text"] == "18C in Paris."
    assert chained.status_code == 200, chained.text
    first_body, second_body, third_body = gigachat.chat_bodies()
    assert first_body == {
        "model": "GigaChat-2-Max",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "functions": GIGACHAT_FUNCTIONS,
        "function_call": {"name": "get_weather"},  # `required` with one function
    }
    expected_turn = {
        "model": "GigaChat-2-Max",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "",
             "function_call": {"name": "get_weather", "arguments": {"city": "Paris"}},
             "functions_state_id": STATE},
            {"role": "function", "name": "get_weather", "content": '{"result":"18C"}'},
        ],
        "functions": GIGACHAT_FUNCTIONS,
        "function_call": "auto",
    }  # fmt: skip
    assert second_body == expected_turn
    assert third_body == expected_turn


def test_chat_completions_streamed_call_then_result(
    serve_with: Any, gigachat: GigaChatFake, certificates: Certificates
) -> None:
    gigachat.api.script(
        gigachat.CHAT,
        [
            Reply.sse([
                chunk({"role": "assistant", "content": "",
                       "function_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}),
                chunk({"content": "", "functions_state_id": STATE}, "function_call", usage()),
            ]),
            Reply.json(completion("4C in Oslo.")),
        ],
    )  # fmt: skip
    server = gateway(serve_with, gigachat, certificates)
    messages: list[JSON] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
    ]
    with server.client() as client:
        streamed = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": messages, "tools": [CHAT_WEATHER],
                  "stream": True},
        )  # fmt: skip
        assert streamed.status_code == 200
        chunks, others = sse_events(streamed.text)
        assert others == ["[DONE]"]
        calls = [
            call
            for c in chunks
            if c.get("choices")
            for call in c["choices"][0]["delta"].get("tool_calls") or []
        ]
        call_id = calls[0]["id"]
        assert calls[0]["function"]["name"] == "get_weather"
        arguments = "".join(c["function"].get("arguments") or "" for c in calls)
        assert json.loads(arguments) == {"city": "Oslo"}
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]
        assert finishes[-1] == "tool_calls"
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": "get_weather", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": call_id, "content": '{"temp": 4}'},
        ]  # fmt: skip
        second = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": messages, "tools": [CHAT_WEATHER]},
        )
    assert second.status_code == 200, second.text
    assert second.json()["choices"][0]["message"]["content"] == "4C in Oslo."
    first_body, second_body = gigachat.chat_bodies()
    assert first_body["stream"] is True
    assert second_body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "",
         "function_call": {"name": "get_weather", "arguments": {"city": "Oslo"}},
         "functions_state_id": STATE},
        {"role": "function", "name": "get_weather", "content": '{"temp": 4}'},
    ]  # fmt: skip


# --- streaming and finish reasons ----------------------------------------------------------------


def test_responses_stream_of_text(
    serve_with: Any, gigachat: GigaChatFake, certificates: Certificates
) -> None:
    server = gateway(serve_with, gigachat, certificates)
    with server.client() as client:
        reply = client.post(
            "/v1/responses",
            json={"model": MODEL, "input": "one two three", "stream": True},
            headers={"traceparent": TRACEPARENT},
        )
    assert reply.status_code == 200
    events, _ = sse_events(reply.text)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["one ", "two ", "three"]
    final = events[-1]
    assert final["type"] == "response.completed"
    assert final["response"]["usage"]["output_tokens"] == 3
    (request,) = gigachat.api.requests(gigachat.CHAT)
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["cache-control"] == "no-store"
    assert request.headers["traceparent"] == TRACEPARENT
    assert request.headers["authorization"] == "Bearer tok-1"
    assert request.json["stream"] is True


@pytest.mark.parametrize(
    ("finish", "status", "reason"),
    [("length", "incomplete", "max_output_tokens"),
     ("blacklist", "incomplete", "content_filter"),
     ("stop", "completed", None)],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
def test_finish_reasons_through_the_gateway(
    serve_with: Any,
    gigachat: GigaChatFake,
    certificates: Certificates,
    finish: str,
    status: str,
    reason: str | None,
    stream: bool,
) -> None:
    gigachat.api.script(
        gigachat.CHAT,
        Reply.sse([chunk({"content": "Some"}), chunk({"content": ""}, finish, usage())])
        if stream
        else Reply.json(completion("Some", finish=finish)),
    )
    server = gateway(serve_with, gigachat, certificates)
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": MODEL, "input": "x", "stream": stream})
    assert reply.status_code == 200
    body = sse_events(reply.text)[0][-1]["response"] if stream else reply.json()
    assert body["status"] == status
    assert (body["incomplete_details"] or {}).get("reason") == reason


def test_finish_reason_error_and_a_mid_stream_error_fail_the_response(
    serve_with: Any, gigachat: GigaChatFake, certificates: Certificates
) -> None:
    gigachat.api.script(
        gigachat.CHAT,
        [
            Reply.json(completion("", finish="error")),
            Reply.sse([chunk({"content": "partial"}),
                       {"status": 500, "message": "Internal Server Error"}], done=False),
            Reply.sse([chunk({"content": "cut short"})]),  # [DONE] without a finish reason
        ],
    )  # fmt: skip
    server = gateway(serve_with, gigachat, certificates)
    with server.client() as client:
        whole = client.post("/v1/responses", json={"model": MODEL, "input": "x"})
        broken = client.post("/v1/responses", json={"model": MODEL, "input": "x", "stream": True})
        cut = client.post("/v1/responses", json={"model": MODEL, "input": "x", "stream": True})
    assert whole.status_code == 502
    assert "invalid arguments" in whole.json()["error"]["message"]
    for reply, expected in ((broken, "Internal Server Error"), (cut, "without a finish reason")):
        events, _ = sse_events(reply.text)
        assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
        assert expected in events[-1]["response"]["error"]["message"]


HTML_PAGE = b"<html><title>Service unavailable</title><body>token tok-in-page</body></html>"


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (Reply(headers={"Content-Type": "text/html"}, body=HTML_PAGE),
         f"a {len(HTML_PAGE)}-byte text/html body"),
        (Reply(headers={"Content-Type": "application/json"}), "an empty body"),
        (Reply.json({"object": "chat.completion", "model": MODEL_VERSION}), "no `choices`"),
        (Reply.json({"choices": [{"index": 0, "message": {"role": "assistant",
                                                          "content": "hi"}}]}),
         "no `finish_reason`"),
    ],
    ids=["html", "empty", "no-choices", "no-finish-reason"],
)  # fmt: skip
@pytest.mark.parametrize("api", ["responses", "chat"])
def test_a_malformed_answer_is_a_502(
    serve_with: Any,
    gigachat: GigaChatFake,
    certificates: Certificates,
    reply: Reply,
    says: str,
    api: str,
) -> None:
    gigachat.api.script(gigachat.CHAT, reply)
    server = gateway(serve_with, gigachat, certificates)
    with server.client() as client:
        if api == "chat":
            messages = [{"role": "user", "content": "x"}]
            answer = client.post(
                "/v1/chat/completions", json={"model": MODEL, "messages": messages}
            )
        else:
            answer = client.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["code"] == "provider_error"
    assert "'gigachat'" in error["message"] and says in error["message"]
    assert "tok-in-page" not in answer.text


def test_a_stream_cut_short_is_failed_and_stored_as_failed(
    serve_with: Any, gigachat: GigaChatFake, certificates: Certificates
) -> None:
    gigachat.api.script(
        gigachat.CHAT,
        [
            Reply.sse([chunk({"role": "assistant", "content": "cut "}),
                       chunk({"content": "short"})]),
            Reply.sse([chunk({"content": "cut "}), chunk({"content": ""}, "stop", usage())],
                      done=False),
            Reply(headers={"Content-Type": "text/html"}, chunks=[HTML_PAGE]),
            Reply.sse([chunk({"content": "cut "})]),
        ],
    )  # fmt: skip
    server = gateway(serve_with, gigachat, certificates)
    body = {"model": MODEL, "input": "x", "stream": True}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
    with server.client() as client:
        no_finish = client.post("/v1/responses", json=body)
        no_done = client.post("/v1/responses", json=body)
        html = client.post("/v1/responses", json=body)
        chat_cut = client.post("/v1/chat/completions", json=chat)
        for reply, expected in ((no_finish, "without a finish reason"), (no_done, "[DONE]")):
            events, _ = sse_events(reply.text)
            assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
            failed = events[-1]["response"]
            assert expected in failed["error"]["message"]
            stored = client.get(f"/v1/responses/{failed['id']}")
            assert stored.json()["status"] == "failed"
    assert html.status_code == 502, html.text  # nothing was sent yet: a JSON error
    assert "tok-in-page" not in html.text
    chunks, _ = sse_events(chat_cut.text)
    assert "without a finish reason" in chunks[-1]["error"]["message"]
    assert not any(c["choices"][0].get("finish_reason") for c in chunks if c.get("choices"))


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "code", "text"),
    [
        (api_error(400, "Bad request"), 400, None, "Bad request"),
        (api_error(402, "Payment Required"), 402, "insufficient_quota", "Payment Required"),
        (api_error(403, "Permission denied"), 502, "upstream_auth_failed", "status 403"),
        (api_error(404, "No such model"), 404, "model_not_found", "No such model"),
        (api_error(413, "Payload too large"), 413, "request_too_large", "Payload too large"),
        (api_error(422, "Invalid params: system message must be the first message"), 400,
         None, "system message must be the first"),
        (api_error(429, "Too many requests", headers={"Retry-After": "3"}), 429,
         "rate_limit_exceeded", "Too many requests"),
        (api_error(500, "Internal Server Error"), 502, "provider_error", "status 500"),
        (api_error(503, "Service Unavailable"), 502, "provider_error", "status 503"),
    ],
)  # fmt: skip
def test_api_errors_map_to_canonical_errors(
    serve_with: Any,
    gigachat: GigaChatFake,
    certificates: Certificates,
    reply: Reply,
    status: int,
    code: str | None,
    text: str,
) -> None:
    gigachat.api.script(gigachat.CHAT, reply)
    server = gateway(serve_with, gigachat, certificates)
    with server.client() as client:
        answer = client.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert text in error["message"]
    if status == 429:
        assert answer.headers["retry-after"] == "3"


def test_a_refusal_inside_a_200_names_gigachat_s_own_credential_settings(
    serve_with: Any, gigachat: GigaChatFake, certificates: Certificates
) -> None:
    gigachat.api.script(gigachat.CHAT, Reply.json({"status": 401, "message": "Unauthorized"}))
    server = gateway(serve_with, gigachat, certificates)
    with server.client() as client:
        answer = client.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["code"] == "upstream_auth_failed"
    assert "XR_GIGACHAT_AUTH_KEY" in error["message"], error["message"]
    assert "API_KEY" not in error["message"].replace("AUTH_KEY", "")


def test_upstream_429_is_retried_by_the_transport(
    serve_with: Any, gigachat: GigaChatFake, certificates: Certificates
) -> None:
    gigachat.api.script(
        gigachat.CHAT, api_error(429, "Too many requests", headers={"Retry-After": "0"})
    )
    server = gateway(serve_with, gigachat, certificates, max_retries=1)
    with server.client() as client:
        answer = client.post("/v1/responses", json={"model": MODEL, "input": "again"})
    assert answer.status_code == 200
    assert answer.json()["output"][0]["content"][0]["text"] == "again"
    assert gigachat.api.hits(gigachat.CHAT) == 2


def test_oauth_failure_through_the_gateway_is_a_502_naming_the_cause(
    serve_with: Any, gigachat: GigaChatFake, certificates: Certificates
) -> None:
    server = gateway(serve_with, gigachat, certificates, scope="GIGACHAT_API_PERS")
    with server.client() as client:
        answer = client.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["code"] == "upstream_auth_failed"
    assert "wrong scope" in error["message"] and "XR_GIGACHAT_SCOPE" in error["message"]


# --- models ---------------------------------------------------------------------------------------


def test_model_discovery_lists_chat_models_as_gigachat_ids(
    serve_with: Any, gigachat: GigaChatFake, certificates: Certificates
) -> None:
    server = gateway(serve_with, gigachat, certificates, discovery=True, models=("GigaChat-Pro",))
    with server.client() as client:
        listed = client.get("/v1/models")
        answer = client.post("/v1/responses", json={"model": MODEL, "input": "hi"})
    ids = [model["id"] for model in listed.json()["data"]]
    assert ids == ["gigachat/GigaChat-Pro", "gigachat/GigaChat-2", "gigachat/GigaChat-2-Max"]
    assert gigachat.bearers(gigachat.MODELS) == ["Bearer tok-1"]
    assert answer.json()["model"] == MODEL  # ours, not GigaChat's versioned MODEL_VERSION
    assert MODEL_VERSION not in answer.text
    assert gigachat.oauth.hits(gigachat.OAUTH) == 1  # discovery and generation share the token
