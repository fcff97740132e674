"""WebSocket mode: uvicorn's three WebSocket protocols compared on a streamed response.

    .venv/bin/python bench/websocket_bench.py [--seconds 5] [--words 200] [--connections 8]

For each protocol (`websockets`, `websockets-sansio`, `wsproto`) a gateway is started the way
`xrouter serve` runs it (one worker, uvloop + httptools, the connection limits) with only
`ws` changed, and driven over loopback by the `websockets` client: `--connections` sockets
each sending `response.create` for `local/echo` with a `--words`-word input (one text delta
per word), one turn after another, for `--seconds`. Reported per protocol: server messages
per second, the server's CPU time per message (from /proc, so a busy machine moves it less
than throughput), the time from `response.create` to the first event (p50, p99) and the mean
gap between a turn's events. Bounded: about 3 x (seconds + 2) s in all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from websockets.asyncio.client import connect

PROTOCOLS = ("websockets", "websockets-sansio", "wsproto")
LAUNCH = """
import sys
from xrouter.entrypoints.config import Settings
from xrouter.entrypoints.http.server import serve
serve(Settings(), "127.0.0.1", int(sys.argv[1]), 1, ws=sys.argv[2], log_level="warning")
"""


@dataclass
class Result:
    protocol: str
    messages: int
    turns: int
    seconds: float
    cpu_s: float
    first_event_s: list[float]
    gaps_s: list[float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_ready(port: int, deadline_s: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            async with connect(f"ws://127.0.0.1:{port}/v1/responses"):
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not start")


async def client(port: int, words: int, until: float, result: Result) -> None:
    body = json.dumps(
        {
            "type": "response.create",
            "model": "local/echo",
            "store": False,
            "input": " ".join(f"w{i}" for i in range(words)),
        }
    )
    async with connect(f"ws://127.0.0.1:{port}/v1/responses", max_size=None) as ws:
        while time.monotonic() < until:
            sent = time.perf_counter()
            await ws.send(body)
            first = last = None
            count = 0
            while True:
                raw = await ws.recv()
                now = time.perf_counter()
                if first is None:
                    first = now
                last = now
                count += 1
                # The terminal event is the last; checking the prefix spares a full parse.
                if '"type":"response.completed"' in raw[:40] or '"type":"error"' in raw[:40]:
                    break
            assert first is not None and last is not None
            result.first_event_s.append(first - sent)
            if count > 1:
                result.gaps_s.append((last - first) / (count - 1))
            result.messages += count
            result.turns += 1


async def measure(pid: int, port: int, protocol: str, args: argparse.Namespace) -> Result:
    await wait_ready(port)
    result = Result(protocol, 0, 0, args.seconds, 0.0, [], [])
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    until = started + args.seconds
    await asyncio.gather(
        *(client(port, args.words, until, result) for _ in range(args.connections))
    )
    result.seconds = time.monotonic() - started
    result.cpu_s = cpu_seconds(pid) - cpu_before
    return result


def run(protocol: str, args: argparse.Namespace) -> Result:
    """One gateway with `protocol`, measured, then stopped."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(port), protocol],
        env={**os.environ, "XR_DISCOVERY": "false"},
    )
    try:
        return asyncio.run(measure(server.pid, port, protocol, args))
    finally:
        server.terminate()
        server.wait(10)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--words", type=int, default=200)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    print(
        f"local/echo, {args.words} words a turn, {args.connections} connections, "
        f"{args.seconds:g} s each\n"
    )
    print(
        "| protocol | messages/s | turns/s | server CPU µs/message | first event p50 ms "
        "| first event p99 ms | gap between events µs |"
    )
    print("|---|---|---|---|---|---|---|")
    for protocol in PROTOCOLS:
        r = run(protocol, args)
        print(
            f"| `{protocol}` | {r.messages / r.seconds:,.0f} | {r.turns / r.seconds:,.1f} "
            f"| {r.cpu_s / r.messages * 1e6:.1f} "
            f"| {percentile(r.first_event_s, 50) * 1e3:.2f} "
            f"| {percentile(r.first_event_s, 99) * 1e3:.2f} "
            f"| {statistics.mean(r.gaps_s) * 1e6:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
