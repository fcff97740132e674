"""The markdown for issue 11: what telemetry costs (off, default, full tracing), with the
targets: added p50 at c=1 <= 0.1 ms and c=32 throughput >= 90 % of telemetry off."""

from __future__ import annotations

import math
import statistics

from loadgen import Recorder, merged, percentile_ms
from telemetry_bench import (
    CONCURRENCY,
    METRIC_INTERVAL_MS,
    ROUNDS,
    VARIANTS,
    TelemetryResult,
    VariantResult,
)

NAME = "telemetry"
ADDED_P50_TARGET_MS = 0.1
THROUGHPUT_RATIO_TARGET = 0.9
COMPARED = ("default", "full")


def _p(recorder: Recorder, q: float) -> float:
    return percentile_ms(recorder.latency_ns.get("json", []), q)


def _serial(runs: VariantResult) -> Recorder:
    return merged(runs.serial)


def _load(runs: VariantResult) -> Recorder:
    return merged(runs.load)


def added_p50_ms(result: TelemetryResult, variant: str) -> float:
    """The variant's c=1 p50 over all its samples minus the same for `off` (the samples are
    interleaved request by request, so the two saw the same machine)."""
    return _p(_serial(result.variants[variant]), 50) - _p(_serial(result.variants["off"]), 50)


def throughput_ratio(result: TelemetryResult, variant: str) -> float:
    """The variant's c=32 req/s over all its slices, over the same for `off`."""
    off = _load(result.variants["off"]).rate("json")
    return _load(result.variants[variant]).rate("json") / off


def _round_spread(result: TelemetryResult, variant: str) -> tuple[str, str]:
    """Per round: the added p50 and the throughput ratio, as "min .. max" texts."""
    runs, off = result.variants[variant], result.variants["off"]
    added = [_p(a, 50) - _p(b, 50) for a, b in zip(runs.serial, off.serial, strict=True)]
    ratios = [a.rate("json") / b.rate("json") for a, b in zip(runs.load, off.load, strict=True)]
    return (
        f"{min(added):+.3f} .. {max(added):+.3f} ms",
        f"{min(ratios):.0%} .. {max(ratios):.0%}",
    )


def targets(result: TelemetryResult) -> list[str]:
    lines = []
    for variant in COMPARED:
        added, ratio = added_p50_ms(result, variant), throughput_ratio(result, variant)
        added_met = "met" if added <= ADDED_P50_TARGET_MS else "NOT met"
        ratio_met = "met" if ratio >= THROUGHPUT_RATIO_TARGET else "NOT met"
        added_range, ratio_range = _round_spread(result, variant)
        lines.append(
            f"`{variant}` against `off`: added p50 at c=1 {added:+.3f} ms (per round "
            f"{added_range}; target <= {ADDED_P50_TARGET_MS} ms: **{added_met}**); throughput "
            f"at c={CONCURRENCY} {ratio:.0%} of `off` (per round {ratio_range}; target >= "
            f"{THROUGHPUT_RATIO_TARGET:.0%}: **{ratio_met}**)"
        )
    return lines


def _per_request_ms(seconds: float, recorder: Recorder) -> float:
    count = recorder.count("json")
    return seconds * 1000 / count if count else math.nan


