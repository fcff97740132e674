"""Issue 11: what telemetry costs the gateway.

Three gateway configurations, one worker each, relaying non-stream Chat Completions to the
fake OpenAI-compatible upstream (so every request has a server span and an upstream client
span when tracing is on):

- `off`: XR_METRICS=false, XR_ACCESS_LOG=false, no OTLP endpoint;
- `default`: nothing set: metrics (GET /metrics) and the access log, no traces (no endpoint);
- `full`: the default plus OTEL_EXPORTER_OTLP_ENDPOINT at bench/otlp_sink.py, every trace
  sampled (OTEL_TRACES_SAMPLER=always_on) and metrics pushed every 5 s.

The three gateways run side by side (all on CPU 0, idle when not asked) and are measured
interleaved, so that the machine's other load (it may be shared) falls on all three alike:
at c=1 one connection to each, requests cycling off, default, full (reversed every other
round); at c=32, short slices per gateway in rounds (off, default, full, off, default, full,
...).

The gateway writes its log (the access lines included) to a file, as a deployment that
redirects stdout/stderr does (bench/servers.py). Pinning (2 cores): the gateways on CPU 0
(one busy at a time); the fake upstream, the OTLP sink and the load generator on CPU 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import loadgen
import msgspec
import servers
import upstream_env
from loadgen import Recorder
from workload import chat_body

CONCURRENCY = 32
ROUNDS = 4
VARIANTS = ("off", "default", "full")
MODEL = f"{upstream_env.PROVIDER}/fake"
OTLP_SINK = "otlp_sink:create_app"
METRIC_INTERVAL_MS = 5000
# Inherited settings that would change what a variant means; removed from the environment the
# servers inherit, so `default` really is "nothing set".
INHERITED = ("XR_METRICS", "XR_ACCESS_LOG", "XR_LOG_LEVEL", "XR_LOG_FORMAT", "OTEL_")


@dataclass
class VariantResult:
    """One gateway configuration (one process): its share of each c=1 round and its c=32 slice
    of each round (server CPU filled in: its own process's), what it logged and, with tracing,
    what it says about its spans."""

    serial: list[Recorder] = field(default_factory=list)
    load: list[Recorder] = field(default_factory=list)
    background_cpu_s: float = 0.0  # threads other than the event loop's, over the c=32 slices
    other_cpu_s: float = 0.0  # fake upstream + sink over this variant's c=32 slices
    access_lines: int = 0
    log_bytes: int = 0
    spans: dict[str, float] = field(default_factory=dict)  # xrouter_spans_total by kind


@dataclass
class TelemetryResult:
    variants: dict[str, VariantResult] = field(default_factory=dict)
    sink_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    removed_env: list[str] = field(default_factory=list)
    errors: int = 0


def variant_env(variant: str, upstream_port: int, sink_port: int) -> dict[str, str]:
    """The gateway's environment for `variant` (on top of the provider `up`). Besides the
    suite's three, one part at a time, to split the cost when it is run by hand: `metrics`
    (no access log), `access_log` (no metrics), `traces` (neither, traces exported)."""
    env = upstream_env.gateway_env(upstream_port)
    otlp = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_METRIC_EXPORT_INTERVAL": str(METRIC_INTERVAL_MS),
    }
    no_metrics, no_log = {"XR_METRICS": "false"}, {"XR_ACCESS_LOG": "false"}
    parts = {
        "off": no_metrics | no_log,
        "default": {},
        "full": otlp,
        "metrics": no_log,
        "access_log": no_metrics,
        "traces": no_metrics | no_log | otlp,
    }
    return env | parts[variant]


def _clean_environment() -> list[str]:
    """Drop inherited telemetry settings from this process's environment (the servers inherit
    it); the names dropped, for the report."""
    names = sorted(k for k in os.environ if k.startswith(INHERITED))
    for name in names:
        del os.environ[name]
    return names


def _request(name: str, port: int) -> loadgen.Request:
    chat = "/v1/chat/completions"
    return loadgen.post_json(name, port, chat, chat_body(MODEL, False), stream=False)


async def _spans(port: int) -> dict[str, float]:
    """The gateway's own count of spans exported, dropped and failed (GET /metrics)."""
    sample = await loadgen.fetch(port, loadgen.get("metrics", port, "/metrics"))
    counts = {}
    for line in sample.body.decode().splitlines():
        if line.startswith("xrouter_spans_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('kind="', 1)[1].split('"', 1)[0]] = float(value)
    return counts


def _background_cpu_s(pid: int) -> float:
    """CPU seconds used so far by the threads of `pid` other than its main thread (the event
    loop's): the span export thread and the threads OTLP metric pushes run in."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name == str(pid):
            continue
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / servers.CLOCK_TICKS


def _access_lines(path: Path) -> tuple[int, int]:
    """(access lines, bytes) in a gateway's log file."""
    data = path.read_bytes()
    return data.count(b"xrouter.access"), len(data)


def _own(recorder: Recorder, name: str, elapsed_s: float, cpu_s: float) -> Recorder:
    """The samples of request `name` from an interleaved phase, filed under "json"."""
    own = Recorder(elapsed_s=elapsed_s, server_cpu_s=cpu_s)
    own.latency_ns["json"] = recorder.latency_ns.get(name, [])
    return own


async def _serial_round(
    gateways: dict[str, servers.Server], result: TelemetryResult, duration_s: float, index: int
) -> None:
    """c=1, one connection to each gateway, requests cycling through the variants; in reverse
    order every other round, so that no variant always follows the same one."""
    requests = [_request(v, g.port) for v, g in gateways.items()]
    if index % 2:
        requests.reverse()
    cpu = {v: g.cpu_s() for v, g in gateways.items()}
    any_port = requests[0].port  # each request names its gateway's port
    recorder = await loadgen.run_phase(any_port, requests, 1, duration_s)
    result.errors += recorder.errors
    for variant, gateway in gateways.items():
        own = _own(recorder, variant, recorder.elapsed_s, gateway.cpu_s() - cpu[variant])
        result.variants[variant].serial.append(own)


async def _load_slice(
    variant: str,
    gateway: servers.Server,
    others: list[servers.Server],
    result: TelemetryResult,
    duration_s: float,
) -> Recorder:
    """c=32 against one gateway for `duration_s`."""
    runs = result.variants[variant]
    cpu, other = gateway.cpu_s(), sum(s.cpu_s() for s in others)
    background = _background_cpu_s(gateway.process.pid)
    request = _request("json", gateway.port)
    load = await loadgen.run_phase(gateway.port, [request], CONCURRENCY, duration_s)
    load.server_cpu_s = gateway.cpu_s() - cpu
    runs.background_cpu_s += _background_cpu_s(gateway.process.pid) - background
    runs.other_cpu_s += sum(s.cpu_s() for s in others) - other
    result.errors += load.errors
    runs.load.append(load)
    return load


async def _measure(
    gateways: dict[str, servers.Server],
    others: list[servers.Server],
    result: TelemetryResult,
    duration_s: float,
    warmup_s: float,
) -> None:
    for variant, gateway in gateways.items():
        request = _request("json", gateway.port)
        sample = await loadgen.fetch(gateway.port, request)
        if sample.status != 200:
            raise RuntimeError(f"{variant} answered {sample.status}: {sample.body[:300]!r}")
        # c=32: the gateway's upstream connection pool reaches its size before measuring.
        await loadgen.run_phase(gateway.port, [request], CONCURRENCY, warmup_s)
    for index in range(ROUNDS):
        await _serial_round(gateways, result, duration_s, index)
        rates = []
        for variant in gateways:
            load = await _load_slice(variant, gateways[variant], others, result, duration_s / 2)
            rates.append(f"{variant} {load.rate('json'):.0f}")
        p50s = [f"{v} {serial_p50(result.variants[v].serial[-1]):.3f}" for v in gateways]
        print(
            f"telemetry round {index + 1}: c=1 p50 ms {', '.join(p50s)}; "
            f"c={CONCURRENCY} req/s {', '.join(rates)}",
            flush=True,
        )
    for variant, gateway in gateways.items():  # empty without tracing
        result.variants[variant].spans = await _spans(gateway.port)


async def measure(
    gateway_cpus: set[int] | None,
    other_cpus: set[int] | None,
    src: Path | None,
    duration_s: float,
    warmup_s: float,
    variants: tuple[str, ...] = VARIANTS,
) -> TelemetryResult:
    """Start the upstream, the sink and one gateway per variant (see `variant_env`); ROUNDS
    interleaved rounds."""
    result = TelemetryResult(removed_env=_clean_environment())
    result.variants = {v: VariantResult() for v in variants}
    upstream = servers.start("uvicorn", upstream_env.FAKE_UPSTREAM, cpus=other_cpus)
    sink = servers.start("uvicorn", OTLP_SINK, cpus=other_cpus)
    gateways: dict[str, servers.Server] = {}
    try:
        for variant in result.variants:
            env = variant_env(variant, upstream.port, sink.port)
            gateways[variant] = servers.start(
                "xrouter", servers.GATEWAY, env=env, cpus=gateway_cpus, src=src
            )
        await _measure(gateways, [upstream, sink], result, duration_s, warmup_s)
        stats = await loadgen.fetch(sink.port, loadgen.get("stats", sink.port, "/stats"))
        result.sink_stats = msgspec.json.decode(stats.body)
    finally:
        for variant, gateway in gateways.items():
            gateway.stop(keep_log=True)  # kept if something failed, to read
            lines, size = _access_lines(gateway.log_path)
            result.variants[variant].access_lines = lines
            result.variants[variant].log_bytes = size
        sink.stop()
        upstream.stop()
    for gateway in gateways.values():
        gateway.log_path.unlink()
    return result


def serial_p50(recorder: Recorder) -> float:
    return loadgen.percentile_ms(recorder.latency_ns.get("json", []), 50)
