"""The metrics library of issue 11 (items 2-3) through its public API: instruments and
snapshots, the Prometheus exposition (checked as exact text and by a strict parser of our own,
so a malformed line fails), the cardinality bound, merging workers, the worker files (a live
and a dead pid) and the conversion to OpenTelemetry's MetricsData as the OTLP encoder sees it."""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource

from xrouter.adapters.telemetry.metric_files import MetricFiles
from xrouter.adapters.telemetry.metrics import (
    MetricFamily,
    MetricsRegistry,
    MetricsSnapshot,
    Series,
    merge,
)
from xrouter.adapters.telemetry.otlp_metrics import to_metrics_data
from xrouter.adapters.telemetry.prometheus import PROMETHEUS_CONTENT_TYPE, render_prometheus

GENAI = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")
ROUTE = ("http.route", "http.response.status_code")


# --- a strict parser of the text format 0.0.4 --------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)$")
_HELP = re.compile(rf"^# HELP ({_NAME}) ((?:[^\\\n]|\\\\|\\n)*)$")
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
_GO_FLOAT = re.compile(r"^(?:[+-]?Inf|NaN|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$")


@dataclass
class Family:
    kind: str
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), text)


def parse_exposition(body: bytes) -> dict[str, Family]:
    """Every family by name; raises AssertionError on any line the format does not allow, a
    sample before its TYPE or outside its family, a repeated TYPE, or a histogram whose buckets
    are not cumulative, do not end at +Inf or disagree with _count."""
    text = body.decode("utf-8")
    assert text.endswith("\n") and "\r" not in text
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    current: str | None = None
    for line in text.split("\n")[:-1]:
        if match := _HELP.match(line):
            helps[match.group(1)] = _unescape(match.group(2))
            continue
        if match := _TYPE.match(line):
            name = match.group(1)
            assert name not in families, f"second TYPE for {name}"
            families[name] = Family(match.group(2), helps.get(name, ""))
            current = name
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"malformed line: {line!r}"
        sample_name, value = match.group(1), match.group(match.lastindex or 0)
        assert _GO_FLOAT.match(value), f"bad value in {line!r}"
        labels_text = match.group(2) or ""
        labels = {m.group(1): _unescape(m.group(2)) for m in re.finditer(_LABEL, labels_text)}
        assert current is not None, f"sample before any TYPE: {line!r}"
        family = families[current]
        allowed = {current}
        if family.kind == "histogram":
            allowed = {current + "_bucket", current + "_sum", current + "_count"}
        assert sample_name in allowed, f"{sample_name} outside family {current}"
        family.samples.append((sample_name, labels, float(value)))
    for name, family in families.items():
        if family.kind == "histogram":
            _check_histogram(name, family)
    return families


def _check_histogram(name: str, family: Family) -> None:
    by_series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for sample_name, labels, value in family.samples:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        if sample_name.endswith("_bucket"):
            by_series.setdefault(key, []).append((float(labels["le"]), value))
        elif sample_name.endswith("_count"):
            counts[key] = value
    for key, buckets in by_series.items():
        assert buckets[-1][0] == math.inf, f"{name}: last bucket is not +Inf"
        assert [b for b, _ in buckets] == sorted(b for b, _ in buckets)
        assert [c for _, c in buckets] == sorted(c for _, c in buckets), "not cumulative"
        assert counts[key] == buckets[-1][1], f"{name}: _count differs from the +Inf bucket"


def sample(families: dict[str, Family], name: str, **labels: str) -> float:
    for family in families.values():
        for sample_name, sample_labels, value in family.samples:
            if sample_name == name and sample_labels == labels:
                return value
    raise AssertionError(f"no sample {name} {labels}")


# --- a small registry ------------------------------------------------------------------


