"""Issue 4: `POST /v1/chat/completions` beside `POST /v1/responses` on `local/echo`, same input,
same server, same client, in the same phases; plus the mapping functions timed in-process.

Both requests run with store off (Chat Completions does not store by default; Responses
does), so the comparison is the adapter and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import loadgen
import servers
from loadgen import Recorder
from workload import chat_body, responses_body

CONCURRENCY = 32
MODEL = "local/echo"
# name -> (path, stream); "*_again" repeat a request under another name: an A/A pair whose
# difference is the noise of the comparison.
KINDS = {
    "resp_json": ("/v1/responses", False),
    "chat_json": ("/v1/chat/completions", False),
    "resp_json_again": ("/v1/responses", False),
    "resp_sse": ("/v1/responses", True),
    "chat_sse": ("/v1/chat/completions", True),
    "resp_sse_again": ("/v1/responses", True),
}
LOADED = ("resp_json", "chat_json", "resp_sse", "chat_sse")


@dataclass(frozen=True, slots=True)
class ChatResult:
    serial: Recorder  # c=1, every kind interleaved on one connection
    halves: dict[str, list[Recorder]]  # c=32, per kind: two phases of half the duration
    warmup_errors: int
    rss_mib: float
    sizes: dict[str, int]  # answer body bytes per kind
    mapping: dict[str, Any]  # bench/mapping_cost.py's output

    def load(self, name: str) -> Recorder:
        return loadgen.merged(self.halves[name])

    @property
    def errors(self) -> int:
        phases = [self.serial, *(r for rs in self.halves.values() for r in rs)]
        return self.warmup_errors + sum(r.errors for r in phases)


def requests(port: int) -> dict[str, loadgen.Request]:
    out = {}
    for name, (path, stream) in KINDS.items():
        if path == "/v1/responses":
            body = responses_body(MODEL, stream, store=False)
        else:
            body = chat_body(MODEL, stream)
        out[name] = loadgen.post_json(name, port, path, body, stream=stream)
    return out


async def _phase(
    server: servers.Server, reqs: list[loadgen.Request], concurrency: int, duration_s: float
) -> Recorder:
    cpu = server.cpu_s()
    recorder = await loadgen.run_phase(server.port, reqs, concurrency, duration_s)
    recorder.server_cpu_s = server.cpu_s() - cpu
    return recorder


def mapping_cost(src: Path | None) -> dict[str, Any]:
    """Run bench/mapping_cost.py in a subprocess (so `--rev` code is what it imports)."""
    path = os.pathsep.join(str(p) for p in (src, servers.BENCH_DIR) if p is not None)
    done = subprocess.run(
        [sys.executable, str(servers.BENCH_DIR / "mapping_cost.py")],
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONPATH": path, "XR_LOG_LEVEL": "WARNING"},
        timeout=120,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def measure(
    cpus: set[int] | None, src: Path | None, duration_s: float, warmup_s: float
) -> ChatResult:
    """Warm up; c=1 with every kind interleaved; then c=32 per kind, twice at half the
    duration, alternating the APIs; then the in-process mapping timings."""
    server = servers.start("xrouter", servers.GATEWAY, cpus=cpus, src=src)
    try:
        reqs = requests(server.port)
        sizes = {}
        for name, request in reqs.items():
            sample = await loadgen.fetch(server.port, request)
            if sample.status != 200:
                raise RuntimeError(f"{name}: the gateway answered {sample.status}")
            sizes[name] = len(sample.body)
        everything = list(reqs.values())
        warmup = await _phase(server, everything, 8, warmup_s)
        serial = await _phase(server, everything, 1, duration_s)
        halves: dict[str, list[Recorder]] = {name: [] for name in LOADED}
        for _ in range(2):
            for name in LOADED:
                recorder = await _phase(server, [reqs[name]], CONCURRENCY, duration_s / 2)
                halves[name].append(recorder)
        rss_mib = server.peak_rss_mib()[0]
    finally:
        server.stop()
    return ChatResult(serial, halves, warmup.errors, rss_mib, sizes, mapping_cost(src))
