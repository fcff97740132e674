"""XRouter benchmark. Every load phase is bounded in time. Suites:

- local: the gateway on `local/echo` against a raw ASGI baseline, per ASGI server, with and
  without gc.freeze() (issue 2);
- chat: /v1/chat/completions beside /v1/responses, and the mapping timed in-process (issue 4);
- relay: the gateway relaying to a fake OpenAI-compatible upstream against calling it
  directly (issue 5);
- memory: the gateway's RSS while relaying long streams, fast and slow clients (issue 5);
- store: storing responses in the memory store vs Redis on loopback (issue 10);
- storefill: the memory store's latency tails before and after it fills (issue 10);
- telemetry: telemetry off, default and with full tracing, relaying to the fake upstream
  (issue 11; not in `all`, it adds about 2 minutes);
- auth: XR_AUTH=keys with limits on against XR_AUTH=none, both on Redis (issue 12; not in
  `all`, it adds about 1 minute);
- peers: XRouter side by side with the Portkey gateway and the LiteLLM proxy, installed into
  throwaway environments under ~/.cache/xrouter-bench (issue 16; not in `all`, about 6
  minutes, more on the first run, which installs them);
- upstream: relay and memory; all: every suite.

    .venv/bin/python bench/run.py [--suite local|chat|relay|memory|store|storefill|telemetry|
                                           auth|peers|upstream|all]
                                  [--server uvicorn|granian|both] [--duration S]
                                  [--out docs/benchmarks.md] [--rev REV] [--no-pin]

The load generator runs in this process (uvloop, raw HTTP/1.1 keep-alive connections); the
servers run in subprocesses with one worker. By default the server under test is pinned to
CPU 0 and the load generator (and the fake upstream, when there is one) to CPU 1.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import cast

import auth_bench
import auth_report
import chat_bench
import chat_report
import loadgen
import memory_bench
import memory_report
import msgspec
import peers
import peers_report
import relay_bench
import relay_report
import report
import sections
import servers
import store_bench
import store_report
import telemetry_bench
import telemetry_report
import uvloop
from report import Run, RunResult
from workload import INPUT

CONCURRENCY = 32
SUITES = {
    "local": ("local",),
    "chat": ("chat",),
    "relay": ("relay",),
    "memory": ("memory",),
    "store": ("store",),
    "storefill": ("storefill",),
    "telemetry": ("telemetry",),
    "auth": ("auth",),
    "peers": ("peers",),
    "upstream": ("relay", "memory"),
    "all": ("local", "chat", "relay", "memory", "store", "storefill"),
}
STARTUP_SAMPLES = 3
REPO = Path(__file__).resolve().parent.parent


def _requests(port: int) -> dict[str, loadgen.Request]:
    def body(stream: bool) -> bytes:
        return msgspec.json.encode({"model": "local/echo", "input": INPUT, "stream": stream})

    return {
        "health": loadgen.get("health", port, "/health"),
        "json": loadgen.post_json("json", port, "/v1/responses", body(False), stream=False),
        "sse": loadgen.post_json("sse", port, "/v1/responses", body(True), stream=True),
    }


async def capture_baseline(server: servers.Server) -> dict[str, object]:
    """The gateway's answers, for the baseline app to replay."""
    requests = _requests(server.port)
    json_answer = await loadgen.fetch(server.port, requests["json"])
    sse_answer = await loadgen.fetch(server.port, requests["sse"])
    if json_answer.status != 200 or sse_answer.status != 200:
        raise RuntimeError("the gateway did not answer the capture requests with 200")
    frames = [frame + b"\n\n" for frame in sse_answer.body.split(b"\n\n") if frame]
    return {
        "json": json_answer.body.decode(),
        "frames": [f.decode() for f in frames],
        "sizes": (len(json_answer.body), len(sse_answer.body), len(frames)),
    }


def _save(path: Path, captured: dict[str, object]) -> tuple[int, int, int]:
    """Write the captured answers for the baseline; return (JSON bytes, SSE bytes, frames)."""
    path.write_bytes(msgspec.json.encode(captured))
    return cast(tuple[int, int, int], captured["sizes"])


