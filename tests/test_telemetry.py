"""Traces and metrics of requests through the HTTP app (issue 11, items 1-3).

Spans are caught by an in-memory span processor given to the container's `Telemetry`; the
upstream is a fake OpenAI-compatible server on loopback. Each scenario asserts the server span
(HTTP and GenAI attributes, the lifecycle as events), the client span of every upstream attempt,
and the `traceparent` the upstream received.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.helpers import SlowCatalog
from tests.upstreams import FakeUpstream, Reply, chat_completion
from xrouter.adapters.telemetry.metrics import MetricsSnapshot
from xrouter.adapters.telemetry.tracing import (
    AlwaysOnSampler,
    InMemorySpanProcessor,
    Span,
    SpanKind,
    Tracer,
    format_traceparent,
    parse_traceparent,
)
from xrouter.application.registry import ModelRegistry
from xrouter.application.request_facts import CURRENT_REQUEST, RequestFacts
from xrouter.entrypoints.container import Container
from xrouter.entrypoints.logging_setup import JsonFormatter
from xrouter.entrypoints.telemetry_config import telemetry_choice
from xrouter.entrypoints.telemetry_runtime import Telemetry

MODEL = "fake/gpt-test"
CHAT = "/v1/chat/completions"
INBOUND = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def traced(container: Container, environ: dict[str, str]) -> InMemorySpanProcessor:
    """Give `container` an in-memory span processor (tracing on, every span kept)."""
    spans = InMemorySpanProcessor()
    container.telemetry.override(
        providers.Singleton(
            Telemetry,
            settings=container.settings,
            choice=telemetry_choice(environ),
            environ=environ,
            processor=spans,
        )
    )
    return spans


def gateway(
    serve_with: Callable[..., LiveServer],
    upstream: FakeUpstream,
    *,
    tracing: bool = True,
    **overrides: Any,
) -> tuple[LiveServer, InMemorySpanProcessor | None]:
    container = make_container(discovery=False, **overrides)
    environ = {
        "XR_FAKE_BASE_URL": upstream.base_url,
        "XR_FAKE_ENABLED": "true",
        "XR_FAKE_MAX_RETRIES": "2",
        "XR_FAKE_BACKOFF_INITIAL_S": "0.01",
    }
    container.environ.override(providers.Object(environ))
    spans = traced(container, environ) if tracing else None
    return serve_with(container=container), spans


def wait_spans(spans: InMemorySpanProcessor, count: int, timeout_s: float = 5.0) -> list[Span]:
    deadline = time.monotonic() + timeout_s
    while len(spans.spans) < count:
        assert time.monotonic() < deadline, [s.name for s in spans.spans]
        time.sleep(0.01)
    return list(spans.spans)


def one(spans: list[Span], kind: SpanKind) -> Span:
    found = [s for s in spans if s.kind is kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def events(span: Span) -> list[str]:
    return [name for name, _, _ in span.events]


def test_a_non_stream_request_is_one_server_span_with_one_client_span(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    server, spans = gateway(serve_with, fake_upstream)
    assert spans is not None
    with server.client() as client:
        reply = client.post(
            "/v1/responses",
            json={"model": MODEL, "input": "hello there", "temperature": 0.5},
            headers={"traceparent": INBOUND},
        )
    assert reply.status_code == 200
    found = wait_spans(spans, 2)
    root, call = one(found, SpanKind.SERVER), one(found, SpanKind.CLIENT)
    inbound = parse_traceparent(INBOUND)
    assert inbound is not None
    # The inbound traceparent is the parent; the upstream got the client span's context.
    assert root.context.trace_id == inbound.trace_id and root.parent == inbound
    assert call.parent == root.context and call.context.trace_id == inbound.trace_id
    sent = fake_upstream.requests(CHAT)[0].headers["traceparent"]
    assert sent == format_traceparent(call.context)
    assert root.name == "POST /v1/responses"
    attributes = root.attributes
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == "/v1/responses"
    assert attributes["http.response.status_code"] == 200
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "fake"
    assert attributes["gen_ai.request.model"] == MODEL
    assert attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.response.model"] == "gpt-test"  # what the upstream said
    assert attributes["gen_ai.response.id"] == reply.json()["id"]
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    usage = reply.json()["usage"]
    assert attributes["gen_ai.usage.input_tokens"] == usage["input_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == usage["output_tokens"]
    assert not root.is_error and "error.type" not in attributes
    assert events(root) == ["ingest", "tokenize", "generate", "done", "record_usage"]
    assert call.name == "chat gpt-test"
    assert call.attributes["gen_ai.request.model"] == "gpt-test"
    assert call.attributes["server.address"] == "127.0.0.1"
    assert call.attributes["http.response.status_code"] == 200
    assert call.start_ns >= root.start_ns and call.end_ns <= root.end_ns
    # No content unless the operator opts in.
    assert "hello" not in json.dumps([root.attributes, call.attributes], default=str)


def test_a_stream_ends_its_spans_after_the_last_event(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    server, spans = gateway(serve_with, fake_upstream)
    assert spans is not None
    with server.client() as client:
        reply = client.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "a b c"}],
                "stream": True,
            },
        )
    assert reply.status_code == 200 and "[DONE]" in reply.text
    found = wait_spans(spans, 2)
    root = one(found, SpanKind.SERVER)
    assert root.name == "POST /v1/chat/completions"
    assert root.attributes["gen_ai.request.stream"] is True
    assert root.attributes["xrouter.api"] == "chat"
    assert root.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert events(root)[-2:] == ["done", "record_usage"]
    # A fresh trace: no inbound traceparent.
    assert root.parent is None


def test_a_provider_error_marks_both_spans_failed(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(CHAT, Reply.error(400, "bad request here", code="invalid_value"))
    server, spans = gateway(serve_with, fake_upstream)
    assert spans is not None
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert reply.status_code == 400
    found = wait_spans(spans, 2)
    root, call = one(found, SpanKind.SERVER), one(found, SpanKind.CLIENT)
    assert events(root)[-2:] == ["failed", "record_usage"]
    assert root.is_error and root.attributes["xrouter.failed_stage"] == "generate"
    assert root.attributes["error.type"] == reply.json()["error"]["code"]
    assert call.is_error and call.attributes["http.response.status_code"] == 400


def test_retries_are_one_client_span_per_attempt(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(
        CHAT,
        [
            Reply.error(503, "busy", headers={"retry-after-ms": "0"}),
            Reply.json(chat_completion("fine")),
        ],
    )
    server, spans = gateway(serve_with, fake_upstream)
    assert spans is not None
    with server.client() as client:
        assert client.post("/v1/responses", json={"model": MODEL, "input": "x"}).status_code == 200
    found = wait_spans(spans, 3)
    root = one(found, SpanKind.SERVER)
    calls = sorted((s for s in found if s.kind is SpanKind.CLIENT), key=lambda s: s.start_ns)
    assert [c.attributes["xrouter.upstream.attempt"] for c in calls] == [1, 2]
    assert [c.attributes["http.response.status_code"] for c in calls] == [503, 200]
    assert calls[0].is_error and not calls[1].is_error
    assert all(c.parent == root.context for c in calls)
    assert root.attributes["xrouter.upstream.attempts"] == 2
    # Each attempt carried its own span's context upstream.
    sent = [r.headers["traceparent"] for r in fake_upstream.requests(CHAT)]
    assert sent == [format_traceparent(c.context) for c in calls]


def test_a_timeout_is_a_failed_span_with_its_error_type(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(CHAT, Reply.stall())
    server, spans = gateway(serve_with, fake_upstream, generation_timeout_s=0.3)
    assert spans is not None
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert reply.status_code == 504
    found = wait_spans(spans, 2)
    root = one(found, SpanKind.SERVER)
    assert events(root)[-2:] == ["failed", "record_usage"]
    assert root.attributes["error.type"] == reply.json()["error"]["code"]
    assert root.attributes["http.response.status_code"] == 504


def _post_and_leave(server: LiveServer, body: dict[str, Any], after_s: float) -> None:
    payload = json.dumps(body).encode()
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(
            b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )
        time.sleep(after_s)


def test_a_client_gone_during_generate_ends_the_span_when_generation_ends(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    frames = [
        {"choices": [{"index": 0, "delta": {"content": f"w{n} "}}], "model": "gpt-test"}
        for n in range(6)
    ]
    frames.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    fake_upstream.script(CHAT, Reply.sse(frames, chunk_delay_s=0.1))
    server, spans = gateway(serve_with, fake_upstream)
    assert spans is not None
    _post_and_leave(server, {"model": MODEL, "input": "x", "stream": True}, after_s=0.15)
    left_ns = time.time_ns()
    found = wait_spans(spans, 2)
    root = one(found, SpanKind.SERVER)
    names = events(root)
    assert "disconnect" in names and names[-2:] == ["done", "record_usage"]
    assert names.index("disconnect") < names.index("done")
    # Generation went on for ~0.5 s after the client left: the span covers it.
    assert root.end_ns - left_ns > 0.3e9
    assert root.attributes["gen_ai.response.finish_reasons"] == ("stop",)


def test_a_client_gone_during_ingest_fails_the_span_there(
    serve_with: Callable[..., LiveServer],
) -> None:
    container = make_container()
    container.catalog.override(
        providers.Singleton(
            SlowCatalog, providers.Singleton(ModelRegistry, container.model_providers), 3.0
        )
    )
    spans = traced(container, {})
    server = serve_with(container=container)
    _post_and_leave(server, {"model": "local/echo", "input": "x"}, after_s=0.2)
    found = wait_spans(spans, 1)
    root = one(found, SpanKind.SERVER)
    assert events(root) == ["ingest", "disconnect", "failed"]
    assert root.attributes["xrouter.failed_stage"] == "ingest"
    assert root.attributes["error.type"] == "client_disconnected"


def test_metrics_add_up_after_a_known_workload(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(CHAT, [Reply.json(chat_completion("one two")) for _ in range(3)])
    server, _ = gateway(serve_with, fake_upstream, tracing=False)
    with server.client() as client:
        for _ in range(3):
            assert client.post("/v1/responses", json={"model": MODEL, "input": "x"}).is_success
        assert (
            client.post("/v1/responses", json={"model": "nope/x", "input": "x"}).status_code == 404
        )
        text = client.get("/metrics")
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    snapshot: MetricsSnapshot = server.container.telemetry().snapshot()
    families = {f.name: f for f in snapshot.families}

    def total(name: str, **labels: str) -> float:
        """The sum of the matching series (a histogram's: its count); labels with their dots
        written as double underscores."""
        family = families[name]
        keys = family.labels
        return sum(
            s.value if not s.bucket_counts else s.count
            for s in family.series
            if all(s.labels[keys.index(k.replace("__", "."))] == v for k, v in labels.items())
        )

    assert total("xrouter.requests", route="POST /v1/responses", status="200") == 3
    assert total("xrouter.requests", route="POST /v1/responses", status="404") == 1
    assert total("gen_ai.client.token.usage", gen_ai__token__type="output") == 3
    assert total("gen_ai.client.operation.duration", gen_ai__provider__name="fake") == 3
    assert total("gen_ai.server.request.duration") == 3
    assert total("gen_ai.server.time_to_first_token") == 3
    assert total("xrouter.upstream.attempts", provider="fake") == 3
    assert total("xrouter.outcomes", status="failed", failed_stage="ingest") == 1
    body = text.text
    assert 'xrouter_requests_total{route="POST /v1/responses",model="fake/gpt-test"' in body
    assert "gen_ai_client_operation_duration_seconds_bucket" in body
    assert "xrouter_requests_inflight" in body


def test_metrics_can_be_turned_off(serve_with: Callable[..., LiveServer]) -> None:
    server = serve_with(metrics=False)
    with httpx.Client(base_url=server.base_url) as client:
        assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize("sampler", ["always_off", "parentbased_always_off"])
def test_an_unsampled_request_still_propagates_its_trace_context(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream, sampler: str
) -> None:
    container = make_container(discovery=False)
    environ = {
        "XR_FAKE_BASE_URL": fake_upstream.base_url,
        "XR_FAKE_ENABLED": "true",
        "OTEL_TRACES_SAMPLER": sampler,
    }
    container.environ.override(providers.Object(environ))
    spans = traced(container, environ)
    server = serve_with(container=container)
    with server.client() as client:
        assert client.post("/v1/responses", json={"model": MODEL, "input": "x"}).is_success
    time.sleep(0.1)
    assert spans.spans == []
    sent = parse_traceparent(fake_upstream.requests(CHAT)[0].headers["traceparent"])
    assert sent is not None and not sent.sampled


def test_content_is_captured_only_on_opt_in_and_masked(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    key = "Qk7vN2pX9rT4mW8sL3hJ6dF1gB5cZ0yA"
    container = make_container(discovery=False)
    environ = {
        "XR_FAKE_BASE_URL": fake_upstream.base_url,
        "XR_FAKE_ENABLED": "true",
        "XR_FAKE_API_KEY": key,
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
    }
    container.environ.override(providers.Object(environ))
    spans = traced(container, environ)
    server = serve_with(container=container)
    with server.client() as client:
        reply = client.post(
            "/v1/responses",
            json={"model": MODEL, "input": f"my key is {key}", "instructions": "be brief"},
        )
    assert reply.status_code == 200
    root = one(wait_spans(spans, 2), SpanKind.SERVER)
    assert root.attributes["gen_ai.system_instructions"] == "be brief"
    prompt = json.loads(root.attributes["gen_ai.input.messages"])
    assert prompt[0]["content"] == "my key is ***", prompt  # masked by value
    output = root.attributes["gen_ai.output.messages"]
    assert "my key is" in output and key not in output


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "-5"}, "OTEL_METRIC_EXPORT_INTERVAL"),
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, "GET /metrics"),
    ],
)
def test_an_unusable_otel_variable_stops_serve_with_what_to_fix(
    variables: dict[str, str], named: str
) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", **variables}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "xrouter"), "serve", "--port", "9"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("xrouter: configuration error:") and named in result.stderr
    assert "Traceback" not in result.stderr


def test_json_log_lines_carry_the_request_span_ids() -> None:
    processor = InMemorySpanProcessor()
    tracer = Tracer(AlwaysOnSampler(), processor)
    span = tracer.start_span("POST /v1/responses", SpanKind.SERVER, parse_traceparent(INBOUND))
    facts = RequestFacts("req_1", span=span)
    token = CURRENT_REQUEST.set(facts)
    try:
        record = logging.LogRecord("xrouter.engine", logging.INFO, "x", 1, "hello", None, None)
        line = json.loads(JsonFormatter().format(record))
    finally:
        CURRENT_REQUEST.reset(token)
    assert line["trace_id"] == INBOUND.split("-")[1]
    assert line["span_id"] == f"{span.context.span_id:016x}" and line["request_id"] == "req_1"
