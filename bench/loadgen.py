"""A cheap HTTP/1.1 keep-alive load generator: asyncio protocols on uvloop, no HTTP library.

Each connection sends one request, parses the response just enough to know where it ends
(Content-Length or chunked), and records the time to the first body byte and to the end.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import cast

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Request:
    """A ready-to-send request and the name its samples are filed under."""

    name: str
    raw: bytes
    stream: bool
    port: int = 0  # where to send it; 0: the phase's port


def get(name: str, port: int, path: str) -> Request:
    raw = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    return Request(name, raw, stream=False, port=port)


def post_json(name: str, port: int, path: str, body: bytes, stream: bool) -> Request:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return Request(name, head.encode() + body, stream=stream, port=port)


@dataclass(slots=True)
class Sample:
    status: int
    ttfb_ns: int
    total_ns: int
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[Sample] | None = None
        self._keep_body = False
        self._reset()

    def _reset(self) -> None:
        self._buf.clear()
        self._head_end = -1
        self._status = 0
        self._length = -1  # Content-Length, or -1 for chunked
        self._pos = 0  # chunked parser position in _buf
        self._chunks: list[bytes] = []
        self._t0 = 0
        self._ttfb = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed mid-response"))

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def send(self, request: Request, keep_body: bool) -> asyncio.Future[Sample]:
        assert self._transport is not None
        self._reset()
        self._keep_body = keep_body
        self._waiter = asyncio.get_running_loop().create_future()
        self._t0 = time.perf_counter_ns()
        self._transport.write(request.raw)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head_end = end + 4
            self._pos = self._head_end
            head = bytes(buf[:end]).lower()
            self._status = int(head[9:12])
            marker = head.find(b"\r\ncontent-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker + 2)
                self._length = int(head[marker + 17 : line_end if line_end > 0 else None])
        if self._ttfb == 0 and len(buf) > self._head_end:
            self._ttfb = time.perf_counter_ns()
        if self._length >= 0:
            if len(buf) - self._head_end >= self._length:
                self._finish(bytes(buf[self._head_end : self._head_end + self._length]))
        else:
            self._parse_chunks()

    def _parse_chunks(self) -> None:
        buf = self._buf
        while True:
            line_end = buf.find(b"\r\n", self._pos)
            if line_end < 0:
                return
            size = int(buf[self._pos : line_end], 16)
            start = line_end + 2
            if size == 0:
                if len(buf) >= start + 2:
                    self._finish(b"".join(self._chunks))
                return
            if len(buf) < start + size + 2:
                return
            if self._keep_body:
                self._chunks.append(bytes(buf[start : start + size]))
            else:  # keep only the last chunk: enough to check the stream's end
                self._chunks[:] = [bytes(buf[start : start + size])]
            self._pos = start + size + 2

    def _finish(self, body: bytes) -> None:
        now = time.perf_counter_ns()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            ttfb = (self._ttfb or now) - self._t0
            waiter.set_result(Sample(self._status, ttfb, now - self._t0, body))


async def connect(port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Connection, HOST, port)
    return protocol


async def fetch(port: int, request: Request) -> Sample:
    """One request on a fresh connection, keeping the whole body (for probes and checks)."""
    conn = await connect(request.port or port)
    try:
        return await asyncio.wait_for(conn.send(request, keep_body=True), 10)
    finally:
        conn.close()


def _valid(request: Request, sample: Sample) -> bool:
    if sample.status != 200:
        return False
    return not request.stream or sample.body.endswith(b"data: [DONE]\n\n")


@dataclass(slots=True)
class Recorder:
    """Samples per request name, for one measured phase."""

    latency_ns: dict[str, list[int]] = field(default_factory=dict)
    ttfb_ns: dict[str, list[int]] = field(default_factory=dict)
    errors: int = 0
    elapsed_s: float = 0.0
    server_cpu_s: float = 0.0  # CPU time the server used during the phase, set by the caller
    client_cpu_s: float = 0.0  # CPU time this load generator used during the phase

    def add(self, request: Request, sample: Sample) -> None:
        if not _valid(request, sample):
            self.errors += 1
            return
        self.latency_ns.setdefault(request.name, []).append(sample.total_ns)
        self.ttfb_ns.setdefault(request.name, []).append(sample.ttfb_ns)

    def count(self, name: str) -> int:
        return len(self.latency_ns.get(name, ()))

    def rate(self, name: str) -> float:
        return self.count(name) / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def client_busy(self) -> float:
        """Share of one core the load generator used: near 1.0 means the client, not the
        server, may be the limit."""
        return self.client_cpu_s / self.elapsed_s if self.elapsed_s else 0.0

    def cpu_ms_per_request(self) -> float:
        total = sum(len(samples) for samples in self.latency_ns.values())
        return self.server_cpu_s * 1000 / total if total else math.nan


async def _worker(
    port: int, requests: list[Request], offset: int, deadline: float, recorder: Recorder
) -> None:
    conns: dict[int, _Connection] = {}  # one keep-alive connection per port
    i = offset
    try:
        while time.perf_counter() < deadline:
            request = requests[i % len(requests)]
            i += 1
            target = request.port or port
            conn = conns.get(target)
            if conn is None or not conn.open:
                conn = conns[target] = await connect(target)
            try:
                sample = await asyncio.wait_for(conn.send(request, keep_body=False), 10)
            except (ConnectionError, TimeoutError):
                recorder.errors += 1
                conn.close()
                continue
            recorder.add(request, sample)
    finally:
        for conn in conns.values():
            conn.close()


async def run_phase(
    port: int, requests: list[Request], concurrency: int, duration_s: float
) -> Recorder:
    """Closed loop: `concurrency` workers, each cycling through `requests` back to back (one
    keep-alive connection per port: requests may go to different servers), for `duration_s`
    seconds. Requests in flight at the deadline are finished and counted."""
    recorder = Recorder()
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + duration_s
    await asyncio.gather(
        *(_worker(port, requests, n, deadline, recorder) for n in range(concurrency))
    )
    recorder.elapsed_s = time.perf_counter() - start
    recorder.client_cpu_s = time.process_time() - cpu
    return recorder


def percentile_ms(samples_ns: list[int], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not samples_ns:
        return math.nan
    ordered = sorted(samples_ns)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1] / 1e6


def merged(recorders: list[Recorder]) -> Recorder:
    """One recorder holding the samples, time and CPU of several phases."""
    out = Recorder()
    for r in recorders:
        for name, samples in r.latency_ns.items():
            out.latency_ns.setdefault(name, []).extend(samples)
        for name, samples in r.ttfb_ns.items():
            out.ttfb_ns.setdefault(name, []).extend(samples)
        out.errors += r.errors
        out.elapsed_s += r.elapsed_s
        out.server_cpu_s += r.server_cpu_s
        out.client_cpu_s += r.client_cpu_s
    return out