def _variant_rows(result: TelemetryResult) -> list[str]:
    off_cpu = _load(result.variants["off"]).cpu_ms_per_request()
    rows = [
        f"| variant | c=1 p50 / p99 ms | added c=1 p50 ms | c={CONCURRENCY} req/s | of `off` "
        f"| c={CONCURRENCY} p50 / p99 ms | CPU ms / req, c=1 | CPU ms / req, c={CONCURRENCY} "
        "| added CPU ms / req | of which background | access lines | spans exported / "
        "dropped / failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    off_p50 = _p(_serial(result.variants["off"]), 50)
    off_rate = _load(result.variants["off"]).rate("json")
    for variant in VARIANTS:
        runs = result.variants[variant]
        serial, load = _serial(runs), _load(runs)
        spans = runs.spans
        span_text = (
            " / ".join(f"{spans.get(k, 0):.0f}" for k in ("exported", "dropped", "failed"))
            if spans
            else "-"
        )
        rows.append(
            f"| {variant} | {_p(serial, 50):.3f} / {_p(serial, 99):.3f} "
            f"| {_p(serial, 50) - off_p50:+.3f} | {load.rate('json'):.0f} "
            f"| {load.rate('json') / off_rate:.0%} | {_p(load, 50):.2f} / {_p(load, 99):.2f} "
            f"| {serial.cpu_ms_per_request():.3f} | {load.cpu_ms_per_request():.3f} "
            f"| {load.cpu_ms_per_request() - off_cpu:+.3f} "
            f"| {_per_request_ms(runs.background_cpu_s, load):.3f} | {runs.access_lines} "
            f"| {span_text} |"
        )
    return rows


def _round_rows(result: TelemetryResult) -> list[str]:
    header = " / ".join(VARIANTS)
    rows = [
        f"| round | c=1 p50 ms: {header} | c={CONCURRENCY} req/s: {header} |",
        "|---|---|---|",
    ]
    for index in range(ROUNDS):
        p50s = " / ".join(f"{_p(result.variants[v].serial[index], 50):.3f}" for v in VARIANTS)
        rates = " / ".join(f"{result.variants[v].load[index].rate('json'):.0f}" for v in VARIANTS)
        rows.append(f"| {index + 1} | {p50s} | {rates} |")
    return rows


def render(result: TelemetryResult, lines: list[str]) -> list[str]:
    posts = result.sink_stats.get("posts", {})
    sizes = result.sink_stats.get("bytes", {})
    removed = ", ".join(result.removed_env) if result.removed_env else "none"
    upstream_busy = statistics.fmean(
        r.other_cpu_s / sum(x.elapsed_s for x in r.load) for r in result.variants.values()
    )
    return [
        "## Telemetry on against off (issue 11)",
        "",
        *lines,
        "- Requests: non-stream `POST /v1/chat/completions`, model `up/fake`, relayed through "
        "the OpenAI-compatible provider to bench/fake_upstream.py (so a traced request has a "
        "server span and an upstream client span).",
        "- Variants, one gateway process each, all three running side by side on CPU 0: `off` "
        "XR_METRICS=false, XR_ACCESS_LOG=false, no OTLP endpoint; `default` nothing set "
        "(metrics and the access log on; no traces, as there is no endpoint); `full` the "
        "default plus OTEL_EXPORTER_OTLP_ENDPOINT at bench/otlp_sink.py, "
        "OTEL_TRACES_SAMPLER=always_on (100 %), "
        f"OTEL_METRIC_EXPORT_INTERVAL={METRIC_INTERVAL_MS}. Telemetry settings inherited from "
        f"the shell and removed first: {removed}.",
        "- Interleaved, so that other load on a shared machine falls on the three alike: at "
        "c=1 one keep-alive connection to each gateway, requests cycling off, default, full "
        "(full, default, off every other round); "
        f"at c={CONCURRENCY} one slice per gateway per round (off, default, full), "
        f"{ROUNDS} rounds.",
        "- Each gateway's stdout and stderr go to a file (bench/servers.py), so the access lines "
        "are formatted and written as in a deployment that redirects its log to a file; "
        '"access lines" counts them in that file (warm-up included).',
        "- bench/otlp_sink.py answers every OTLP POST with 200 and an empty body without "
        f"decoding it; it received {posts.get('/v1/traces', 0)} trace exports "
        f"({sizes.get('/v1/traces', 0) / 1e6:.1f} MB) and {posts.get('/v1/metrics', 0)} "
        f"metric exports ({sizes.get('/v1/metrics', 0) / 1e3:.0f} kB). The fake upstream and "
        f"the sink together used {upstream_busy:.0%} of a core during the c={CONCURRENCY} "
        "slices.",
        "- CPU: the gateway process's user + system time (`/proc`) over its share of the phase, "
        'per request; "background" is the part used by threads other than the event loop\'s '
        "(span export, OTLP metric pushes). Spans: the gateway's own `xrouter_spans_total` "
        "after the run.",
        "",
        *_variant_rows(result),
        "",
        "Per round (c=1 p50 of each variant's share of the round; c=32 req/s of its slice):",
        "",
        *_round_rows(result),
        "",
        *(f"- {line}" for line in targets(result)),
    ]