def small_registry(pid: int = 1234, in_flight: float = 2) -> MetricsRegistry:
    registry = MetricsRegistry(pid=pid)
    requests = registry.counter("xrouter.requests", "Requests served.", "{request}", ROUTE)
    duration = registry.histogram(
        "gen_ai.client.operation.duration", "Upstream call time.", "s", GENAI, (0.1, 1.0)
    )
    registry.observe(
        "xrouter.requests.in_flight",
        "Requests being served.",
        "{request}",
        "gauge",
        ("gen_ai.provider.name",),
        lambda: [(("openai",), in_flight)],
    )
    requests.add(1, ("/v1/chat/completions", "200"))
    requests.add(1, ("/v1/chat/completions", "200"))
    requests.add(1, ("/v1/responses", "502"))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        duration.record(seconds, ("chat", "openai", "gpt-4o"))
    return registry


def test_a_known_workload_is_in_the_snapshot() -> None:
    registry = MetricsRegistry(pid=42)
    tokens = registry.histogram(
        "gen_ai.client.token.usage",
        "Tokens used.",
        "{token}",
        (*GENAI, "gen_ai.token.type"),
        (1, 4, 16, 64),
    )
    requests = registry.counter("xrouter.requests", "Requests.", "{request}", ROUTE)
    for count in (3, 4, 5, 100):
        tokens.record(count, ("chat", "openai", "gpt-4o", "input"))
    tokens.record(10, ("chat", "openai", "gpt-4o", "output"))
    for _ in range(7):
        requests.add(1, ("/v1/chat/completions", "200"))
    requests.add(2.5, ("/v1/responses", "429"))

    snapshot = registry.snapshot()

    assert snapshot.pid == 42
    assert abs(snapshot.taken_ns - time.time_ns()) < 10**9
    families = {family.name: family for family in snapshot.families}
    usage = families["gen_ai.client.token.usage"]
    assert usage.kind == "histogram" and usage.bounds == (1, 4, 16, 64)
    by_labels = {series.labels: series for series in usage.series}
    inputs = by_labels[("chat", "openai", "gpt-4o", "input")]
    # 3 and 4 in (1, 4], 5 in (4, 16], 100 above every bound.
    assert inputs.bucket_counts == (0, 2, 1, 0, 1)
    assert inputs.sum == 112 and inputs.count == 4
    assert by_labels[("chat", "openai", "gpt-4o", "output")].bucket_counts == (0, 0, 1, 0, 0)
    counted = {series.labels: series.value for series in families["xrouter.requests"].series}
    assert counted == {("/v1/chat/completions", "200"): 7, ("/v1/responses", "429"): 2.5}
    # The snapshot is what worker files carry: it survives MessagePack as it is.
    encoded = msgspec.msgpack.encode(snapshot)
    assert msgspec.msgpack.decode(encoded, type=MetricsSnapshot) == snapshot


def test_the_prometheus_text_of_a_small_registry() -> None:
    registry = small_registry()
    registry.observe("xrouter.cache.hit", "Share of hits.", "1", "gauge", (), lambda: [((), 0.25)])
    registry.observe(
        "xrouter.store.failures", "Store failures.", "{failure}", "counter", (), lambda: [((), 3)]
    )

    body = render_prometheus(registry.snapshot())

    assert PROMETHEUS_CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert body.decode() == (
        "# HELP xrouter_requests_total Requests served.\n"
        "# TYPE xrouter_requests_total counter\n"
        'xrouter_requests_total{http_route="/v1/chat/completions",'
        'http_response_status_code="200"} 2\n'
        'xrouter_requests_total{http_route="/v1/responses",http_response_status_code="502"} 1\n'
        "# HELP gen_ai_client_operation_duration_seconds Upstream call time.\n"
        "# TYPE gen_ai_client_operation_duration_seconds histogram\n"
        'gen_ai_client_operation_duration_seconds_bucket{gen_ai_operation_name="chat",'
        'gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o",le="0.1"} 2\n'
        'gen_ai_client_operation_duration_seconds_bucket{gen_ai_operation_name="chat",'
        'gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o",le="1"} 3\n'
        'gen_ai_client_operation_duration_seconds_bucket{gen_ai_operation_name="chat",'
        'gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o",le="+Inf"} 4\n'
        'gen_ai_client_operation_duration_seconds_sum{gen_ai_operation_name="chat",'
        'gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o"} 3.65\n'
        'gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name="chat",'
        'gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o"} 4\n'
        "# HELP xrouter_requests_in_flight Requests being served.\n"
        "# TYPE xrouter_requests_in_flight gauge\n"
        'xrouter_requests_in_flight{gen_ai_provider_name="openai"} 2\n'
        "# HELP xrouter_cache_hit_ratio Share of hits.\n"
        "# TYPE xrouter_cache_hit_ratio gauge\n"
        "xrouter_cache_hit_ratio 0.25\n"
        "# HELP xrouter_store_failures_total Store failures.\n"
        "# TYPE xrouter_store_failures_total counter\n"
        "xrouter_store_failures_total 3\n"
    )
    families = parse_exposition(body)
    assert families["gen_ai_client_operation_duration_seconds"].kind == "histogram"


