"""Figures from the benchmark runs, and the markdown report."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import sections
from loadgen import Recorder, percentile_ms

BEGIN, END = sections.markers("")
PACKAGES = ("litestar", "msgspec", "uvicorn", "uvloop", "httptools", "granian")
STARTUP_TARGET_S = 1.5
OVERHEAD_TARGET_MS = 1.0
PRODUCT = "xrouter serve"
"""The column of the gateway as the product runs it (servers.py, server kind `xrouter`)."""
BASELINE_OF = {PRODUCT: "uvicorn"}
"""Which baseline a gateway column is compared with, where it is not its own server's: the
baseline stands for an upstream, which runs on stock uvicorn, not on xrouter's server."""


@dataclass(frozen=True, slots=True)
class Run:
    server: str  # PRODUCT (`xrouter serve`) | uvicorn (stock) | granian
    app: str  # gateway | baseline | gateway, no gc.freeze


@dataclass(frozen=True, slots=True)
class RunResult:
    run: Run
    startup_s: float
    serial: Recorder  # c=1, health / json / sse interleaved
    json_load: Recorder  # c=32 JSON
    sse_load: Recorder  # c=32 SSE
    warmup_errors: int
    rss_mib: float
    rss_tree_mib: float

    def p(self, recorder: Recorder, name: str, q: float, ttfb: bool = False) -> float:
        samples = (recorder.ttfb_ns if ttfb else recorder.latency_ns).get(name, [])
        return percentile_ms(samples, q)

    @property
    def errors(self) -> int:
        phases = (self.serial, self.json_load, self.sse_load)
        return self.warmup_errors + sum(r.errors for r in phases)

    @property
    def overhead_ms(self) -> float:
        """JSON p50 minus /health p50, at c=1."""
        return self.p(self.serial, "json", 50) - self.p(self.serial, "health", 50)


@dataclass(frozen=True, slots=True)
class Report:
    command: str
    duration_s: float
    warmup_s: float
    pinned: bool
    input_text: str
    json_bytes: int
    sse_bytes: int
    sse_frames: int
    concurrency: int
    product_startup_s: list[float]
    cached_startup_s: list[float]  # the same, with a warm bytecode cache
    bytecode_env: str  # PYTHONDONTWRITEBYTECODE as the run found it
    results: list[RunResult]
    source: str  # which xrouter code was measured
    loadavg: tuple[str, str]  # /proc/loadavg before and after the run

    def find(self, server: str, app: str) -> RunResult | None:
        for result in self.results:
            if result.run == Run(server, app):
                return result
        return None

    @property
    def servers(self) -> list[str]:
        return list(dict.fromkeys(r.run.server for r in self.results))


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _pair(a: float, b: float) -> str:
    return f"{_ms(a)} / {_ms(b)}"


Metric = tuple[str, Callable[[RunResult], str]]


def _pp(phase: str, name: str, ttfb: bool = False) -> Callable[[RunResult], str]:
    """A column getter: p50 / p99 of `name` in the `phase` recorder."""

    def get(r: RunResult) -> str:
        recorder: Recorder = getattr(r, phase)
        return _pair(r.p(recorder, name, 50, ttfb), r.p(recorder, name, 99, ttfb))

    return get


def _metrics(c: int) -> list[Metric]:
    pp = _pp
    return [
        ("process start to first 200 on /health (s)", lambda r: f"{r.startup_s:.3f}"),
        ("GET /health, c=1, p50 / p99 (ms)", pp("serial", "health")),
        ("JSON, c=1, p50 / p99 (ms)", pp("serial", "json")),
        ("JSON p50 minus /health p50, c=1 (ms)", lambda r: _ms(r.overhead_ms)),
        ("SSE whole stream, c=1, p50 / p99 (ms)", pp("serial", "sse")),
        ("SSE first byte, c=1, p50 / p99 (ms)", pp("serial", "sse", ttfb=True)),
        (f"JSON, c={c}, req/s", lambda r: f"{r.json_load.rate('json'):.0f}"),
        (f"JSON, c={c}, p50 / p99 (ms)", pp("json_load", "json")),
        (f"SSE, c={c}, streams/s", lambda r: f"{r.sse_load.rate('sse'):.0f}"),
        (f"SSE first byte, c={c}, p50 / p99 (ms)", pp("sse_load", "sse", ttfb=True)),
        (f"server CPU per request, c={c}, JSON / SSE (ms)", _cpu),
        (f"load generator CPU busy, c={c}, JSON / SSE", _client_busy),
        ("peak RSS, app process / process tree (MiB)", lambda r: _pair_mib(r)),
        ("requests failed", lambda r: str(r.errors)),
    ]


def _cpu(r: RunResult) -> str:
    return _pair(r.json_load.cpu_ms_per_request(), r.sse_load.cpu_ms_per_request())


