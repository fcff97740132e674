"""Issue 16: XRouter side by side with the gateways its users would otherwise pick, the Portkey
gateway (Node) and the LiteLLM proxy (Python), in one interleaved run against the same fast
fake upstream (bench/fake_upstream.py), OpenAI-compatible chat completions.

The peers are installed into throwaway environments under the user's cache
(bench/peer_install.py); one that cannot be installed or started is reported as such, and the
others are still measured. With Redis available (redis-server on PATH), two more XRouter rows,
reported only: Redis storage, and Redis storage with XR_AUTH=keys (a key with every limit on,
none reachable, sent as a bearer token).

One repetition starts each gateway in turn (XRouter, Portkey, LiteLLM, then the extra rows),
measures it and stops it; REPETITIONS repetitions, interleaved (A B C A B C ...), so that the
machine's other load falls on all alike; every figure is the median of its repetitions. Per
gateway and repetition:

1. start to first 200: process spawn to the first relayed chat completion answered 200;
2. idle RSS: the process tree's VmRSS once it settles after that first answer;
3. warm-up: c=8, non-stream and stream requests mixed;
4. added p50, non-stream, c=1: requests alternate on one connection to the upstream itself and
   one to the gateway; the gateway's p50 minus the upstream's;
5. c=32 non-stream: throughput, p50 and p99;
6. added first byte of a stream, c=1: alternating as in 4, the time to the first body byte;
7. CPU per 1,000 relayed stream chunks: streams of LONG_CHUNKS content chunks read one after
   another by a fast client, the gateway's process CPU time (/proc) over the chunks relayed;
8. peak RSS: the process tree's VmHWM summed, after all of the above.

Pinning (2 cores): the gateway under test alone on CPU 0; the fake upstream, redis-server, the
load generator and the stream client on CPU 1. Only one gateway runs at a time.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import loadgen
import peer_gateways
import peer_install
import rss
import servers
import stream_client
import upstream_env
from auth_bench import create_key
from loadgen import Recorder, Request
from peer_gateways import GatewaySpec
from store_bench import RedisProcess

REPETITIONS = 3
CONCURRENCY = 32
WARMUP_CONCURRENCY = 8
# Inherited settings that would change XRouter's default configuration (telemetry on, no auth,
# memory storage); removed from the environment the gateways inherit.
INHERITED = ("XR_", "OTEL_")
STREAM_TIMEOUT_S = 60.0
PEERS = ("XRouter", "Portkey", "LiteLLM")
EXTRAS = ("XRouter, Redis", "XRouter, Redis + keys")


@dataclass(slots=True)
class Figures:
    """One gateway, one repetition."""

    added_p50_ms: float = math.nan
    rps: float = math.nan  # c=32 non-stream
    p50_ms: float = math.nan  # c=32 non-stream
    p99_ms: float = math.nan  # c=32 non-stream
    added_ttfb_ms: float = math.nan  # stream, c=1
    cpu_ms_per_1k_chunks: float = math.nan
    startup_s: float = math.nan
    idle_rss_mib: float = math.nan
    peak_rss_mib: float = math.nan
    errors: float = 0.0  # requests not answered 200 (or streams not complete), all phases
    client_busy: float = math.nan  # the load generator's share of its core at c=32


@dataclass
class PeerResult:
    runs: dict[str, list[Figures]] = field(default_factory=dict)  # by gateway, per repetition
    skipped: dict[str, str] = field(default_factory=dict)  # gateway -> why it has no figures
    versions: dict[str, str] = field(default_factory=dict)
    removed_env: list[str] = field(default_factory=list)
    steal: float = 0.0  # share of all CPUs' time the hypervisor took during the run
    load_before: float = 0.0  # 1-minute load average when the run started
    elapsed_s: float = 0.0

    def median(self, gateway: str) -> Figures | None:
        """Each figure's median over the repetitions (None: the gateway was not measured)."""
        runs = self.runs.get(gateway)
        if not runs:
            return None
        out = Figures()
        for f in fields(Figures):
            values = [getattr(r, f.name) for r in runs if not math.isnan(getattr(r, f.name))]
            setattr(out, f.name, statistics.median(values) if values else math.nan)
        return out


@dataclass(frozen=True)
class _Requests:
    direct_json: Request
    gw_json: Request
    direct_sse: Request
    gw_sse: Request
    gw_long: Request


