"""Issue 10: what a provider's shared in-flight lease costs per request.

Times `acquire()` + `release()` of RedisInflight (adapters/redis/inflight.py) on a
redis-server this script starts on a free loopback port, against LocalInflight (the process's
own limit), on uvloop as `xrouter serve` runs. The free path only (no waiting): the cost every
request pays. A release answers at once and frees the slot in Redis in the background; the
figure "acquire + release, round trips done" waits for that background round trip too, so it
is the whole cost on Redis's side; "acquire" alone is what a request's latency sees.
At c=32 the same pairs run from 32 tasks at once (one process), for throughput and the
gateway's CPU per pair (what a request pays on a busy worker).

    .venv/bin/python bench/inflight_lease.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import uvloop

from xrouter.adapters.providers.inflight import LocalInflight
from xrouter.adapters.providers.transport_settings import TransportSettings
from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.adapters.redis.inflight import RedisInflight

SETTINGS = TransportSettings(base_url="http://unused.invalid", max_inflight=64)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def drained(limiter: RedisInflight) -> None:
    """Wait for the background releases (a private attribute: this is a measurement)."""
    if limiter._forgetter is not None:
        await limiter._forgetter


async def serial(limiter: LocalInflight | RedisInflight, n: int, drain: bool) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        lease = await limiter.acquire()
        limiter.release(lease)
        if drain and isinstance(limiter, RedisInflight):
            await drained(limiter)
        samples.append(time.perf_counter() - started)
    return samples


async def acquire_only(limiter: RedisInflight, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        lease = await limiter.acquire()
        samples.append(time.perf_counter() - started)
        limiter.release(lease)
        await drained(limiter)
    return samples


async def concurrent(limiter: RedisInflight, n: int, c: int) -> tuple[float, float]:
    """Pairs per second, and this process's CPU per pair in microseconds (Redis's own CPU is
    another process's)."""

    async def worker(count: int) -> None:
        for _ in range(count):
            limiter.release(await limiter.acquire())

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(n // c) for _ in range(c)))
    await drained(limiter)
    pairs = (n // c) * c
    return pairs / (time.perf_counter() - started), (time.process_time() - cpu) / pairs * 1e6


def us(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1e6
    p99 = ordered[int(len(ordered) * 0.99)] * 1e6
    return f"p50 {p50:8.1f} us   p99 {p99:8.1f} us"


async def measure(url: str, n: int) -> None:
    redis = SharedRedis(RedisSettings(url=url))
    for _ in range(100):
        if await redis.ping():
            break
        await asyncio.sleep(0.05)
    shared = RedisInflight("bench", SETTINGS, redis, lease_s=30.0)
    local = LocalInflight("bench", SETTINGS)
    await serial(shared, 500, drain=True)  # warm up: connections, script cache
    print(f"n={n}, uvloop, redis-server on loopback")
    print(f"local  acquire + release              {us(await serial(local, n, False))}")
    print(f"redis  acquire (request latency)      {us(await acquire_only(shared, n))}")
    print(f"redis  acquire + release, round trips {us(await serial(shared, n, True))}")
    rate, cpu_us = await concurrent(shared, n, 32)
    print(f"redis  c=32 pairs/s                   {rate:10.0f}   gateway CPU {cpu_us:6.1f} us/pair")
    await shared.aclose()
    await redis.aclose()


def main(n: int) -> None:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("needs redis-server on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.2)
            uvloop.run(measure(f"redis://127.0.0.1:{port}/0", n))
        finally:
            process.kill()
            process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    main(parser.parse_args().n)