async def _phase(
    server: servers.Server, requests: list[loadgen.Request], concurrency: int, duration_s: float
) -> loadgen.Recorder:
    cpu = server.cpu_s()
    recorder = await loadgen.run_phase(server.port, requests, concurrency, duration_s)
    recorder.server_cpu_s = server.cpu_s() - cpu
    return recorder


async def measure(
    server: servers.Server, run: Run, duration_s: float, warmup_s: float
) -> RunResult:
    """Warm up, then: c=1 (health, JSON, SSE interleaved on one connection), c=32 JSON,
    c=32 SSE; then read the server's peak RSS."""
    requests = _requests(server.port)
    mixed = [requests["health"], requests["json"], requests["sse"]]
    warmup = await _phase(server, mixed, 8, warmup_s)
    serial = await _phase(server, mixed, 1, duration_s)
    json_load = await _phase(server, [requests["json"]], CONCURRENCY, duration_s)
    sse_load = await _phase(server, [requests["sse"]], CONCURRENCY, duration_s)
    rss_max, rss_sum = server.peak_rss_mib()
    return RunResult(
        run=run,
        startup_s=server.startup_s,
        serial=serial,
        json_load=json_load,
        sse_load=sse_load,
        warmup_errors=warmup.errors,
        rss_mib=rss_max,
        rss_tree_mib=rss_sum,
    )


def product_startup(
    cpus: set[int] | None, src: Path | None, env: dict[str, str] | None = None
) -> list[float]:
    """Start `xrouter serve` a few times; the times from process start to the first 200."""
    times = []
    for _ in range(STARTUP_SAMPLES):
        server = servers.start("xrouter", servers.GATEWAY, env=env, cpus=cpus, src=src)
        times.append(server.startup_s)
        server.stop()
    return times


def cached_startup(cpus: set[int] | None, src: Path | None) -> list[float]:
    """As `product_startup`, with bytecode caching on (in a private PYTHONPYCACHEPREFIX,
    filled by one untimed start): what an install with compiled .pyc files sees."""
    with tempfile.TemporaryDirectory(prefix="bench-pycache-") as cache:
        env = {"PYTHONPYCACHEPREFIX": cache, "PYTHONDONTWRITEBYTECODE": ""}
        servers.start("xrouter", servers.GATEWAY, env=env, cpus=cpus, src=src).stop()
        return product_startup(cpus, src, env)


# What the local suite runs per --server choice: (column, server kind in servers.py, app,
# app factory). The gateway's own row first: the baseline replays its answers.
PLANS: dict[str, list[tuple[str, str, str, str]]] = {
    "uvicorn": [
        (report.PRODUCT, "xrouter", "gateway", servers.GATEWAY),
        ("uvicorn", "uvicorn", "baseline", servers.BASELINE),
        (report.PRODUCT, "xrouter", "gateway, no gc.freeze", servers.GATEWAY_NOFREEZE),
        ("uvicorn", "uvicorn", "gateway", servers.GATEWAY),
    ],
    "granian": [
        ("granian", "granian", "gateway", servers.GATEWAY),
        ("granian", "granian", "baseline", servers.BASELINE),
        ("granian", "granian", "gateway, no gc.freeze", servers.GATEWAY_NOFREEZE),
    ],
}


def _cpus(args: argparse.Namespace) -> tuple[set[int] | None, set[int] | None]:
    """(server under test, load generator and fake upstream)."""
    return ({0}, {1}) if args.pin else (None, None)