def test_names_units_and_label_values_are_escaped_and_sanitised() -> None:
    registry = MetricsRegistry()
    odd = registry.counter(
        "xrouter.odd-name..here",
        'Help with a \\ and a\nnewline and "quotes".',
        "By/s",
        ("gen_ai.request.model", "9lives", "__reserved"),
    )
    model = 'evil"model\\with\nnewline} x="1"'
    odd.add(5, (model, "a", "b"))
    size = registry.histogram("xrouter.body.size", "Sizes.", "By", (), (1024.0, 1.5e6))
    size.record(2048, ())

    body = render_prometheus(registry.snapshot())
    families = parse_exposition(body)

    odd_family = families["xrouter_odd_name_here_bytes_per_second_total"]
    assert odd_family.help == 'Help with a \\ and a\nnewline and "quotes".'
    assert odd_family.samples == [
        (
            "xrouter_odd_name_here_bytes_per_second_total",
            {"gen_ai_request_model": model, "key_9lives": "a", "key__reserved": "b"},
            5.0,
        )
    ]
    assert sample(families, "xrouter_body_size_bytes_bucket", le="1024") == 0
    assert sample(families, "xrouter_body_size_bytes_bucket", le="1500000") == 1
    assert sample(families, "xrouter_body_size_bytes_count") == 1


def test_the_strict_parser_rejects_a_malformed_exposition() -> None:
    """The parser above is what makes the other tests' checks strict: show it refuses."""
    good = b'# TYPE a counter\na{x="1"} 1\n'
    parse_exposition(good)
    for bad in (
        b'# TYPE a counter\na{x="1} 1\n',  # unterminated value
        b'# TYPE a counter\na{x="a\nb"} 1\n',  # raw newline in a value
        b"# TYPE a counter\na one\n",  # not a number
        b"# TYPE a counter\nb 1\n",  # sample outside its family
        b"a 1\n",  # no TYPE
        b'# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n',
    ):
        with pytest.raises(AssertionError):
            parse_exposition(bad)


