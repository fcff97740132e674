"""Issue 10: what storing responses costs.

- `store`: the gateway storing every non-stream response (the API's default, `store: true`)
  in the memory store and in Redis on loopback, interleaved (memory, redis, memory, redis),
  at c=1 and c=32; plus the same without storing (`store: false`) as the floor.
- `storefill`: the memory store's latency tails before and after it fills: c=1 and c=32
  windows on an empty store, then `FILL` more stored responses, then the same windows. Runs
  on `--rev` too, to show the tails of the store that kept decoded objects.

redis-server runs beside the load generator (CPU 1); the gateway alone on CPU 0.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import loadgen
import servers
from loadgen import Recorder
from workload import responses_body

CONCURRENCY = 32
MODEL = "local/echo"
FILL = 20_000
REPETITIONS = 2
VARIANTS = ("memory", "redis")


@dataclass
class StoreResult:
    """Per variant, per repetition: the c=1 and c=32 recorders of stored requests."""

    serial: dict[str, list[Recorder]] = field(default_factory=dict)
    load: dict[str, list[Recorder]] = field(default_factory=dict)
    unstored_serial: Recorder | None = None
    unstored_load: Recorder | None = None
    redis_version: str = ""


@dataclass
class FillResult:
    before: tuple[Recorder, Recorder]
    after: tuple[Recorder, Recorder]
    stored: int
    rss_mib: float


class RedisProcess:
    """A throwaway redis-server on a free loopback port (no persistence)."""

    def __init__(self, cpus: set[int] | None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("the store suite needs redis-server (apt-get install redis-server)")
        self.port = servers.free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", self._dir.name]  # fmt: skip
        if cpus:
            command = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *command]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, check=False
        )
        return done.stdout.decode().strip()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self._dir.cleanup()


def _env(variant: str, redis: RedisProcess | None) -> dict[str, str]:
    env = {"XR_DISCOVERY": "false", "XR_LOG_LEVEL": "WARNING"}
    if variant == "redis" and redis is not None:
        env |= {"XR_STORAGE": "redis", "XR_REDIS_URL": redis.url}
    return env


async def _phases(
    server: servers.Server, store: bool | None, duration_s: float, warmup_s: float
) -> tuple[Recorder, Recorder]:
    request = loadgen.post_json(
        "json", server.port, "/v1/responses", responses_body(MODEL, False, store), stream=False
    )
    await loadgen.run_phase(server.port, [request], 8, warmup_s)
    serial = await loadgen.run_phase(server.port, [request], 1, duration_s)
    cpu = server.cpu_s()
    load = await loadgen.run_phase(server.port, [request], CONCURRENCY, duration_s)
    load.server_cpu_s = server.cpu_s() - cpu
    return serial, load


async def measure_store(
    gateway_cpus: set[int] | None,
    other_cpus: set[int] | None,
    src: Path | None,
    duration_s: float,
    warmup_s: float,
) -> StoreResult:
    redis = RedisProcess(other_cpus)
    result = StoreResult(redis_version=redis.cli("INFO", "server").split("redis_version:")[1][:8])
    try:
        for _ in range(REPETITIONS):
            for variant in VARIANTS:
                redis.cli("FLUSHALL")
                server = servers.start(
                    "xrouter", servers.GATEWAY, env=_env(variant, redis), cpus=gateway_cpus,
                    src=src,
                )  # fmt: skip
                try:
                    serial, load = await _phases(server, None, duration_s, warmup_s)
                finally:
                    server.stop()
                result.serial.setdefault(variant, []).append(serial)
                result.load.setdefault(variant, []).append(load)
                print(f"store {variant}: c=1 p50 {serial_p50(serial):.3f} ms, "
                      f"c={CONCURRENCY} {load.rate('json'):.0f} req/s", flush=True)  # fmt: skip
        server = servers.start(
            "xrouter", servers.GATEWAY, env=_env("memory", None), cpus=gateway_cpus, src=src
        )
        try:
            result.unstored_serial, result.unstored_load = await _phases(
                server, False, duration_s, warmup_s
            )
        finally:
            server.stop()
    finally:
        redis.stop()
    return result


def serial_p50(recorder: Recorder) -> float:
    return loadgen.percentile_ms(recorder.latency_ns.get("json", []), 50)


async def measure_fill(
    gateway_cpus: set[int] | None, src: Path | None, duration_s: float, warmup_s: float
) -> FillResult:
    """Tails on an empty memory store, then after FILL more stored responses."""
    env = _env("memory", None) | {"XR_STORE_MAX_RESPONSES": str(FILL * 2)}
    server = servers.start("xrouter", servers.GATEWAY, env=env, cpus=gateway_cpus, src=src)
    try:
        before = await _phases(server, None, duration_s, warmup_s)
        # A lower bound: the warm-up's responses are stored too but not counted.
        stored = sum(r.count("json") for r in before)
        request = loadgen.post_json(
            "json", server.port, "/v1/responses", responses_body(MODEL, False), stream=False
        )
        while stored < FILL:
            stored += (await loadgen.run_phase(server.port, [request], CONCURRENCY, 2.0)).count(
                "json"
            )
        after = await _phases(server, None, duration_s, warmup_s)
        stored += sum(r.count("json") for r in after)
        rss, _ = server.peak_rss_mib()
    finally:
        server.stop()
    one = f"c=1 p99 {p99(before[0]):.2f} -> {p99(after[0]):.2f} ms"
    many = f"c={CONCURRENCY} p99 {p99(before[1]):.2f} -> {p99(after[1]):.2f} ms"
    print(f"storefill: {stored} stored; {one}, {many}", flush=True)
    return FillResult(before=before, after=after, stored=stored, rss_mib=rss)


def p99(recorder: Recorder) -> float:
    return loadgen.percentile_ms(recorder.latency_ns.get("json", []), 99)