async def bench(args: argparse.Namespace, baseline_file: Path) -> report.Report:
    server_cpus, _ = _cpus(args)
    stacks = ["uvicorn", "granian"] if args.server == "both" else [args.server]
    env = {"BENCH_BASELINE_FILE": str(baseline_file)}
    sizes = (0, 0, 0)
    results: list[RunResult] = []
    loadavg_before = _loadavg()
    startups = product_startup(server_cpus, args.src)
    cached = cached_startup(server_cpus, args.src)
    print(f"xrouter serve: first 200 after {', '.join(f'{s:.3f}' for s in startups)} s")
    print(f"  with bytecode cache: {', '.join(f'{s:.3f}' for s in cached)} s")
    for stack in stacks:
        for column, kind, app, target in PLANS[stack]:
            server = servers.start(kind, target, env=env, cpus=server_cpus, src=args.src)
            try:
                if sizes == (0, 0, 0):
                    sizes = _save(baseline_file, await capture_baseline(server))
                result = await measure(server, Run(column, app), args.duration, args.warmup)
            finally:
                server.stop()
            print(report.summary_line(result), flush=True)
            results.append(result)
    return report.Report(
        command=_command(),
        duration_s=args.duration,
        warmup_s=args.warmup,
        pinned=args.pin,
        input_text=INPUT,
        json_bytes=sizes[0],
        sse_bytes=sizes[1],
        sse_frames=sizes[2],
        concurrency=CONCURRENCY,
        product_startup_s=startups,
        cached_startup_s=cached,
        bytecode_env=os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        results=results,
        source=args.source,
        loadavg=(loadavg_before, _loadavg()),
    )


def _loadavg() -> str:
    return ", ".join(Path("/proc/loadavg").read_text().split()[:3])


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=True)
    return done.stdout.decode().strip()


def _snapshot(rev: str, into: Path) -> str:
    """Extract src/ at `rev` into `into`; describe what was extracted."""
    commit = _git("rev-parse", "--short", rev)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return f"commit {commit} (`--rev {rev}`: src/ extracted from git)"


def _working_tree() -> str:
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "src")
    state = "with uncommitted changes under src/" if dirty else "no uncommitted changes"
    return f"working tree at {commit}, {state}"


def _command() -> str:
    return " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])


def _placement(args: argparse.Namespace, upstream: bool) -> str:
    if not args.pin:
        return "No CPU pinning."
    if upstream:
        return (
            "Pinning (2 cores): the gateway (`xrouter serve`, one worker) alone on CPU 0; the "
            "fake upstream and the load generator share CPU 1."
        )
    return (
        "Pinning: the gateway (`xrouter serve`, one worker) on CPU 0, the load generator on CPU 1."
    )


async def chat_suite(args: argparse.Namespace) -> str:
    before = _loadavg()
    result = await chat_bench.measure(_cpus(args)[0], args.src, args.duration, args.warmup)
    lines = report.run_lines(_command(), args.source, (before, _loadavg()), _placement(args, False))
    lines.append(
        f"- Each phase: {args.warmup:g} s warm-up (c=8), c=1 for {args.duration:g} s, "
        f"c={chat_bench.CONCURRENCY} for 2 x {args.duration / 2:g} s per request kind."
    )
    print(f"chat: errors {result.errors}, mapping {result.mapping['us']}", flush=True)
    return sections.wrap(chat_report.NAME, chat_report.render(result, lines))


async def relay_suite(args: argparse.Namespace) -> str:
    before = _loadavg()
    gateway_cpus, other_cpus = _cpus(args)
    result = await relay_bench.measure(
        gateway_cpus, other_cpus, args.src, args.duration, args.warmup
    )
    lines = report.run_lines(_command(), args.source, (before, _loadavg()), _placement(args, True))
    lines.append(
        f"- Phases: {args.warmup:g} s warm-up (c={relay_bench.CONCURRENCY}, every kind), c=1 for "
        f"{args.duration:g} s, c={relay_bench.CONCURRENCY} for {args.duration:g} s per kind."
    )
    for line in relay_report.targets(result):
        print("relay:", line, flush=True)
    return sections.wrap(relay_report.NAME, relay_report.render(result, lines))


