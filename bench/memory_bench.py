"""Issue 5: constant memory while relaying a stream. Long upstream streams through the gateway,
read fast or slowly, with the gateway's VmRSS sampled every 20 ms.

What can grow: the ResponseBuilder keeps the generated text for the final response (the
`response.completed` event and the stored response), so memory may grow with the text. What
must not: the relayed stream itself (upstream bytes, frames, events) piling up in the
gateway. Two controls separate them: the same stream with every upstream chunk padded with
1 KiB the gateway parses and drops (more upstream bytes, same text), and a slow client (the
bounded queue and TCP flow control must hold the upstream back instead of buffering).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fake_upstream
import loadgen
import rss
import servers
import upstream_env
from stream_client import read_stream
from workload import chat_body, responses_body

LENGTHS = (2_000, 20_000, 50_000, 100_000)
PADDED = (100_000, 1024)  # chunks, padding bytes per chunk
SLOW_CHUNKS = 50_000
SLOW_READ = 16384  # bytes per read
SLOW_PAUSE_S = 0.005  # after each read: at most ~3.3 MB/s, half what the gateway sends
SLOW_RCVBUF = 65536
SAMPLE_S = 0.02
APIS = ("chat", "responses")


@dataclass(frozen=True, slots=True)
class StreamRun:
    api: str  # chat | responses
    client: str  # fast | slow
    chunks: int
    pad: int
    text_bytes: int
    upstream_bytes: int
    client_bytes: int
    client_s: float
    before_kib: int
    peak_kib: int
    after_kib: int
    samples: int
    complete: bool
    gateway_cpu_s: float  # the gateway's CPU time from the request to the settled RSS after

    @property
    def cpu_ms_per_1000_chunks(self) -> float:
        return self.gateway_cpu_s * 1e6 / self.chunks

    @property
    def growth_kib(self) -> int:
        return self.peak_kib - self.before_kib


def _request(api: str, port: int, chunks: int, pad: int) -> loadgen.Request:
    model = f"{upstream_env.PROVIDER}/fake-{chunks}" + (f"-{pad}" if pad else "")
    if api == "chat":
        return loadgen.post_json(api, port, "/v1/chat/completions", chat_body(model, True), True)
    body = responses_body(model, True, store=False)
    return loadgen.post_json(api, port, "/v1/responses", body, True)


async def _one(
    gateway: servers.Server, api: str, chunks: int, pad: int = 0, slow: bool = False
) -> StreamRun:
    pid = gateway.process.pid
    before = rss.wait_settled(pid)
    request = _request(api, gateway.port, chunks, pad)
    cpu = gateway.cpu_s()
    with rss.RSSSampler(pid, SAMPLE_S) as sampler:
        if slow:
            read = await read_stream(
                gateway.port, request, read_size=SLOW_READ, pause_s=SLOW_PAUSE_S,
                rcvbuf=SLOW_RCVBUF,
            )  # fmt: skip
        else:
            read = await read_stream(gateway.port, request)
    after = rss.wait_settled(pid)
    return StreamRun(
        api=api,
        client="slow" if slow else "fast",
        chunks=chunks,
        pad=pad,
        text_bytes=fake_upstream.text_bytes(chunks),
        upstream_bytes=fake_upstream.stream_bytes(chunks, pad),
        client_bytes=read.wire_bytes,
        client_s=read.total_s,
        before_kib=before,
        peak_kib=sampler.peak_kib,
        after_kib=after,
        samples=len(sampler.samples),
        complete=read.complete and read.status == 200,
        gateway_cpu_s=gateway.cpu_s() - cpu,
    )


async def measure(
    gateway_cpus: set[int] | None, upstream_cpus: set[int] | None, src: Path | None
) -> list[StreamRun]:
    """Warm-up streams, then every length per API (fast client), the padded control and the
    slow client."""
    upstream, gateway = upstream_env.start_pair(gateway_cpus, upstream_cpus, src)
    runs: list[StreamRun] = []
    try:
        for api in APIS:  # warm-up: first-use allocations are not the stream's
            await _one(gateway, api, LENGTHS[0])
        for api in APIS:
            for chunks in LENGTHS:
                runs.append(await _one(gateway, api, chunks))
        runs.append(await _one(gateway, "chat", *PADDED))
        for api in APIS:
            runs.append(await _one(gateway, api, SLOW_CHUNKS, slow=True))
    finally:
        gateway.stop()
        upstream.stop()
    return runs
