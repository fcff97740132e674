"""Scenario matrix for `POST /v1/responses` over real HTTP on loopback.

Success (non-stream, stream), provider error before and during the stream, timeout, overload,
and client disconnects in each stage, with a real client that closes its socket.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import httpx
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.fakes import ScriptedProvider
from tests.helpers import (
    raw_post,
    read_until,
    server_with_slow_stage,
    sse_events,
    trace,
    usage_records,
    wait_for,
)
from xrouter.domain.lifecycle import Action
from xrouter.domain.provider_events import Finish, TextDelta

# --- success ------------------------------------------------------------------------------------


def test_success_non_stream(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/responses",
            json={"model": "local/echo", "input": "Hello gateway world", "instructions": "Echo"},
            headers={"x-request-id": "ok-nonstream"},
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "ok-nonstream"
        body = response.json()
        assert body["status"] == "completed"
        assert body["output"][0]["content"][0]["text"] == "Hello gateway world"
        assert body["usage"]["input_tokens"] > 0
        assert body["usage"]["total_tokens"] == (
            body["usage"]["input_tokens"] + body["usage"]["output_tokens"]
        )
        stored = client.get(f"/v1/responses/{body['id']}").json()
        assert stored == body
    assert trace(server, "ok-nonstream")[-2:] == [Action.FINISH, Action.RECORD_USAGE]


def test_success_stream(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/responses",
            json={"model": "local/echo", "input": "one two three four", "stream": True},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events, others = sse_events(response.text)
    types = [event["type"] for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 4
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert others == ["[DONE]"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "one two three four"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == deltas


def test_same_api_under_the_openrouter_style_prefix(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/api/v1/responses", json={"model": "local/echo", "input": "x"})
        models = client.get("/api/v1/models").json()
    assert response.status_code == 200
    assert "local/echo" in [model["id"] for model in models["data"]]


# --- provider errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_provider_error_before_first_chunk_is_a_json_502(server: LiveServer, stream: bool) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/responses", json={"model": "local/error", "input": "hi", "stream": stream}
        )
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "provider_error"
    assert "local/error" in error["message"]


def test_provider_error_mid_stream_sends_error_then_failed(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/responses",
            json={"model": "local/error-mid-stream", "input": "a b c d e", "stream": True},
            headers={"x-request-id": "mid-stream-error"},
        )
    assert response.status_code == 200  # the stream had started; the failure is in-band
    events, others = sse_events(response.text)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-2]["error"]["code"] == "provider_error"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "provider_error"
    assert others == ["[DONE]"]
    assert trace(server, "mid-stream-error")[-2:] == [Action.PROVIDER_FAIL, Action.RECORD_USAGE]


def test_provider_error_mid_stream_non_stream_is_a_502(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/responses", json={"model": "local/error-mid-stream", "input": "a b c d"}
        )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_error"


# --- timeouts and overload ----------------------------------------------------------------------


def test_provider_timeout(serve_with: Callable[..., LiveServer]) -> None:
    # The generation deadline acts on streamed and non-stream generations alike.
    server = serve_with(generation_timeout_s=0.3, local_slow_delay_s=0.5)
    body = {"model": "local/slow", "input": "one two three"}
    with server.client() as client:
        plain = client.post("/v1/responses", json=body, headers={"x-request-id": "timeout-1"})
        streamed = client.post(
            "/v1/responses", json={**body, "stream": True}, headers={"x-request-id": "timeout-2"}
        )
    assert plain.status_code == 504
    assert plain.json()["error"]["code"] == "provider_timeout"
    assert "XR_GENERATION_TIMEOUT_S" in plain.json()["error"]["message"]
    events, _ = sse_events(streamed.text)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert "XR_GENERATION_TIMEOUT_S" in events[-2]["error"]["message"]
    failed = events[-1]["response"]
    assert failed["error"]["code"] == "provider_timeout"
    for request_id in ("timeout-1", "timeout-2"):
        assert trace(server, request_id)[-2:] == [Action.TIME_OUT, Action.RECORD_USAGE]
        (record,) = usage_records(server, request_id)
        assert record.status == "failed"
    with server.client() as client:
        stored = client.get(f"/v1/responses/{failed['id']}").json()
    assert stored["status"] == "failed" and stored["error"]["code"] == "provider_timeout"


def test_overload_is_a_429_with_retry_after(serve_with: Callable[..., LiveServer]) -> None:
    server = serve_with(max_inflight=1, local_slow_delay_s=0.3)
    sock = raw_post(server, {"model": "local/slow", "input": "a b c", "stream": True}, "hold")
    try:
        read_until(sock, b"response.output_text.delta")
        with server.client() as client:
            refused = client.post("/v1/responses", json={"model": "local/echo", "input": "x"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert "XR_MAX_INFLIGHT" in refused.json()["error"]["message"]
    finally:
        sock.close()


# --- client disconnects -------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["ingest", "tokenize"])
def test_disconnect_before_generate_fails_at_once(
    serve_with: Callable[..., LiveServer], stage: str
) -> None:
    server = server_with_slow_stage(serve_with, stage)
    request_id = f"gone-in-{stage}"
    sock = raw_post(server, {"model": "local/echo", "input": "hello"}, request_id)
    time.sleep(0.2)  # the request is now in the slow stage
    sock.close()
    wait_for(lambda: Action.DISCONNECT_EARLY in trace(server, request_id), timeout=2)
    events = server.listener.traces()[request_id]
    early = events[-1]
    assert early.action is Action.DISCONNECT_EARLY
    assert early.from_stage == stage
    # "At once": well before the 3 s the slow stage would have taken.
    assert (early.at_ns - events[0].at_ns) / 1e9 < 1.5
    # No usage (nothing was generated), but the outcome counts: failed there, client gone.
    (outcome,) = usage_records(server, request_id)
    assert (outcome.status, outcome.failed_stage, outcome.error_type) == (
        "failed",
        stage,
        "client_disconnected",
    )
    assert outcome.input_tokens is None and outcome.response_id is None


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_during_generate_lets_generation_complete(
    serve_with: Callable[..., LiveServer], stream: bool
) -> None:
    server = serve_with(local_slow_delay_s=0.1)
    request_id = f"gone-in-generate-{stream}"
    words = "alpha beta gamma delta epsilon zeta"
    sock = raw_post(server, {"model": "local/slow", "input": words, "stream": stream}, request_id)
    if stream:
        received = read_until(sock, b"response.output_text.delta")
        created = json.loads(received.split(b"data: ", 1)[1].split(b"\n", 1)[0])
        response_id = created["response"]["id"]
    else:
        wait_for(lambda: Action.TOKENIZE in trace(server, request_id))
    sock.close()

    wait_for(lambda: Action.RECORD_USAGE in trace(server, request_id))
    actions = trace(server, request_id)
    assert Action.DISCONNECT_LATE in actions
    assert actions.index(Action.DISCONNECT_LATE) < actions.index(Action.FINISH)
    records = usage_records(server, request_id)
    assert len(records) == 1 and records[0].status == "completed"
    assert records[0].output_tokens == server.container.token_counter().count_sync(words)
    if stream:
        with server.client() as client:
            stored = client.get(f"/v1/responses/{response_id}").json()
        assert stored["status"] == "completed"
        assert stored["output"][0]["content"][0]["text"] == words


# --- the other endpoints ------------------------------------------------------------------------


def test_retrieve_delete_and_input_items(server: LiveServer) -> None:
    with server.client() as client:
        created = client.post(
            "/v1/responses",
            json={
                "model": "local/echo",
                "input": [
                    {"role": "user", "content": "first"},
                    {"type": "message", "role": "user", "content": "second"},
                ],
            },
        ).json()
        listed = client.get(f"/v1/responses/{created['id']}/input_items").json()
        assert listed["object"] == "list"
        texts = [item["content"][0]["text"] for item in listed["data"]]
        assert texts == ["second", "first"]  # newest first by default
        ascending = client.get(
            f"/v1/responses/{created['id']}/input_items", params={"order": "asc", "limit": 1}
        ).json()
        assert [item["content"][0]["text"] for item in ascending["data"]] == ["first"]
        assert ascending["has_more"] is True
        deleted = client.delete(f"/v1/responses/{created['id']}")
        assert deleted.json() == {
            "id": created["id"],
            "object": "response.deleted",
            "deleted": True,
        }
        assert client.get(f"/v1/responses/{created['id']}").status_code == 404


def test_models_health_ready_and_openapi(server: LiveServer) -> None:
    with server.client() as client:
        models = client.get("/v1/models").json()
        assert models["object"] == "list"
        assert {"local/echo", "local/slow", "local/error"} <= {m["id"] for m in models["data"]}
        assert all(m["object"] == "model" for m in models["data"])
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"status": "ready"}
        schema = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    create = schema["paths"]["/v1/responses"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ResponseRequest"
    }
    assert "text/event-stream" in create["responses"]["200"]["content"]
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(schema)))
    assert refs and refs <= set(schema["components"]["schemas"])


def test_every_response_carries_a_request_id(server: LiveServer) -> None:
    with server.client() as client:
        ids = {
            client.get("/health").headers["x-request-id"],
            client.get("/nope").headers["x-request-id"],
            client.post("/v1/responses", content=b"{").headers["x-request-id"],
        }
        honoured = client.get("/health", headers={"x-request-id": "abc-123"})
        unsafe = client.get("/health", headers={"x-request-id": "bad id\twith spaces"})
    assert len(ids) == 3
    assert honoured.headers["x-request-id"] == "abc-123"
    assert unsafe.headers["x-request-id"].startswith("req_")


def test_http_errors_never_leak_internals(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        response = client.post(
            "/v1/responses", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text


class _BrokenStore:
    """A store whose reads fail with an internal detail that must not reach the client."""

    async def save(self, stored: object) -> None:
        return None

    async def get(self, response_id: str, *, owner: str | None = None) -> None:
        raise RuntimeError("redis://:hunter2@10.0.0.1 refused")

    async def get_response(self, response_id: str, *, owner: str | None = None) -> None:
        raise RuntimeError("redis://:hunter2@10.0.0.1 refused")

    async def delete(self, response_id: str, *, owner: str | None = None) -> bool:
        raise RuntimeError("redis://:hunter2@10.0.0.1 refused")


def test_internal_error_is_a_500_envelope_without_internals(
    serve_with: Callable[..., LiveServer],
) -> None:
    container = make_container()
    container.response_store.override(providers.Object(_BrokenStore()))
    server = serve_with(container=container)
    with server.client() as client:
        response = client.get("/v1/responses/resp_x", headers={"x-request-id": "boom-1"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "internal_error"
    assert "boom-1" in error["message"]
    assert "hunter2" not in response.text and "Traceback" not in response.text


def test_client_token_and_traceparent_reach_the_provider(
    serve_with: Callable[..., LiveServer],
) -> None:
    fake = ScriptedProvider([TextDelta("ok"), Finish()])
    container = make_container()
    container.model_providers.override(providers.Object([fake]))
    server = serve_with(container=container)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with server.client() as client:
        for path, body in [
            ("/v1/responses", {"model": "fake/model", "input": "x"}),
            (
                "/v1/chat/completions",
                {"model": "fake/model", "messages": [{"role": "user", "content": "x"}]},
            ),
        ]:
            response = client.post(
                path,
                json=body,
                headers={"authorization": "Bearer sk-client", "traceparent": traceparent},
            )
            assert response.status_code == 200
    assert [call.context.client_token for call in fake.calls] == ["sk-client", "sk-client"]
    assert {call.context.traceparent for call in fake.calls} == {traceparent}