def test_label_sets_past_the_limit_go_to_one_overflow_series(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = MetricsRegistry(max_series=4)
    requests = registry.counter("xrouter.requests", "Requests.", "{request}", ("model",))
    duration = registry.histogram("xrouter.duration", "Time.", "s", ("model",), (1.0,))

    with caplog.at_level(logging.WARNING, logger="xrouter.metrics"):
        for index in range(50):
            requests.add(1, (f"made-up-{index}",))
            duration.record(0.5, (f"made-up-{index}",))
        requests.add(1, ("made-up-0",))  # a series seen before the limit still counts alone

    families = {family.name: family for family in registry.snapshot().families}
    counted = {series.labels: series.value for series in families["xrouter.requests"].series}
    assert counted == {
        ("made-up-0",): 2,
        ("made-up-1",): 1,
        ("made-up-2",): 1,
        ("_other",): 47,
    }
    assert requests.overflowed == 47
    histogram = {series.labels: series for series in families["xrouter.duration"].series}
    assert len(histogram) == 4 and histogram[("_other",)].count == 47
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per instrument, not per measurement
    assert "xrouter.requests" in warnings[0] and "_other" in warnings[0]
    families_text = parse_exposition(render_prometheus(registry.snapshot()))
    assert sample(families_text, "xrouter_requests_total", model="_other") == 47


def test_a_measurement_with_the_wrong_labels_is_refused_at_once() -> None:
    registry = MetricsRegistry()
    requests = registry.counter("xrouter.requests", "Requests.", "{request}", ROUTE)
    with pytest.raises(ValueError, match=r"2 label values"):
        requests.add(1, ("/v1/responses",))
    with pytest.raises(TypeError, match="must be str"):
        requests.add(1, ("/v1/responses", 200))  # type: ignore[arg-type]
    assert registry.counter("xrouter.requests", "Requests.", "{request}", ROUTE) is requests
    with pytest.raises(ValueError, match="already registered"):
        registry.counter("xrouter.requests", "Requests.", "{request}", ("other",))
    with pytest.raises(ValueError, match="increasing"):
        registry.histogram("xrouter.bad", "Bad.", "s", (), (1.0, 0.5))
    assert registry.snapshot().families[0].series == ()


def test_a_failing_callback_loses_only_its_own_family(caplog: pytest.LogCaptureFixture) -> None:
    registry = small_registry()

    def broken() -> list[tuple[tuple[str, ...], float]]:
        raise RuntimeError("store is gone")

    registry.observe("xrouter.broken", "Broken.", "1", "gauge", (), broken)
    with caplog.at_level(logging.ERROR, logger="xrouter.metrics"):
        families = parse_exposition(render_prometheus(registry.snapshot()))
    assert families["xrouter_broken_ratio"].samples == []
    assert sample(families, "xrouter_requests_in_flight", gen_ai_provider_name="openai") == 2
    assert "xrouter.broken" in caplog.text


def test_merge_adds_two_workers_series_by_series() -> None:
    first = small_registry(pid=1, in_flight=2).snapshot()
    other = small_registry(pid=2, in_flight=3)
    other.counter("xrouter.requests", "Requests served.", "{request}", ROUTE).add(
        4, ("/v1/models", "200")
    )

    merged = merge([first, other.snapshot()])

    assert merged.pid == 1
    families = parse_exposition(render_prometheus(merged))
    route = "/v1/chat/completions"
    assert (
        sample(
            families, "xrouter_requests_total", http_route=route, http_response_status_code="200"
        )
        == 4
    )
    assert (
        sample(
            families,
            "xrouter_requests_total",
            http_route="/v1/models",
            http_response_status_code="200",
        )
        == 4
    )
    model = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "gpt-4o",
    }
    name = "gen_ai_client_operation_duration_seconds"
    assert sample(families, f"{name}_bucket", le="0.1", **model) == 4
    assert sample(families, f"{name}_bucket", le="+Inf", **model) == 8
    assert sample(families, f"{name}_count", **model) == 8
    assert sample(families, f"{name}_sum", **model) == pytest.approx(7.3)
    assert sample(families, "xrouter_requests_in_flight", gen_ai_provider_name="openai") == 5


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    assert process.wait(timeout=30) == 0
    return process.pid


def test_metric_files_keep_a_dead_workers_counts_but_not_its_gauges(tmp_path: Path) -> None:
    directory = str(tmp_path / "metrics")
    live_pid, dead_pid, reader_pid = os.getpid(), _dead_pid(), os.getppid()
    MetricFiles(directory, pid=live_pid).write(small_registry(live_pid, in_flight=2).snapshot())
    MetricFiles(directory, pid=dead_pid).write(small_registry(dead_pid, in_flight=7).snapshot())
    reader = MetricFiles(directory, pid=reader_pid)
    reader.write(small_registry(reader_pid, in_flight=100).snapshot())  # its own: skipped
    (tmp_path / "metrics" / "worker-99999999.msgpack").write_bytes(b"\x93\x01garbage")
    (tmp_path / "metrics" / "notes.txt").write_text("not a worker file")

    others = reader.others()

    assert sorted(snapshot.pid for snapshot in others) == sorted([live_pid, dead_pid])
    families = parse_exposition(render_prometheus(merge(others)))
    # Both workers' requests count; only the live worker's in-flight requests do.
    assert (
        sample(
            families,
            "xrouter_requests_total",
            http_route="/v1/responses",
            http_response_status_code="502",
        )
        == 2
    )
    assert (
        sample(
            families,
            "gen_ai_client_operation_duration_seconds_count",
            gen_ai_operation_name="chat",
            gen_ai_provider_name="openai",
            gen_ai_request_model="gpt-4o",
        )
        == 8
    )
    assert sample(families, "xrouter_requests_in_flight", gen_ai_provider_name="openai") == 2
    assert not [name for name in os.listdir(directory) if name.endswith(".tmp")]


