"""The Chat Completions adapter's own work, timed in-process with perf_counter_ns loops.

    PYTHONPATH=bench .venv/bin/python bench/mapping_cost.py   # prints JSON

It takes a real response and a real event stream from the gateway (the app called in-process
with `local/echo` and the benchmark input), then times, per request: decoding the request
body (chat vs responses), `to_canonical`, `to_chat_completion`, encoding the answer (chat vs
responses), one `ChunkMapper` over the whole stream, and framing the stream (chat vs
responses). Each figure is the median over rounds of the mean of a tight loop, in µs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, get_args

import msgspec
from workload import chat_body, responses_body

ROUNDS = 7
ROUND_S = 0.05  # target length of one round


def per_call_us(fn: Callable[[], object]) -> float:
    """Median over ROUNDS of the mean time of one call, in µs; the loop is sized so that one
    round takes about ROUND_S."""
    n, elapsed = 1, 0
    while elapsed < ROUND_S * 1e9 / 10:
        n *= 2
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter_ns() - start
    n = max(1, int(n * ROUND_S * 1e9 / elapsed))
    means = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        means.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(means)


async def _capture() -> tuple[bytes, bytes]:
    """The gateway's JSON answer and SSE answer for the benchmark input (store off)."""
    from litestar.testing import AsyncTestClient

    from xrouter.entrypoints.http.app import create_app

    json_type = {"content-type": "application/json"}  # anything else is a 415
    async with AsyncTestClient(app=create_app()) as client:
        json_answer = await client.post(
            "/v1/responses",
            content=responses_body("local/echo", False, store=False),
            headers=json_type,
        )
        sse_answer = await client.post(
            "/v1/responses",
            content=responses_body("local/echo", True, store=False),
            headers=json_type,
        )
    return json_answer.content, sse_answer.content


def measure() -> dict[str, Any]:
    """All timings, in µs, and the sizes they were taken on."""
    from xrouter.application.chat_mapping import ChunkMapper, to_canonical, to_chat_completion
    from xrouter.domain.events import StreamEvent
    from xrouter.domain.responses import Response
    from xrouter.entrypoints.http.codec import Codec
    from xrouter.entrypoints.http.sse import SSEWriter

    json_answer, sse_answer = asyncio.run(_capture())
    response = msgspec.json.decode(json_answer, type=Response)
    frames = [f for f in sse_answer.split(b"\n\n") if f.startswith(b"event: ")]
    events = [msgspec.json.decode(f.split(b"\ndata: ", 1)[1], type=StreamEvent) for f in frames]
    codec = Codec()
    sse = SSEWriter(codec, get_args(StreamEvent))
    chat_json, chat_sse = chat_body("local/echo", False), chat_body("local/echo", True)
    resp_json = responses_body("local/echo", False, store=False)
    chat = codec.decode_chat_request(chat_json)
    chat_stream = codec.decode_chat_request(chat_sse)
    completion = to_chat_completion(response)

    def map_stream() -> list[object]:
        mapper = ChunkMapper(include_usage=True)
        return [chunk for event in events for chunk in mapper.map(event)]

    chunks = map_stream()
    gc.collect()
    gc.freeze()  # as the app does after startup
    figures = {
        "decode_chat_request": per_call_us(lambda: codec.decode_chat_request(chat_json)),
        "decode_responses_request": per_call_us(lambda: codec.decode_response_request(resp_json)),
        "to_canonical": per_call_us(lambda: to_canonical(chat)),
        "to_canonical_stream": per_call_us(lambda: to_canonical(chat_stream)),
        "to_chat_completion": per_call_us(lambda: to_chat_completion(response)),
        "encode_chat_completion": per_call_us(lambda: codec.encode(completion)),
        "encode_response": per_call_us(lambda: codec.encode(response)),
        "chunk_mapper_stream": per_call_us(map_stream),
        "frame_chat_stream": per_call_us(lambda: [sse.chat_frame(c) for c in chunks]),  # type: ignore[arg-type]
        "frame_responses_stream": per_call_us(lambda: [sse.frame(e) for e in events]),
    }
    return {
        "us": figures,
        "events": len(events),
        "chunks": len(chunks),
        "python": sys.version.split()[0],
    }


def main() -> int:
    print(json.dumps(measure()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