async def memory_suite(args: argparse.Namespace) -> str:
    before = _loadavg()
    gateway_cpus, other_cpus = _cpus(args)
    runs = await memory_bench.measure(gateway_cpus, other_cpus, args.src)
    lines = report.run_lines(_command(), args.source, (before, _loadavg()), _placement(args, True))
    for line in memory_report.findings(runs):
        print("memory:", line, flush=True)
    return sections.wrap(memory_report.NAME, memory_report.render(runs, lines))


async def store_suite(args: argparse.Namespace) -> str:
    before = _loadavg()
    gateway_cpus, other_cpus = _cpus(args)
    result = await store_bench.measure_store(
        gateway_cpus, other_cpus, args.src, args.duration, args.warmup
    )
    placement = _placement(args, True).replace("fake upstream", "redis-server")
    lines = report.run_lines(_command(), args.source, (before, _loadavg()), placement)
    for line in store_report.targets(result):
        print("store:", line, flush=True)
    return sections.wrap(store_report.NAME, store_report.render(result, lines))


async def storefill_suite(args: argparse.Namespace) -> str:
    before = _loadavg()
    result = await store_bench.measure_fill(_cpus(args)[0], args.src, args.duration, args.warmup)
    lines = report.run_lines(_command(), args.source, (before, _loadavg()), _placement(args, False))
    name = store_report.FILL_NAME + ("-" + args.rev if args.rev else "")
    return sections.wrap(name, store_report.render_fill(result, lines))


async def telemetry_suite(args: argparse.Namespace) -> str:
    before = _loadavg()
    gateway_cpus, other_cpus = _cpus(args)
    result = await telemetry_bench.measure(
        gateway_cpus, other_cpus, args.src, args.duration, args.warmup
    )
    placement = (
        _placement(args, True)
        .replace("the gateway (`xrouter serve`, one worker) alone", "the three gateways "
                 "(`xrouter serve`, one worker each, one loaded at a time)")
        .replace("fake upstream", "fake upstream, the OTLP sink")
    )  # fmt: skip
    lines = report.run_lines(_command(), args.source, (before, _loadavg()), placement)
    lines.append(
        f"- {args.warmup:g} s warm-up per gateway (c={telemetry_bench.CONCURRENCY}); each round: "
        f"{args.duration:g} s at c=1 (the three interleaved), then {args.duration / 2:g} s at "
        f"c={telemetry_bench.CONCURRENCY} per gateway; {telemetry_bench.ROUNDS} rounds; "
        f"{result.errors} requests failed."
    )
    for line in telemetry_report.targets(result):
        print("telemetry:", line, flush=True)
    return sections.wrap(telemetry_report.NAME, telemetry_report.render(result, lines))


async def auth_suite(args: argparse.Namespace) -> str:
    before = _loadavg()
    gateway_cpus, other_cpus = _cpus(args)
    result = await auth_bench.measure(
        gateway_cpus, other_cpus, args.src, args.duration, args.warmup
    )
    placement = (
        _placement(args, True)
        .replace("the gateway (`xrouter serve`, one worker) alone", "the two gateways "
                 "(`xrouter serve`, one worker each, one loaded at a time)")
        .replace("fake upstream", "redis-server")
    )  # fmt: skip
    lines = report.run_lines(_command(), args.source, (before, _loadavg()), placement)
    lines.append(
        f"- {args.warmup:g} s warm-up per gateway (c={auth_bench.CONCURRENCY}); each round: "
        f"{args.duration:g} s at c=1 (the two interleaved), then {args.duration / 2:g} s at "
        f"c={auth_bench.CONCURRENCY} per gateway; {auth_bench.ROUNDS} rounds."
    )
    for line in auth_report.targets(result):
        print("auth:", line, flush=True)
    return sections.wrap(auth_report.NAME, auth_report.render(result, lines))


SOURCE_DIR = Path(__file__).resolve().parents[1] / "src"


