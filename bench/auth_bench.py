"""Issue 12: what gateway keys with limits cost the gateway, on Redis.

Two gateway configurations, one worker each, both with XR_STORAGE=redis on one throwaway
redis-server, answering non-stream `POST /v1/responses` on the local provider (`local/echo`,
no upstream: the gateway and Redis are all there is to measure; `store` left at its default,
true, so every response is saved to Redis as well):

- `none`: XR_AUTH=none, no key sent;
- `keys`: XR_AUTH=keys with XR_AUTH_SECRET, and one key made before the gateways start by
  `xrouter keys create bench --rpm 100000000 --tpm 1000000000 --concurrent 10000 --json` on the
  same Redis: every limit is on (each request is admitted by the limiter's Lua script, takes
  and releases a concurrency lease, and is charged its tokens) and none is ever reached. Its
  secret is sent as `Authorization: Bearer`.

Every `keys` request must be authenticated and admitted: before measuring, a probe checks that
a request without the key answers 401 and that the key's answers carry the key's
x-ratelimit-limit-requests; while measuring, any answer other than 200 (a 401 or a 429 above
all) makes the run invalid, and it stops with an error.

Interleaved like the telemetry suite, so that a shared machine's other load falls on both
alike: at c=1 one connection to each gateway, requests alternating none, keys (keys, none
every other round); at c=32 one slice per gateway per round. Pinning (2 cores): both gateways
on CPU 0 (one loaded at a time); redis-server and the load generator on CPU 1.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import loadgen
import msgspec
import servers
from loadgen import Recorder
from store_bench import RedisProcess
from workload import responses_body

CONCURRENCY = 32
ROUNDS = 4
VARIANTS = ("none", "keys")
MODEL = "local/echo"
KEY_LIMITS = ("--rpm", "100000000", "--tpm", "1000000000", "--concurrent", "10000")
# Inherited settings that would change what a variant means; removed from the environment the
# servers and the CLI inherit.
INHERITED = (
    "XR_AUTH", "XR_BYOK", "XR_ADMIN_KEY", "XR_KEYS_FILE", "XR_STORAGE", "XR_REDIS",
    "XR_METRICS", "XR_ACCESS_LOG", "XR_LOG_LEVEL", "XR_LOG_FORMAT", "XR_INFLIGHT", "OTEL_",
)  # fmt: skip


@dataclass
class VariantResult:
    """One gateway configuration (one process): its share of each c=1 round and its c=32 slice
    of each round, with its own process's CPU time."""

    serial: list[Recorder] = field(default_factory=list)
    load: list[Recorder] = field(default_factory=list)
    redis_cpu_s: float = 0.0  # redis-server's CPU over this variant's c=32 slices
    redis_calls: dict[str, int] = field(default_factory=dict)  # by command, c=32 slices


@dataclass
class AuthResult:
    variants: dict[str, VariantResult] = field(default_factory=dict)
    redis_version: str = ""
    key_id: str = ""
    limit_header: str = ""  # x-ratelimit-limit-requests on the probe's answer
    unauthenticated_status: int = 0  # the probe without a key
    removed_env: list[str] = field(default_factory=list)
    errors: int = 0
    steal: float = 0.0  # share of the machine's CPU time the hypervisor took while measuring


def _clean_environment() -> list[str]:
    names = sorted(k for k in os.environ if k.startswith(INHERITED))
    for name in names:
        del os.environ[name]
    return names


def _base_env(redis: RedisProcess) -> dict[str, str]:
    return {"XR_DISCOVERY": "false", "XR_STORAGE": "redis", "XR_REDIS_URL": redis.url}


def variant_env(variant: str, redis: RedisProcess, auth_secret: str) -> dict[str, str]:
    if variant == "none":
        return _base_env(redis) | {"XR_AUTH": "none"}
    return _base_env(redis) | {"XR_AUTH": "keys", "XR_AUTH_SECRET": auth_secret}


