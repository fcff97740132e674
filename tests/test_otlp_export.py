"""OTLP export of a running gateway to a fake OpenTelemetry Collector on loopback (issue 11,
item 3): spans and metrics arrive as OTLP/HTTP protobuf, decoded by the collector; with the
collector stopped mid-run, requests are served as before and nothing waits for it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import LiveServer, make_container
from tests.otlp_collector import FakeOtlpCollector

SERVER, CLIENT = 2, 3  # OTLP Span.SpanKind values


@pytest.fixture
def collector() -> Iterator[FakeOtlpCollector]:
    collector = FakeOtlpCollector().start()
    try:
        yield collector
    finally:
        collector.stop()


def _attributes(span: object) -> dict[str, object]:
    values: dict[str, object] = {}
    for attribute in span.attributes:  # type: ignore[attr-defined]
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value"))
    return values


def test_spans_and_metrics_reach_the_collector_and_a_dead_one_slows_nothing(
    serve_with: Callable[..., LiveServer],
    collector: FakeOtlpCollector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The OTLP exporter reads its OTEL_* variables from the process environment.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "xrouter-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    server = serve_with(container=make_container())
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": "local/echo", "input": "hi"})
        assert reply.status_code == 200
        request_id = reply.headers["x-request-id"]

        def has_request(c: FakeOtlpCollector) -> bool:
            return any(_attributes(s).get("xrouter.request_id") == request_id for s in c.spans())

        assert collector.wait_for(has_request, 10), collector.spans()
        (span,) = [s for s in collector.spans() if _attributes(s).get("xrouter.request_id")]
        assert span.kind == SERVER and span.name == "POST /v1/responses"
        attributes = _attributes(span)
        assert attributes["gen_ai.request.model"] == "local/echo"
        assert attributes["gen_ai.response.model"] == "echo"
        assert [e.name for e in span.events][:3] == ["ingest", "tokenize", "generate"]
        resource = {
            a.key: a.value.string_value
            for a in collector.traces[0].resource_spans[0].resource.attributes
        }
        assert resource["service.name"] == "xrouter-under-test"
        assert collector.wait_for(lambda c: bool(c.metrics), 10)
        names = {
            metric.name
            for request in collector.metrics
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }
        assert {"xrouter.requests", "gen_ai.server.request.duration"} <= names

        collector.stop()  # the collector dies mid-run
        started = time.monotonic()
        for n in range(20):
            answer = client.post("/v1/responses", json={"model": "local/echo", "input": f"{n}"})
            assert answer.status_code == 200
        assert time.monotonic() - started < 5  # nothing waited for the dead collector
        # Export attempts fail meanwhile, in the background, and are counted.
        processor = server.container.telemetry().processor
        assert processor is not None
        deadline = time.monotonic() + 10
        while processor.failed == 0:
            assert time.monotonic() < deadline, "no failed export was counted"
            time.sleep(0.05)
        failed = [
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith('xrouter_spans_total{kind="failed"}')
        ]
        assert failed and float(failed[0].rsplit(" ", 1)[1]) > 0
