"""The model the upstream says answered is kept (issue 14 item 8).

An upstream may answer with another model than the one it was asked for (OpenRouter's
`openrouter/auto` routing to a concrete model, a dated version of an alias). That id goes to
the request's trace (`gen_ai.response.model` on the server span and on the upstream attempt's
client span) and to the analytics record (`upstream_model`), while the response the client
reads keeps echoing the model the client asked for. Through the HTTP app, against a fake
upstream on loopback that answers with another model id, on both upstream protocols, stream
and not, and on both client APIs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.helpers import sse_events, usage_records
from tests.test_telemetry import one, traced, wait_spans
from tests.upstreams import FakeUpstream, RecordedRequest, Reply
from xrouter.adapters.telemetry.tracing import InMemorySpanProcessor, SpanKind

REQUESTED = "fake/gpt-test"
REPORTED = "anthropic/claude-sonnet-4.5"
"""What the fake upstream says answered, as OpenRouter's `auto` router does."""


def reporting_gateway(
    serve_with: Callable[..., LiveServer], upstream: FakeUpstream, protocol: str
) -> tuple[LiveServer, InMemorySpanProcessor]:
    """A traced gateway with in-memory analytics over `upstream`, which answers every call
    with `REPORTED` as its model (its default echo, retargeted)."""
    answer = upstream._chat if protocol == "chat" else upstream._responses

    def retargeted(request: RecordedRequest) -> Reply:
        body = {**request.json, "model": REPORTED}
        return answer(dataclasses.replace(request, json=body, body=json.dumps(body).encode()))

    upstream.route(f"/v1/{'chat/completions' if protocol == 'chat' else 'responses'}", retargeted)
    container = make_container(discovery=False, analytics="memory")
    environ = {
        "XR_FAKE_BASE_URL": upstream.base_url,
        "XR_FAKE_ENABLED": "true",
        "XR_FAKE_PROTOCOL": protocol,
    }
    container.environ.override(providers.Object(environ))
    spans = traced(container, environ)
    return serve_with(container=container), spans


def record_of(server: LiveServer, request_id: str) -> Any:
    """The request's analytics record, once the drain has written it (bounded wait)."""
    deadline = time.monotonic() + 5
    while not (records := usage_records(server, request_id)):
        assert time.monotonic() < deadline, "no analytics record"
        time.sleep(0.02)
    assert len(records) == 1
    return records[0]


@pytest.mark.parametrize("protocol", ["chat", "responses"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_reported_model_reaches_trace_and_analytics_and_the_client_sees_its_own(
    serve_with: Callable[..., LiveServer],
    fake_upstream: FakeUpstream,
    protocol: str,
    stream: bool,
) -> None:
    server, spans = reporting_gateway(serve_with, fake_upstream, protocol)
    with server.client() as client:
        reply = client.post(
            "/v1/responses", json={"model": REQUESTED, "input": "hello there", "stream": stream}
        )
    assert reply.status_code == 200, reply.text
    if stream:
        events, _ = sse_events(reply.text)
        final = next(e for e in events if e["type"] == "response.completed")["response"]
    else:
        final = reply.json()
    assert final["model"] == REQUESTED  # the client's own model, not the upstream's
    assert final["output"][0]["content"][0]["text"] == "hello there"
    assert fake_upstream.received[0].json["model"] == "gpt-test"  # asked for the routed one

    found = wait_spans(spans, 2)
    root, call = one(found, SpanKind.SERVER), one(found, SpanKind.CLIENT)
    assert root.attributes["gen_ai.request.model"] == REQUESTED
    assert root.attributes["gen_ai.response.model"] == REPORTED
    assert call.attributes["gen_ai.request.model"] == "gpt-test"
    assert call.attributes["gen_ai.response.model"] == REPORTED

    record = record_of(server, reply.headers["x-request-id"])
    assert (record.model_requested, record.model) == (REQUESTED, REQUESTED)
    assert record.upstream_model == REPORTED
    assert record.status == "completed"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_chat_completions_client_reads_its_model_while_the_record_keeps_the_upstreams(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream, stream: bool
) -> None:
    server, spans = reporting_gateway(serve_with, fake_upstream, "chat")
    with server.client() as client:
        reply = client.post(
            "/v1/chat/completions",
            json={
                "model": REQUESTED,
                "messages": [{"role": "user", "content": "hi"}],
                "stream": stream,
            },
        )
    assert reply.status_code == 200, reply.text
    if stream:
        chunks, _ = sse_events(reply.text)
        assert chunks and {chunk["model"] for chunk in chunks} == {REQUESTED}
    else:
        assert reply.json()["model"] == REQUESTED
    found = wait_spans(spans, 2)
    assert one(found, SpanKind.SERVER).attributes["gen_ai.response.model"] == REPORTED
    assert one(found, SpanKind.CLIENT).attributes["gen_ai.response.model"] == REPORTED
    record = record_of(server, reply.headers["x-request-id"])
    assert (record.api, record.upstream_model) == ("chat", REPORTED)


def test_an_upstream_that_names_no_model_leaves_the_attribute_to_the_routed_model(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    """No `model` in the answer: nothing is invented for the attempt; the server span says
    the routed model and the record has no upstream model."""
    fake_upstream.script(
        "/v1/chat/completions",
        Reply.json(
            {
                "id": "c1",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
            }
        ),
    )
    server, spans = reporting_gateway(serve_with, fake_upstream, "chat")
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": REQUESTED, "input": "hi"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == REQUESTED
    found = wait_spans(spans, 2)
    assert one(found, SpanKind.SERVER).attributes["gen_ai.response.model"] == REQUESTED
    assert "gen_ai.response.model" not in one(found, SpanKind.CLIENT).attributes
    assert record_of(server, reply.headers["x-request-id"]).upstream_model is None