def create_key(redis: RedisProcess, auth_secret: str, src: Path | None) -> tuple[str, str]:
    """`xrouter keys create` on the bench's Redis (the code measured: `src` when given);
    (key id, secret)."""
    env = {**os.environ, **_base_env(redis), "XR_AUTH_SECRET": auth_secret}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    done = subprocess.run(
        [str(servers.VENV_BIN / "xrouter"), "keys", "create", "bench", *KEY_LIMITS, "--json"],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"xrouter keys create failed: {done.stderr.decode()[-500:]}")
    created = msgspec.json.decode(done.stdout)
    return str(created["key"]["id"]), str(created["secret"])


def _request(name: str, port: int, secret: str | None) -> loadgen.Request:
    """A non-stream Responses request, with the gateway key as a bearer token when given."""
    body = responses_body(MODEL, False)
    auth = f"Authorization: Bearer {secret}\r\n" if secret else ""
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: {loadgen.HOST}:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return loadgen.Request(name, head.encode() + body, stream=False, port=port)


def _head(request: loadgen.Request) -> tuple[int, dict[str, str]]:
    """Send one request on its own connection; (status, headers). The load generator keeps
    no headers, and the probe needs the rate-limit ones."""
    with socket.create_connection((loadgen.HOST, request.port), timeout=10) as sock:
        sock.sendall(request.raw.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def _probe(gateways: dict[str, servers.Server], secret: str, result: AuthResult) -> None:
    """Fail unless `none` answers 200, `keys` answers 401 without the key and 200 with it, its
    answer carrying the key's request limit (so the limiter admitted it)."""
    status, _ = _head(_request("json", gateways["none"].port, None))
    if status != 200:
        raise RuntimeError(f"`none` answered {status}")
    result.unauthenticated_status, _ = _head(_request("json", gateways["keys"].port, None))
    if result.unauthenticated_status != 401:
        raise RuntimeError(f"`keys` answered {result.unauthenticated_status} without a key")
    status, headers = _head(_request("json", gateways["keys"].port, secret))
    result.limit_header = headers.get("x-ratelimit-limit-requests", "")
    if status != 200 or result.limit_header != KEY_LIMITS[1]:
        raise RuntimeError(
            f"`keys` answered {status} with the key, x-ratelimit-limit-requests "
            f"{result.limit_header!r} (want 200 and {KEY_LIMITS[1]})"
        )


def _check(variant: str, recorder: Recorder, phase: str) -> None:
    """Any answer but 200 (for `keys`: a 401 or a 429 above all) makes the run invalid."""
    if recorder.errors:
        raise RuntimeError(
            f"INVALID RUN: {recorder.errors} `{variant}` requests at {phase} did not answer 200 "
            "(with `keys`: a request not authenticated or not admitted)"
        )


def _own(recorder: Recorder, name: str, elapsed_s: float, cpu_s: float) -> Recorder:
    """The samples of request `name` from an interleaved phase, filed under "json"."""
    own = Recorder(elapsed_s=elapsed_s, server_cpu_s=cpu_s)
    own.latency_ns["json"] = recorder.latency_ns.get(name, [])
    return own


def _command_calls(redis: RedisProcess) -> dict[str, int]:
    """Calls so far per Redis command (`INFO commandstats`; a script is one EVALSHA)."""
    calls = {}
    for line in redis.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, stats = line[len("cmdstat_") :].split(":", 1)
            calls[name] = int(stats.split("calls=", 1)[1].split(",", 1)[0])
    return calls


def _cpu_ticks() -> tuple[int, int]:
    """(steal, total) ticks of all CPUs so far (`/proc/stat`): a virtual machine's CPUs can be
    taken by its host while its load average says it is idle."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / servers.CLOCK_TICKS


async def _serial_round(
    gateways: dict[str, servers.Server],
    requests: dict[str, loadgen.Request],
    result: AuthResult,
    duration_s: float,
    index: int,
) -> None:
    """c=1, one connection to each gateway, requests alternating between them; reversed every
    other round, so that neither always follows the other."""
    order = [requests[v] for v in gateways]
    if index % 2:
        order.reverse()
    cpu = {v: g.cpu_s() for v, g in gateways.items()}
    recorder = await loadgen.run_phase(order[0].port, order, 1, duration_s)
    for variant, gateway in gateways.items():
        own = _own(recorder, variant, recorder.elapsed_s, gateway.cpu_s() - cpu[variant])
        result.variants[variant].serial.append(own)
    _check("none` or `keys", recorder, "c=1")  # an interleaved phase does not say whose


async def _load_slice(
    variant: str,
    gateway: servers.Server,
    request: loadgen.Request,
    redis: RedisProcess,
    result: AuthResult,
    duration_s: float,
) -> Recorder:
    """c=32 against one gateway for `duration_s`; its samples filed under "json"."""
    request = dataclasses.replace(request, name="json")
    runs = result.variants[variant]
    calls = _command_calls(redis)
    cpu, redis_cpu = gateway.cpu_s(), _process_cpu_s(redis.process.pid)
    load = await loadgen.run_phase(gateway.port, [request], CONCURRENCY, duration_s)
    load.server_cpu_s = gateway.cpu_s() - cpu
    runs.redis_cpu_s += _process_cpu_s(redis.process.pid) - redis_cpu
    for name, count in _command_calls(redis).items():
        runs.redis_calls[name] = runs.redis_calls.get(name, 0) + count - calls.get(name, 0)
    _check(variant, load, f"c={CONCURRENCY}")
    runs.load.append(load)
    return load


async def _measure(
    gateways: dict[str, servers.Server],
    requests: dict[str, loadgen.Request],
    redis: RedisProcess,
    result: AuthResult,
    duration_s: float,
    warmup_s: float,
) -> None:
    for variant, gateway in gateways.items():
        warmup = await loadgen.run_phase(gateway.port, [requests[variant]], CONCURRENCY, warmup_s)
        _check(variant, warmup, "warm-up")
    for index in range(ROUNDS):
        await _serial_round(gateways, requests, result, duration_s, index)
        rates = []
        for variant, gateway in gateways.items():
            load = await _load_slice(
                variant, gateway, requests[variant], redis, result, duration_s / 2
            )
            rates.append(f"{variant} {load.rate('json'):.0f}")
        p50s = [f"{v} {serial_p50(result.variants[v].serial[-1]):.3f}" for v in gateways]
        print(
            f"auth round {index + 1}: c=1 p50 ms {', '.join(p50s)}; "
            f"c={CONCURRENCY} req/s {', '.join(rates)}",
            flush=True,
        )


async def measure(
    gateway_cpus: set[int] | None,
    other_cpus: set[int] | None,
    src: Path | None,
    duration_s: float,
    warmup_s: float,
) -> AuthResult:
    """Start redis-server, make the key, start one gateway per variant; ROUNDS interleaved
    rounds. Raises RuntimeError when any request was not answered 200."""
    result = AuthResult(removed_env=_clean_environment())
    result.variants = {v: VariantResult() for v in VARIANTS}
    auth_secret = secrets.token_urlsafe(32)
    redis = RedisProcess(other_cpus)
    gateways: dict[str, servers.Server] = {}
    try:
        result.redis_version = redis.cli("INFO", "server").split("redis_version:")[1].split()[0]
        result.key_id, secret = create_key(redis, auth_secret, src)
        for variant in VARIANTS:
            gateways[variant] = servers.start(
                "xrouter", servers.GATEWAY, env=variant_env(variant, redis, auth_secret),
                cpus=gateway_cpus, src=src,
            )  # fmt: skip
        _probe(gateways, secret, result)
        requests = {
            "none": _request("none", gateways["none"].port, None),
            "keys": _request("keys", gateways["keys"].port, secret),
        }
        steal, total = _cpu_ticks()
        await _measure(gateways, requests, redis, result, duration_s, warmup_s)
        steal_after, total_after = _cpu_ticks()
        result.steal = (steal_after - steal) / max(1, total_after - total)
    finally:
        for gateway in gateways.values():
            gateway.stop()
        redis.stop()
    return result


def serial_p50(recorder: Recorder) -> float:
    return loadgen.percentile_ms(recorder.latency_ns.get("json", []), 50)