def _client_busy(r: RunResult) -> str:
    return f"{r.json_load.client_busy:.0%} / {r.sse_load.client_busy:.0%}"


def _pair_mib(r: RunResult) -> str:
    return f"{r.rss_mib:.1f} / {r.rss_tree_mib:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _metric_table(columns: list[tuple[str, RunResult]], c: int) -> list[str]:
    header = ["", *(name for name, _ in columns)]
    rows = [[label, *(get(r) for _, r in columns)] for label, get in _metrics(c)]
    return _table(header, rows)


def _ratio_table(report: Report) -> list[str]:
    def ratio(gateway: float, baseline: float) -> str:
        return f"{gateway / baseline:.2f}x" if baseline else "n/a"

    rows: list[list[str]] = []
    for server in report.servers:
        baseline = BASELINE_OF.get(server, server)
        g, b = report.find(server, "gateway"), report.find(baseline, "baseline")
        if g is None or b is None:
            continue
        rows.append([
            f"{server} (baseline on {baseline})",
            ratio(g.p(g.serial, "json", 50), b.p(b.serial, "json", 50)),
            ratio(g.p(g.serial, "sse", 50), b.p(b.serial, "sse", 50)),
            ratio(g.p(g.serial, "sse", 50, True), b.p(b.serial, "sse", 50, True)),
            ratio(g.json_load.rate("json"), b.json_load.rate("json")),
            ratio(g.sse_load.rate("sse"), b.sse_load.rate("sse")),
            ratio(g.json_load.cpu_ms_per_request(), b.json_load.cpu_ms_per_request()),
            _ms(g.p(g.serial, "json", 50) - b.p(b.serial, "json", 50)),
        ])  # fmt: skip
    header = [
        "server",
        "JSON p50, c=1",
        "SSE whole-stream p50, c=1",
        "SSE first-byte p50, c=1",
        f"JSON req/s, c={report.concurrency}",
        f"SSE streams/s, c={report.concurrency}",
        f"server CPU per JSON request, c={report.concurrency}",
        "JSON p50 added by the gateway, c=1 (ms)",
    ]
    return _table(header, rows)


def _gc_table(report: Report) -> list[str]:
    c = report.concurrency
    picks: list[Metric] = [
        ("GET /health, c=1, p50 / p99 (ms)", _pp("serial", "health")),
        ("JSON, c=1, p50 / p99 (ms)", _pp("serial", "json")),
        ("SSE whole stream, c=1, p50 / p99 (ms)", _pp("serial", "sse")),
        (f"JSON, c={c}, p50 / p99 (ms)", _pp("json_load", "json")),
        (f"SSE first byte, c={c}, p50 / p99 (ms)", _pp("sse_load", "sse", ttfb=True)),
        (f"JSON, c={c}, req/s", lambda r: f"{r.json_load.rate('json'):.0f}"),
        ("peak RSS, app process (MiB)", lambda r: f"{r.rss_mib:.1f}"),
    ]  # fmt: skip
    columns: list[tuple[str, RunResult]] = []
    for server in report.servers:
        frozen, unfrozen = (
            report.find(server, "gateway"),
            report.find(server, "gateway, no gc.freeze"),
        )
        if frozen is not None and unfrozen is not None:
            columns.append((f"{server}, gc.freeze()", frozen))
            columns.append((f"{server}, no freeze", unfrozen))
    header = ["", *(name for name, _ in columns)]
    return _table(header, [[label, *(get(r) for _, r in columns)] for label, get in picks])


def _startup_line(label: str, times: list[float]) -> str:
    verdict = "met" if max(times) < STARTUP_TARGET_S else "NOT met"
    return (
        f"- `xrouter serve`, process start to first 200 on /health, {label}, {len(times)} "
        f"starts: {', '.join(f'{s:.3f}' for s in times)} s (median "
        f"{statistics.median(times):.3f} s) -> target < {STARTUP_TARGET_S} s **{verdict}**."
    )


def _targets(report: Report) -> list[str]:
    as_is = (
        f"no bytecode cache (PYTHONDONTWRITEBYTECODE={report.bytecode_env})"
        if report.bytecode_env
        else "environment as found"
    )
    lines = [
        _startup_line(as_is, report.product_startup_s),
        _startup_line("with a warm bytecode cache", report.cached_startup_s),
    ]
    for server in report.servers:
        g = report.find(server, "gateway")
        if g is None:
            continue
        verdict = "met" if g.overhead_ms < OVERHEAD_TARGET_MS else "NOT met"
        lines.append(
            f"- {server}: JSON p50 {_ms(g.p(g.serial, 'json', 50))} ms minus /health p50 "
            f"{_ms(g.p(g.serial, 'health', 50))} ms = {_ms(g.overhead_ms)} ms at c=1 -> "
            f"target < {OVERHEAD_TARGET_MS:g} ms **{verdict}**."
        )
    return lines