def _requests(spec: GatewaySpec, upstream: int, gateway: int) -> _Requests:
    def req(name: str, port: int, s: GatewaySpec | None, model: str, stream: bool) -> Request:
        raw = peer_gateways.chat_request(port, s, model, stream)
        return Request(name, raw, stream=stream, port=port)

    model, long = peer_gateways.UPSTREAM_MODEL, peer_gateways.LONG_MODEL
    return _Requests(
        direct_json=req("direct_json", upstream, None, model, False),
        gw_json=req("gw_json", gateway, spec, model, False),
        direct_sse=req("direct_sse", upstream, None, model, True),
        gw_sse=req("gw_sse", gateway, spec, model, True),
        gw_long=req("gw_long", gateway, spec, long, True),
    )


def _tree_rss_mib(server: servers.Server) -> float:
    rss.wait_settled(server.process.pid)
    return sum(rss.vm_kib(pid) for pid in server.tree()) / 1024


def _p(recorder: Recorder, name: str, q: float, ttfb: bool = False) -> float:
    samples = (recorder.ttfb_ns if ttfb else recorder.latency_ns).get(name, [])
    return loadgen.percentile_ms(samples, q)


async def _chunk_cpu(
    server: servers.Server, request: Request, duration_s: float
) -> tuple[float, int]:
    """(gateway CPU ms per 1,000 relayed content chunks, incomplete streams): long streams one
    after another until `duration_s` has passed (at least one)."""
    cpu, streams, broken = server.cpu_s(), 0, 0
    deadline = time.perf_counter() + duration_s
    while streams == 0 or time.perf_counter() < deadline:
        read = await stream_client.read_stream(server.port, request, timeout_s=STREAM_TIMEOUT_S)
        streams += 1
        broken += 0 if read.complete and read.status == 200 else 1
    used_ms = (server.cpu_s() - cpu) * 1000
    return used_ms / (streams * peer_gateways.LONG_CHUNKS / 1000), broken


async def _measure_one(
    spec: GatewaySpec, upstream: servers.Server, cpus: set[int] | None, duration_s: float,
    warmup_s: float,
) -> Figures:  # fmt: skip
    """Start the gateway, take every figure, stop it."""
    server = peer_gateways.start(spec, cpus)
    try:
        figures = Figures(startup_s=server.startup_s, idle_rss_mib=_tree_rss_mib(server))
        reqs = _requests(spec, upstream.port, server.port)
        warm = await loadgen.run_phase(
            server.port, [reqs.gw_json, reqs.gw_sse], WARMUP_CONCURRENCY, warmup_s
        )
        short = duration_s * 0.6
        serial = await loadgen.run_phase(server.port, [reqs.direct_json, reqs.gw_json], 1, short)
        figures.added_p50_ms = _p(serial, "gw_json", 50) - _p(serial, "direct_json", 50)
        load = await loadgen.run_phase(server.port, [reqs.gw_json], CONCURRENCY, duration_s)
        figures.rps = load.rate("gw_json")
        figures.p50_ms, figures.p99_ms = _p(load, "gw_json", 50), _p(load, "gw_json", 99)
        figures.client_busy = load.client_busy
        first = await loadgen.run_phase(server.port, [reqs.direct_sse, reqs.gw_sse], 1, short)
        figures.added_ttfb_ms = _p(first, "gw_sse", 50, True) - _p(first, "direct_sse", 50, True)
        figures.cpu_ms_per_1k_chunks, broken = await _chunk_cpu(
            server, reqs.gw_long, duration_s * 0.5
        )
        figures.peak_rss_mib = server.peak_rss_mib()[1]
        figures.errors = warm.errors + serial.errors + load.errors + first.errors + broken
    finally:
        server.stop()
    return figures


def _clean_environment() -> list[str]:
    names = sorted(k for k in os.environ if k.startswith(INHERITED))
    for name in names:
        del os.environ[name]
    return names


