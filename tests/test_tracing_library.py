"""The tracing library: W3C trace context, samplers, spans, and batched OTLP export.

Export goes through the real OTLP/HTTP exporter to a fake collector on loopback that decodes
the protobuf payloads; a stopped collector must cost the request path nothing.
"""

from __future__ import annotations

import gzip
import logging
import random
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from xrouter.adapters.telemetry.span_export import (
    BatchSpanProcessor,
    OtlpSpanEncoder,
    batch_settings_from_env,
    otlp_span_exporter,
)
from xrouter.adapters.telemetry.tracing import (
    CURRENT_SPAN,
    InMemorySpanProcessor,
    NonRecordingSpan,
    ParentBasedSampler,
    Span,
    SpanContext,
    SpanKind,
    TraceIdRatioSampler,
    Tracer,
    format_traceparent,
    parse_traceparent,
    sampler_from_env,
)

from .otlp_collector import FakeOtlpCollector

TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_HEX = "00f067aa0ba902b7"
RESOURCE = Resource.create({"service.name": "xrouter-test"})


@pytest.fixture
def collector() -> Iterator[FakeOtlpCollector]:
    collector = FakeOtlpCollector().start()
    yield collector
    collector.stop()


@pytest.fixture
def otlp_env(monkeypatch: pytest.MonkeyPatch, collector: FakeOtlpCollector) -> dict[str, str]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20sk-otlp-secret-123",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


# --- W3C trace context ----------------------------------------------------------------------


def test_a_valid_traceparent_gives_the_parent_context() -> None:
    ctx = parse_traceparent(f"00-{TRACE_HEX}-{PARENT_HEX}-01")
    assert ctx == SpanContext(int(TRACE_HEX, 16), int(PARENT_HEX, 16), True)
    unsampled = parse_traceparent(f" 00-{TRACE_HEX}-{PARENT_HEX}-00 ")
    assert unsampled is not None and unsampled.sampled is False
    # Only bit 0 of the flags means sampled; other bits are other flags.
    assert parse_traceparent(f"00-{TRACE_HEX}-{PARENT_HEX}-02") == SpanContext(
        int(TRACE_HEX, 16), int(PARENT_HEX, 16), False
    )


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"00-{'0' * 32}-{PARENT_HEX}-01",  # all-zero trace id
        f"00-{TRACE_HEX}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_HEX.upper()}-{PARENT_HEX}-01",  # uppercase hex
        f"00-{TRACE_HEX}-{PARENT_HEX.upper()}-01",
        f"ff-{TRACE_HEX}-{PARENT_HEX}-01",  # version ff is forbidden
        f"00-{TRACE_HEX}-{PARENT_HEX}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_HEX[:-1]}-{PARENT_HEX}-01",  # short trace id
        f"00-{TRACE_HEX}-{PARENT_HEX}-1",  # short flags
        f"00_{TRACE_HEX}_{PARENT_HEX}_01",
        f"cc-{TRACE_HEX}-{PARENT_HEX}-01extra",  # future version: extra fields need a '-'
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_a_future_version_is_read_by_its_version_00_fields() -> None:
    ctx = parse_traceparent(f"cc-{TRACE_HEX}-{PARENT_HEX}-01-what-the-future-holds")
    assert ctx == SpanContext(int(TRACE_HEX, 16), int(PARENT_HEX, 16), True)
    assert parse_traceparent(f"01-{TRACE_HEX}-{PARENT_HEX}-00") is not None


def test_format_then_parse_round_trips_and_pads() -> None:
    ctx = SpanContext(trace_id=1, span_id=2, sampled=True)
    assert format_traceparent(ctx) == f"00-{'0' * 31}1-{'0' * 15}2-01"
    assert format_traceparent(ctx._replace(sampled=False)).endswith("-00")
    header = f"00-{TRACE_HEX}-{PARENT_HEX}-01"
    parsed = parse_traceparent(header)
    assert parsed is not None and format_traceparent(parsed) == header


# --- samplers -------------------------------------------------------------------------------


