"""Issue 5: the gateway relaying to a fast fake upstream (bench/fake_upstream.py), against the
same load generator calling that upstream directly.

Pinning (2 cores): the gateway has CPU 0 to itself; the fake upstream and the load generator
share CPU 1. The gateway is what is measured, so it gets a core of its own; the upstream and
the client are cheap next to it (their CPU share is reported, to show they are not the limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import loadgen
import servers
import upstream_env
from loadgen import Recorder
from workload import chat_body, responses_body

CONCURRENCY = 32
UPSTREAM_MODEL = "fake"
GATEWAY_MODEL = f"{upstream_env.PROVIDER}/{UPSTREAM_MODEL}"
KINDS = ("direct_json", "gw_chat_json", "gw_resp_json", "direct_sse", "gw_chat_sse", "gw_resp_sse")


@dataclass(slots=True)
class RelayResult:
    serial: Recorder  # c=1, all kinds interleaved (one connection to each server)
    load: dict[str, Recorder] = field(default_factory=dict)  # c=32, one phase per kind
    upstream_cpu_s: dict[str, float] = field(default_factory=dict)  # per c=32 phase
    warmup_errors: int = 0
    rss_mib: float = 0.0  # the gateway's peak RSS (VmHWM)
    upstream_rss_mib: float = 0.0
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.warmup_errors + self.serial.errors + sum(r.errors for r in self.load.values())


def requests(upstream: int, gateway: int) -> dict[str, loadgen.Request]:
    chat = "/v1/chat/completions"

    def post(name: str, port: int, path: str, body: bytes, stream: bool) -> loadgen.Request:
        return loadgen.post_json(name, port, path, body, stream=stream)

    return {
        "direct_json": post("direct_json", upstream, chat, chat_body(UPSTREAM_MODEL, False), False),
        "gw_chat_json": post("gw_chat_json", gateway, chat, chat_body(GATEWAY_MODEL, False), False),
        "gw_resp_json": post("gw_resp_json", gateway, "/v1/responses",
                             responses_body(GATEWAY_MODEL, False, store=False), False),
        "direct_sse": post("direct_sse", upstream, chat, chat_body(UPSTREAM_MODEL, True), True),
        "gw_chat_sse": post("gw_chat_sse", gateway, chat, chat_body(GATEWAY_MODEL, True), True),
        "gw_resp_sse": post("gw_resp_sse", gateway, "/v1/responses",
                            responses_body(GATEWAY_MODEL, True, store=False), True),
    }  # fmt: skip


async def _phase(
    gateway: servers.Server,
    upstream: servers.Server,
    reqs: list[loadgen.Request],
    concurrency: int,
    duration_s: float,
) -> tuple[Recorder, float]:
    """The phase's samples (server CPU = the gateway's) and the upstream's CPU seconds."""
    gw_cpu, up_cpu = gateway.cpu_s(), upstream.cpu_s()
    recorder = await loadgen.run_phase(gateway.port, reqs, concurrency, duration_s)
    recorder.server_cpu_s = gateway.cpu_s() - gw_cpu
    return recorder, upstream.cpu_s() - up_cpu


async def measure(
    gateway_cpus: set[int] | None,
    upstream_cpus: set[int] | None,
    src: Path | None,
    duration_s: float,
    warmup_s: float,
) -> RelayResult:
    """Check the answers, warm up at c=32, c=1 with all kinds interleaved, c=32 per kind."""
    upstream, gateway = upstream_env.start_pair(gateway_cpus, upstream_cpus, src)
    try:
        reqs = requests(upstream.port, gateway.port)
        sizes = {}
        for name, request in reqs.items():
            sample = await loadgen.fetch(gateway.port, request)
            if sample.status != 200 or (request.stream and b"[DONE]" not in sample.body):
                raise RuntimeError(f"{name}: answered {sample.status}: {sample.body[:300]!r}")
            sizes[name] = len(sample.body)
        everything = [reqs[name] for name in KINDS]
        # c=32 from the start: the gateway's upstream connection pool reaches its size before
        # any measured phase (the first c=32 phase was otherwise slower than the next ones).
        warmup, _ = await _phase(gateway, upstream, everything, CONCURRENCY, warmup_s)
        serial, _ = await _phase(gateway, upstream, everything, 1, duration_s)
        result = RelayResult(serial=serial, warmup_errors=warmup.errors, sizes=sizes)
        for name in KINDS:
            recorder, up_cpu = await _phase(
                gateway, upstream, [reqs[name]], CONCURRENCY, duration_s
            )
            result.load[name], result.upstream_cpu_s[name] = recorder, up_cpu
        result.rss_mib = gateway.peak_rss_mib()[0]
        result.upstream_rss_mib = upstream.peak_rss_mib()[0]
    finally:
        gateway.stop()
        upstream.stop()
    return result