def machine() -> list[str]:
    """Date, CPU, kernel, Python and package versions, as markdown list items."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(f"{p} {version(p)}" for p in PACKAGES)
    return [
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {os.cpu_count()} CPUs (`nproc`), {cpu}; {platform.system()} "
        f"{platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); {versions}",
    ]


def render(report: Report) -> str:
    c = report.concurrency
    pin = "server pinned to CPU 0, load generator to CPU 1" if report.pinned else "no CPU pinning"
    out = [
        BEGIN,
        "",
        "## Run",
        "",
        f"    {report.command}",
        "",
        *machine(),
        f"- Code measured: {report.source}",
        f"- Load average (1, 5, 15 min) before / after the run: {report.loadavg[0]} / "
        f"{report.loadavg[1]} (the machine may be shared: figures move by ~10% between runs)",
        f"- Each run: {report.warmup_s:g} s warm-up (c=8), then three {report.duration_s:g} s "
        f"phases: c=1 with GET /health, JSON and SSE requests interleaved on one keep-alive "
        f"connection; c={c} JSON; c={c} SSE. One worker process; {pin}.",
        f"- Request: `POST /v1/responses` with model `local/echo`, input "
        f'"{report.input_text}"; the JSON answer is {report.json_bytes} bytes, the SSE answer '
        f"{report.sse_bytes} bytes in {report.sse_frames} frames (ending `data: [DONE]`).",
        "- Latency: from writing the request to the last byte of the answer; first byte: to the "
        "first byte of the body (the first SSE frame). Percentiles are nearest-rank.",
        "",
        "## Gateway, per server",
        "",
        f"`{PRODUCT}`: the product's own command (since issue 9 uvicorn with xrouter's Server "
        "subclass and connection-limiting httptools protocol, `entrypoints/http/server.py`; "
        "before, `uvicorn.run` with uvloop and httptools). `uvicorn`: the same app factory on "
        "stock uvicorn (`python -m uvicorn`, uvloop, httptools, no access log, no server "
        "header), without xrouter's protocol. `granian`: the app factory on granian "
        "(`--interface asgi --loop uvloop`).",
        "",
        *_metric_table([(s, r) for s in report.servers if (r := report.find(s, "gateway"))], c),
        "",
        "## Baseline (no gateway), per ASGI server",
        "",
        "The baseline (bench/baseline_app.py) is a raw ASGI callable, no framework, served by "
        "stock uvicorn and by granian with the options above. It answers `POST /v1/responses` "
        "with the bytes the gateway returned for the same request (the same JSON body; the same "
        "SSE frames, one ASGI message per frame) and `GET /health` with the same body. It stands "
        "in for calling the upstream directly, and an upstream does not run on xrouter's server: "
        f"the `{PRODUCT}` and `uvicorn` gateway columns are both compared with the uvicorn "
        "baseline, granian with granian.",
        "",
        *_metric_table([(s, r) for s in report.servers if (r := report.find(s, "baseline"))], c),
        "",
        "Gateway relative to the baseline (latency: gateway / baseline, lower is better; "
        "throughput: gateway / baseline, higher is better):",
        "",
        *_ratio_table(report),
        "",
        "## gc.freeze() at startup",
        "",
        "`no freeze` runs bench/app_nofreeze.py: the same app with a last startup hook that "
        f"calls gc.unfreeze(), on the same server (for `{PRODUCT}`: the product's CLI with only "
        "the app factory replaced, bench/serve_as_product.py).",
        "",
        *_gc_table(report),
        "",
        "## Targets",
        "",
        *_targets(report),
        "",
        END,
    ]
    return "\n".join(out) + "\n"


def write(path: Path, markdown: str) -> None:
    """Write `markdown` to `path`; if the file has the bench markers, replace only the text
    between them, keeping what was written around them by hand."""
    sections.write(path, "", markdown)


def run_lines(command: str, source: str, loadavg: tuple[str, str], placement: str) -> list[str]:
    """The "how, when, where" list items that open a generated section."""
    return [
        f"    {command}",
        "",
        *machine(),
        f"- Code measured: {source}",
        f"- Load average (1, 5, 15 min) before / after: {loadavg[0]} / {loadavg[1]}",
        f"- {placement}",
    ]


def summary_line(r: RunResult) -> str:
    return (
        f"{r.run.server:13} {r.run.app:22} start {r.startup_s:.3f}s | c=1 p50 health "
        f"{_ms(r.p(r.serial, 'health', 50))} json {_ms(r.p(r.serial, 'json', 50))} sse "
        f"{_ms(r.p(r.serial, 'sse', 50))} ms | c=32 json {r.json_load.rate('json'):.0f}/s sse "
        f"{r.sse_load.rate('sse'):.0f}/s | rss {r.rss_mib:.1f} MiB | errors {r.errors}"
    )