def test_parent_based_samplers_follow_the_parents_flag() -> None:
    parent_on = SpanContext(5, 6, True)
    parent_off = SpanContext(5, 6, False)
    always_on = sampler_from_env({})  # the default: parentbased_always_on
    assert always_on.should_sample(5, parent_off) is False
    assert always_on.should_sample(5, parent_on) is True
    assert always_on.should_sample(5, None) is True
    always_off = sampler_from_env({"OTEL_TRACES_SAMPLER": "parentbased_always_off"})
    assert always_off.should_sample(5, parent_on) is True
    assert always_off.should_sample(5, None) is False
    ratio = sampler_from_env(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    )
    assert ratio.should_sample(5, parent_on) is True
    assert ratio.should_sample(5, None) is False


def test_plain_samplers_ignore_the_parent() -> None:
    parent_off = SpanContext(5, 6, False)
    assert sampler_from_env({"OTEL_TRACES_SAMPLER": "always_on"}).should_sample(5, parent_off)
    assert not sampler_from_env({"OTEL_TRACES_SAMPLER": "always_off"}).should_sample(
        5, SpanContext(5, 6, True)
    )


def test_the_ratio_sampler_decides_as_otels_trace_id_ratio_based() -> None:
    rng = random.Random(11)
    for rate in (0.0, 0.1, 0.25, 0.5, 0.999, 1.0):
        ours = TraceIdRatioSampler(rate)
        theirs = TraceIdRatioBased(rate)
        for _ in range(2000):
            trace_id = rng.getrandbits(128) or 1
            expected = theirs.should_sample(None, trace_id, "x").decision.is_sampled()
            assert ours.should_sample(trace_id, None) is expected
    half = sampler_from_env(
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ".5"}
    )
    sampled = sum(half.should_sample(rng.getrandbits(128), None) for _ in range(10_000))
    assert 4500 < sampled < 5500


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "_ARG"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "_ARG"),
    ],
)
def test_a_bad_sampler_setting_is_an_error_that_names_the_variable(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named) as raised:
        sampler_from_env(environ)
    if named == "OTEL_TRACES_SAMPLER":
        assert "parentbased_traceidratio" in str(raised.value)