def test_a_dead_workers_file_is_removed_after_a_day(tmp_path: Path) -> None:
    directory = str(tmp_path)
    dead_pid = _dead_pid()
    dead = MetricFiles(directory, pid=dead_pid)
    dead.write(small_registry(dead_pid).snapshot())
    reader = MetricFiles(directory, pid=os.getppid())
    assert [s.pid for s in reader.others()] == [dead_pid]  # recent: kept

    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(dead.path, (two_days_ago, two_days_ago))
    reader.others()

    assert not os.path.exists(dead.path)
    assert reader.others() == []


def test_a_cut_short_or_misshapen_file_is_skipped(tmp_path: Path) -> None:
    directory = str(tmp_path)
    encoded = msgspec.msgpack.encode(small_registry(os.getpid()).snapshot())
    (tmp_path / f"worker-{os.getpid()}.msgpack").write_bytes(encoded[: len(encoded) // 2])
    misshapen = MetricsSnapshot(
        os.getpid(),
        time.time_ns(),
        (
            MetricFamily(
                "x", "", "s", "histogram", ("a",), (Series(("v",), bucket_counts=(1,)),), (1.0,)
            ),
        ),
    )
    (tmp_path / f"worker-{os.getppid()}.msgpack").write_bytes(msgspec.msgpack.encode(misshapen))

    assert MetricFiles(directory, pid=1).others() == []


def test_clear_empties_the_directory_of_worker_files(tmp_path: Path) -> None:
    files = MetricFiles(str(tmp_path), pid=os.getpid())
    files.write(small_registry().snapshot())
    (tmp_path / "keep.txt").write_text("operator's file")
    files.clear()
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_the_otlp_conversion_encodes_as_an_exporter_would_send_it() -> None:
    snapshot = small_registry().snapshot()
    resource = Resource.create({"service.name": "xrouter"})

    data = to_metrics_data(snapshot, resource, "xrouter", start_ns=1_000, now_ns=2_000)
    request = encode_metrics(data)

    (resource_metrics,) = request.resource_metrics
    service = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
    assert service["service.name"] == "xrouter"
    (scope,) = resource_metrics.scope_metrics
    assert scope.scope.name == "xrouter"
    metrics = {metric.name: metric for metric in scope.metrics}
    assert set(metrics) == {
        "xrouter.requests",
        "gen_ai.client.operation.duration",
        "xrouter.requests.in_flight",
    }
    requests = metrics["xrouter.requests"]
    assert requests.unit == "{request}" and requests.sum.is_monotonic
    assert requests.sum.aggregation_temporality == 2  # CUMULATIVE
    points = {
        tuple(a.value.string_value for a in point.attributes): point
        for point in requests.sum.data_points
    }
    ok = points[("/v1/chat/completions", "200")]
    assert ok.as_int == 2 and ok.start_time_unix_nano == 1_000 and ok.time_unix_nano == 2_000
    assert ok.attributes[0].key == "http.route"
    duration = metrics["gen_ai.client.operation.duration"]
    assert duration.histogram.aggregation_temporality == 2
    (point,) = duration.histogram.data_points
    assert list(point.explicit_bounds) == [0.1, 1.0]
    assert list(point.bucket_counts) == [2, 1, 1] and point.count == 4
    assert point.sum == pytest.approx(3.65)
    assert not point.HasField("min") and not point.HasField("max")
    attributes = {a.key: a.value.string_value for a in point.attributes}
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    (gauge_point,) = metrics["xrouter.requests.in_flight"].gauge.data_points
    assert gauge_point.as_int == 2 and gauge_point.time_unix_nano == 2_000