async def peers_suite(args: argparse.Namespace) -> str:
    # As an installed package is: compiled once. With PYTHONDONTWRITEBYTECODE set, every
    # module edited since its .pyc was written would be compiled again at each start and
    # counted in "start to first 200" (bench/start_bench.py does the same).
    compileall.compile_dir(str(args.src or SOURCE_DIR) + "/xrouter", quiet=1)
    before = _loadavg()
    gateway_cpus, other_cpus = _cpus(args)
    result = await peers.measure(gateway_cpus, other_cpus, args.src, args.duration, args.warmup)
    placement = (
        _placement(args, True)
        .replace("the gateway (`xrouter serve`, one worker) alone", "the gateway under test "
                 "(one worker, one gateway running at a time) alone")
        .replace("fake upstream", "fake upstream, redis-server, the stream client")
    )  # fmt: skip
    lines = report.run_lines(_command(), args.source, (before, _loadavg()), placement)
    at = next(i for i, line in enumerate(lines) if line.startswith("- Code measured")) + 1
    lines.insert(at, f"- Commit: {_git('rev-parse', 'HEAD')} (`git rev-parse HEAD`)")
    lines.append(
        f"- Per gateway and repetition: {args.warmup:g} s warm-up (c={peers.WARMUP_CONCURRENCY}),"
        f" {args.duration * 0.6:g} s at c=1 per request kind, {args.duration:g} s at "
        f"c={peers.CONCURRENCY}, {args.duration * 0.5:g} s of long streams."
    )
    for line in peers_report.targets(result):
        print("peers:", line, flush=True)
    return sections.wrap(peers_report.NAME, peers_report.render(result, lines))


def _run_local(args: argparse.Namespace) -> tuple[str, report.Report]:
    baseline_file = Path(tempfile.mkstemp(prefix="bench-baseline-", suffix=".json")[1])
    try:
        result = uvloop.run(bench(args, baseline_file))
    finally:
        baseline_file.unlink()
    return report.render(result), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=list(SUITES), default="all")
    parser.add_argument(
        "--server",
        choices=["uvicorn", "granian", "both"],
        default="both",
        help="ASGI servers for the local suite (uvicorn: `xrouter serve` and stock uvicorn; "
        "the other suites run the gateway as `xrouter serve`)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load phase")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds of warm-up per run")
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin CPUs")
    parser.add_argument(
        "--rev", help="measure src/ at this git revision instead of the working tree"
    )
    args = parser.parse_args()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        args.pin = False
    if args.pin:
        os.sched_setaffinity(0, _cpus(args)[1] or set())
    written: list[tuple[str, str]] = []  # (section name, markdown)
    local: report.Report | None = None
    with tempfile.TemporaryDirectory(prefix="bench-src-") as snapshot:
        args.src = Path(snapshot) / "src" if args.rev else None
        args.source = _snapshot(args.rev, Path(snapshot)) if args.rev else _working_tree()
        for suite in SUITES[args.suite]:
            if suite == "local":
                markdown, local = _run_local(args)
                written.append(("", markdown))
            elif suite == "chat":
                written.append((chat_report.NAME, uvloop.run(chat_suite(args))))
            elif suite == "relay":
                written.append((relay_report.NAME, uvloop.run(relay_suite(args))))
            elif suite == "memory":
                written.append((memory_report.NAME, uvloop.run(memory_suite(args))))
            elif suite == "store":
                written.append((store_report.NAME, uvloop.run(store_suite(args))))
            elif suite == "storefill":
                name = store_report.FILL_NAME + ("-" + args.rev if args.rev else "")
                written.append((name, uvloop.run(storefill_suite(args))))
            elif suite == "telemetry":
                written.append((telemetry_report.NAME, uvloop.run(telemetry_suite(args))))
            elif suite == "auth":
                written.append((auth_report.NAME, uvloop.run(auth_suite(args))))
            elif suite == "peers":
                written.append((peers_report.NAME, uvloop.run(peers_suite(args))))
    for name, markdown in written:
        if args.out:
            sections.write(args.out, name, markdown)
        else:
            print(markdown)
    if args.out:
        print(f"wrote {args.out}")
    if local is not None:
        print(f"median xrouter serve startup: {statistics.median(local.product_startup_s):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