def test_a_ratio_sampler_without_an_argument_samples_everything() -> None:
    sampler = sampler_from_env({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"})
    assert isinstance(sampler, ParentBasedSampler)
    assert isinstance(sampler.root, TraceIdRatioSampler) and sampler.root.ratio == 1.0


# --- spans ----------------------------------------------------------------------------------


def test_spans_share_the_trace_and_end_once() -> None:
    processor = InMemorySpanProcessor()
    tracer = Tracer(sampler_from_env({}), processor)
    inbound = parse_traceparent(f"00-{TRACE_HEX}-{PARENT_HEX}-01")
    server = tracer.start_span("chat gpt-4o", SpanKind.SERVER, inbound, {"http.method": "POST"})
    assert isinstance(server, Span) and server.recording
    client = tracer.start_span("chat gpt-4o", SpanKind.CLIENT, server.context)
    assert client.context.trace_id == server.context.trace_id == int(TRACE_HEX, 16)
    assert client.parent == server.context and server.parent == inbound
    assert len({server.context.span_id, client.context.span_id, int(PARENT_HEX, 16)}) == 3
    client.end()
    server.end()
    server.end()
    server.set_attribute("late", 1)  # ignored: the export thread may be reading the span
    server.add_event("late")
    assert [span.kind for span in processor.spans] == [SpanKind.CLIENT, SpanKind.SERVER]
    assert "late" not in server.attributes and server.events == []
    assert server.end_ns >= server.start_ns > 0


def test_an_unsampled_span_records_nothing_but_propagates_its_context() -> None:
    processor = InMemorySpanProcessor()
    tracer = Tracer(sampler_from_env({}), processor)
    inbound = parse_traceparent(f"00-{TRACE_HEX}-{PARENT_HEX}-00")
    span = tracer.start_span("chat", SpanKind.SERVER, inbound)
    assert isinstance(span, NonRecordingSpan) and not span.recording
    span.set_attribute("a", 1)
    span.add_event("ingest")
    span.set_error("timeout")
    span.end()
    assert processor.spans == []
    header = format_traceparent(span.context)
    assert header.startswith(f"00-{TRACE_HEX}-") and header.endswith("-00")
    assert span.context.span_id not in (0, int(PARENT_HEX, 16))


def test_a_root_span_starts_a_fresh_trace() -> None:
    tracer = Tracer(sampler_from_env({}), None)
    first = tracer.start_span("a", SpanKind.SERVER, None)
    second = tracer.start_span("b", SpanKind.SERVER, None)
    assert first.context.trace_id != second.context.trace_id
    assert first.context.trace_id and first.context.span_id and first.context.sampled
    first.end()  # no processor: nothing to hand it to, and no error


def test_the_current_span_is_per_context() -> None:
    tracer = Tracer(sampler_from_env({}), None)
    span = tracer.start_span("a", SpanKind.SERVER, None)
    seen: list[object] = []
    token = CURRENT_SPAN.set(span)
    try:
        thread = threading.Thread(target=lambda: seen.append(CURRENT_SPAN.get()))
        thread.start()
        thread.join(5)
        assert CURRENT_SPAN.get() is span
    finally:
        CURRENT_SPAN.reset(token)
    assert seen == [None] and CURRENT_SPAN.get() is None


# --- export ---------------------------------------------------------------------------------


def _attributes(span: trace_pb2.Span) -> dict[str, object]:
    values: dict[str, object] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        if kind == "array_value":
            values[kv.key] = [item.string_value for item in kv.value.array_value.values]
        else:
            values[kv.key] = getattr(kv.value, kind)
    return values


def test_spans_reach_the_collector_over_otlp_http(
    collector: FakeOtlpCollector, otlp_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    processor = BatchSpanProcessor(otlp_span_exporter(otlp_env), RESOURCE, schedule_delay_s=0.05)
    tracer = Tracer(sampler_from_env({}), processor)
    inbound = parse_traceparent(f"00-{TRACE_HEX}-{PARENT_HEX}-01")
    server = tracer.start_span("chat gpt-4o", SpanKind.SERVER, inbound, {"http.route": "/v1/x"})
    server.add_event("ingest")
    client = tracer.start_span("chat gpt-4o", SpanKind.CLIENT, server.context)
    client.set_attribute("gen_ai.request.model", "gpt-4o")
    client.set_attribute("gen_ai.usage.input_tokens", 12)
    client.set_attribute("gen_ai.request.temperature", 0.5)
    client.set_attribute("gen_ai.response.finish_reasons", ["stop"])
    client.add_event("generate", {"gen_ai.usage.output_tokens": 3})
    client.set_error("timeout", "upstream took too long")
    client.end()
    server.add_event("failed")
    server.end()

    assert collector.wait_for(lambda c: len(c.spans()) == 2, timeout_s=10)
    spans = {span.kind: span for span in collector.spans()}
    got_server = spans[trace_pb2.Span.SPAN_KIND_SERVER]
    got_client = spans[trace_pb2.Span.SPAN_KIND_CLIENT]
    assert got_server.trace_id.hex() == got_client.trace_id.hex() == TRACE_HEX
    assert got_server.parent_span_id.hex() == PARENT_HEX
    assert got_client.parent_span_id == got_server.span_id == server.context.span_id.to_bytes(8)
    assert got_client.name == "chat gpt-4o"
    assert _attributes(got_client) == {
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.response.finish_reasons": ["stop"],
        "error.type": "timeout",
    }
    assert [(event.name, len(event.attributes)) for event in got_client.events] == [("generate", 1)]
    assert got_client.events[0].attributes[0].value.int_value == 3
    assert got_client.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert got_client.status.message == "upstream took too long"
    assert got_server.status.code == trace_pb2.Status.STATUS_CODE_UNSET
    assert [event.name for event in got_server.events] == ["ingest", "failed"]
    assert got_server.start_time_unix_nano == server.start_ns
    assert got_server.end_time_unix_nano == server.end_ns
    assert got_server.flags & 0x100  # the exporter marks whether the parent was remote
    resource_spans = collector.traces[0].resource_spans[0]
    assert resource_spans.scope_spans[0].scope.name == "xrouter"
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "xrouter-test"
    assert collector.headers[0]["authorization"] == "Bearer sk-otlp-secret-123"
    assert collector.headers[0]["content-encoding"] == "gzip"
    assert processor.force_flush(5) and processor.exported == 2 and processor.failed == 0
    processor.shutdown(5)
    assert all("sk-otlp-secret" not in record.getMessage() for record in caplog.records)


def test_a_dead_collector_costs_the_request_path_nothing(
    collector: FakeOtlpCollector,
    otlp_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30")  # retries would outlast shutdown
    collector.stop()
    processor = BatchSpanProcessor(
        otlp_span_exporter(otlp_env), RESOURCE, schedule_delay_s=0.01, max_export_batch_size=100
    )
    tracer = Tracer(sampler_from_env({}), processor)
    spans = [tracer.start_span("chat", SpanKind.SERVER, None) for _ in range(1000)]
    assert all(isinstance(span, Span) for span in spans)

    started = time.perf_counter()
    for span in spans:
        span.end()  # each calls processor.on_end
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05, f"1,000 on_end calls took {elapsed * 1000:.1f} ms"

    started = time.perf_counter()
    processor.shutdown(1.0)
    assert time.perf_counter() - started < 1.5
    assert processor.exported == 0 and processor.failed >= 100
    warnings = [r for r in caplog.records if r.name.startswith("xrouter")]
    assert len(warnings) == 1 and "span export failed" in warnings[0].getMessage()
    assert all("sk-otlp-secret" not in record.getMessage() for record in caplog.records)


def test_export_resumes_when_the_collector_comes_back(
    collector: FakeOtlpCollector, otlp_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # give up before the first back-off
    processor = BatchSpanProcessor(otlp_span_exporter(otlp_env), RESOURCE, schedule_delay_s=0.02)
    tracer = Tracer(sampler_from_env({}), processor)
    collector.stop()
    tracer.start_span("lost", SpanKind.SERVER, None).end()
    assert processor.force_flush(10)
    assert processor.failed == 1
    collector.start()
    tracer.start_span("found", SpanKind.SERVER, None).end()
    assert collector.wait_for(lambda c: len(c.spans()) == 1, timeout_s=10)
    assert collector.spans()[0].name == "found"
    processor.shutdown(5)


class CapturingExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def test_our_otlp_encoding_equals_the_sdks() -> None:
    """The lean encoder must say exactly what OTel's `encode_spans` says about the same spans."""
    recorded = InMemorySpanProcessor()
    tracer = Tracer(sampler_from_env({}), recorded)
    inbound = parse_traceparent(f"00-{TRACE_HEX}-{PARENT_HEX}-01")
    server = tracer.start_span("chat gpt-4o", SpanKind.SERVER, inbound, {"http.route": "/v1/x"})
    server.set_attribute("http.response.status_code", 200)
    server.set_attribute("gen_ai.request.temperature", 0.7)
    server.set_attribute("negative", -3)
    server.set_attribute("big", 2**40)
    server.set_attribute("flag", False)
    server.set_attribute("unicode", "привет ✓")
    server.set_attribute("gen_ai.response.finish_reasons", ["stop", "length"])
    server.set_attribute("empty", [])
    server.add_event("ingest")
    server.add_event("generate", {"tokens": 3, "model": "m", "ok": True})
    client = tracer.start_span("chat", SpanKind.CLIENT, server.context)
    client.set_error("timeout", "upstream took too long")
    client.end()
    internal = tracer.start_span("x" * 300, SpanKind.INTERNAL, None)
    internal.set_error("cancelled")
    internal.end()
    server.end()

    capture = CapturingExporter()
    processor = BatchSpanProcessor(capture, RESOURCE, schedule_delay_s=60)
    for span in recorded.spans:
        processor.on_end(span)
    assert processor.force_flush(5)
    processor.shutdown(5)
    sdk = encode_spans(capture.spans)
    ours = ExportTraceServiceRequest.FromString(
        OtlpSpanEncoder(RESOURCE, "xrouter").encode(recorded.spans)
    )
    assert ours == sdk
    assert len(ours.resource_spans[0].scope_spans[0].spans) == 3


class BlockingExporter(SpanExporter):
    """Holds every export until released, like a collector that stopped answering."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.names: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        self.names.extend(span.name for span in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def test_a_full_queue_drops_and_counts_spans(caplog: pytest.LogCaptureFixture) -> None:
    exporter = BlockingExporter()
    processor = BatchSpanProcessor(
        exporter, RESOURCE, max_queue_size=10, max_export_batch_size=10, schedule_delay_s=60
    )
    tracer = Tracer(sampler_from_env({}), processor)
    for index in range(10):  # the tenth fills a batch and wakes the thread
        tracer.start_span(f"s{index}", SpanKind.SERVER, None).end()
    assert exporter.entered.wait(5)  # the thread now holds those ten in a stuck export
    for index in range(10, 35):
        tracer.start_span(f"s{index}", SpanKind.SERVER, None).end()
    assert processor.dropped == 15
    overflow = [r for r in caplog.records if "OTEL_BSP_MAX_QUEUE_SIZE" in r.getMessage()]
    assert len(overflow) == 1 and overflow[0].levelno == logging.WARNING  # rate-limited

    exporter.release.set()
    assert processor.force_flush(5)
    assert exporter.names == [f"s{index}" for index in range(20)]
    assert processor.exported == 20
    processor.shutdown(5)
    tracer.start_span("after", SpanKind.SERVER, None).end()
    assert processor.dropped == 16
    assert processor.force_flush(5) is True  # after shutdown: answers at once, nothing queued


def test_the_fake_collector_decodes_gzipped_metrics(collector: FakeOtlpCollector) -> None:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "gen_ai.client.token.usage"
    posted = urllib.request.Request(
        f"{collector.endpoint}/v1/metrics",
        data=gzip.compress(request.SerializeToString()),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    with urllib.request.urlopen(posted, timeout=5) as answer:
        assert answer.status == 200
    assert collector.wait_for(lambda c: len(c.metrics) == 1, timeout_s=5)
    got = collector.metrics[0].resource_metrics[0].scope_metrics[0].metrics[0]
    assert got.name == "gen_ai.client.token.usage"
    collector.stop()
    with pytest.raises(OSError):  # stopped means refused, the way a dead collector looks
        urllib.request.urlopen(posted, timeout=5)


def test_batch_settings_come_from_the_otel_bsp_variables() -> None:
    assert batch_settings_from_env({}) == {
        "schedule_delay_s": 5.0,
        "max_queue_size": 2048,
        "max_export_batch_size": 512,
        "export_timeout_s": 30.0,
    }
    settings = batch_settings_from_env(
        {
            "OTEL_BSP_SCHEDULE_DELAY": "250",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "50",
            "OTEL_BSP_EXPORT_TIMEOUT": "1500",
        }
    )
    assert settings["schedule_delay_s"] == 0.25 and settings["export_timeout_s"] == 1.5
    processor = BatchSpanProcessor(BlockingExporter(), RESOURCE, **settings)
    assert processor.dropped == 0


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "-5"}, "OTEL_BSP_SCHEDULE_DELAY"),
        ({"OTEL_BSP_EXPORT_TIMEOUT": "1.5s"}, "OTEL_BSP_EXPORT_TIMEOUT"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "0"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "10"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    ],
)
def test_a_bad_batch_setting_names_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        batch_settings_from_env(environ)


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_grpc_is_refused_with_the_way_out(variable: str) -> None:
    with pytest.raises(ValueError, match="gRPC is not included") as raised:
        otlp_span_exporter({variable: "grpc"})
    assert "4318" in str(raised.value)