def _cpu_ticks() -> tuple[int, int]:
    """(steal, total) ticks of all CPUs so far (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[7], sum(values[:8])


def _peers(upstream_port: int, workdir: Path, result: PeerResult) -> list[GatewaySpec]:
    """Install (or reuse) Portkey and LiteLLM; the specs of those that are ready."""
    cache = peer_install.cache_dir()
    specs = []
    portkey = peer_install.portkey(cache)
    result.versions["Portkey"] = (
        f"@portkey-ai/gateway {portkey.version} (@hono/node-server "
        f"{peer_install.HONO_NODE_SERVER_VERSION}) on node {peer_install.node_version()}"
    )
    if portkey.path is None:
        result.skipped["Portkey"] = portkey.error
    else:
        specs.append(peer_gateways.portkey(upstream_port, portkey.path))
    litellm = peer_install.litellm(cache)
    result.versions["LiteLLM"] = f"litellm[proxy] {litellm.version}"
    if litellm.path is None:
        result.skipped["LiteLLM"] = litellm.error
    else:
        specs.append(peer_gateways.litellm(upstream_port, litellm.path, workdir))
    return specs


def _extras(
    upstream_port: int, redis: RedisProcess | None, src: Path | None, result: PeerResult
) -> list[GatewaySpec]:
    """XRouter on Redis, and on Redis with gateway keys: report-only rows."""
    if redis is None:
        for name in EXTRAS:
            result.skipped[name] = "no redis-server on PATH"
        return []
    storage = {"XR_STORAGE": "redis", "XR_REDIS_URL": redis.url}
    auth_secret = secrets.token_urlsafe(32)
    _, key = create_key(redis, auth_secret, src)
    keys = storage | {"XR_AUTH": "keys", "XR_AUTH_SECRET": auth_secret}
    return [
        peer_gateways.xrouter(upstream_port, src, storage, EXTRAS[0]),
        peer_gateways.xrouter(
            upstream_port, src, keys, EXTRAS[1], {"Authorization": f"Bearer {key}"}
        ),
    ]


async def measure(
    gateway_cpus: set[int] | None,
    other_cpus: set[int] | None,
    src: Path | None,
    duration_s: float,
    warmup_s: float,
) -> PeerResult:
    """Install the peers, start the upstream (and Redis), then REPETITIONS interleaved rounds
    over every gateway. A gateway that fails is reported with why, and the others go on."""
    result = PeerResult(removed_env=_clean_environment())
    result.load_before = os.getloadavg()[0]
    upstream = servers.start("uvicorn", upstream_env.FAKE_UPSTREAM, cpus=other_cpus)
    redis = RedisProcess(other_cpus) if shutil.which("redis-server") else None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-peers-") as workdir:
            specs = [peer_gateways.xrouter(upstream.port, src)]
            specs += _peers(upstream.port, Path(workdir), result)
            specs += _extras(upstream.port, redis, src, result)
            steal, total = _cpu_ticks()
            started = time.perf_counter()
            await _rounds(specs, upstream, gateway_cpus, duration_s, warmup_s, result)
            result.elapsed_s = time.perf_counter() - started
            steal_after, total_after = _cpu_ticks()
            result.steal = (steal_after - steal) / max(1, total_after - total)
    finally:
        if redis is not None:
            redis.stop()
        upstream.stop()
    return result


async def _rounds(
    specs: list[GatewaySpec], upstream: servers.Server, cpus: set[int] | None,
    duration_s: float, warmup_s: float, result: PeerResult,
) -> None:  # fmt: skip
    for repetition in range(REPETITIONS):
        for spec in specs:
            if spec.name in result.skipped:
                continue
            try:
                figures = await _measure_one(spec, upstream, cpus, duration_s, warmup_s)
            except (RuntimeError, OSError, TimeoutError) as exc:
                result.skipped[spec.name] = f"failed in repetition {repetition + 1}: {exc}"
                continue
            result.runs.setdefault(spec.name, []).append(figures)
            print(f"peers {repetition + 1}/{REPETITIONS} {summary(spec.name, figures)}", flush=True)


def summary(name: str, f: Figures) -> str:
    return (
        f"{name:22} start {f.startup_s:.2f}s | +p50 {f.added_p50_ms:.2f} ms | "
        f"{f.rps:.0f} req/s p99/p50 {f.p99_ms:.0f}/{f.p50_ms:.0f} ms | "
        f"+ttfb {f.added_ttfb_ms:.2f} ms | {f.cpu_ms_per_1k_chunks:.1f} ms CPU/1k chunks | "
        f"rss {f.idle_rss_mib:.0f}/{f.peak_rss_mib:.0f} MiB | errors {f.errors:.0f}"
    )
