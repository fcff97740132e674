"""What an upstream answer may cost the gateway: size limits on bodies, events and inflation,
bounded content decoding, and 2xx answers that are not what was asked for (a stream without
`[DONE]`, an HTML page, an empty 200). The transport against the fake upstream over loopback,
and once through `xrouter serve`."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
import tracemalloc
import zlib
from functools import cache

import httpx
import pytest

from tests.helpers import running_xrouter
from tests.transport_harness import (
    CHAT,
    Harness,
    chat_body,
    collect,
    harness_fixture,  # noqa: F401  (the `harness` fixture)
)
from tests.upstreams import FakeUpstream, Reply, sse_frame
from xrouter.adapters.providers.transport import SSEEvent
from xrouter.domain.errors import InvalidRequest, ProviderError

MIB = 1024 * 1024
SECRET_PAGE = b"<html><title>Sign in</title><input value='sk-proxy-session-SECRET'></html>"


@cache
def gzip_bomb(inflated_mib: int) -> bytes:
    """One gzip member that inflates to `inflated_mib` MiB of zeros (about 1000:1).

    Built from one fully flushed deflate block repeated, so making it takes a fraction of a
    second instead of compressing the whole size; gzip.decompress agrees it is valid."""
    block_maker = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MIB)
    block = block_maker.compress(zeros) + block_maker.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()
    crc = 0
    for _ in range(inflated_mib):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = crc.to_bytes(4, "little") + ((inflated_mib * MIB) % 2**32).to_bytes(4, "little")
    return header + block * inflated_mib + final + trailer


def test_the_bomb_is_a_valid_gzip_body() -> None:
    assert gzip.decompress(gzip_bomb(3)) == bytes(3 * MIB)


# -- bounded decoding ----------------------------------------------------------------------


async def test_a_gzip_bomb_fails_fast_with_bounded_memory(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    bomb = gzip_bomb(512)
    assert len(bomb) < 600_000  # half a megabyte on the wire, 512 MiB inflated
    harness.upstream.script(
        CHAT,
        Reply(headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, body=bomb),
    )
    transport = harness.transport(max_decompressed_bytes=4 * MIB)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with (
            caplog.at_level(logging.WARNING, logger="xrouter.transport"),
            pytest.raises(ProviderError) as caught,
        ):
            await transport.post_json("/chat/completions", chat_body(), {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5.0
    # Inflating whole chunks (httpx's decoders) would hold tens of MiB at once, reading the
    # answer whole 512 MiB: the decoder stops at the limit, one 64 KiB piece at a time.
    assert peak < 16 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"
    assert caught.value.status == 502
    message = caught.value.message
    assert "fake sent the decompressed (gzip) answer larger than 4194304 bytes" in message
    assert "XR_FAKE_MAX_DECOMPRESSED_BYTES" in message
    assert "XR_FAKE_MAX_DECOMPRESSED_BYTES" in caplog.text
    assert transport.inflight == 0


async def test_a_compressed_stream_is_bounded_in_total(harness: Harness) -> None:
    # Tiny events, each well under the event limit, inflating past the total.
    frames = sse_frame({"n": 1}) * 50_000
    body = gzip.compress(frames)
    harness.upstream.script(
        CHAT,
        Reply(
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"},
            chunks=[body],
        ),
    )
    transport = harness.transport(max_decompressed_bytes=100_000)
    received = 0
    with pytest.raises(ProviderError, match="XR_FAKE_MAX_DECOMPRESSED_BYTES"):
        async for batch in transport.stream_events("/chat/completions", b"{}", {}):
            received += len(batch)
    assert 0 < received < 50_000


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "raw-deflate"])
async def test_compressed_answers_are_decoded(harness: Harness, encoding: str) -> None:
    payload = json.dumps({"choices": [], "text": "squeezed " * 2000}).encode()
    if encoding in ("gzip", "x-gzip"):
        body = gzip.compress(payload)
    elif encoding == "deflate":
        body = zlib.compress(payload)
    else:  # "deflate" without its zlib wrapper, as some servers send it
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = compressor.compress(payload) + compressor.flush()
    name = "deflate" if encoding == "raw-deflate" else encoding
    harness.upstream.script(
        CHAT,
        Reply(headers={"Content-Type": "application/json", "Content-Encoding": name}, body=body),
    )
    reply = await harness.transport().post_json("/chat/completions", chat_body(), {})
    assert reply.content == payload


async def test_a_compressed_stream_is_decoded_event_by_event(harness: Harness) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunks = [
        compressor.compress(sse_frame({"n": n})) + compressor.flush(zlib.Z_SYNC_FLUSH)
        for n in range(3)
    ]
    chunks.append(compressor.compress(b"data: [DONE]\n\n") + compressor.flush())
    harness.upstream.script(
        CHAT,
        Reply(
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"},
            chunks=chunks,
        ),
    )
    events = await collect(harness.transport().stream_events("/chat/completions", b"{}", {}))
    assert [json.loads(e.data)["n"] for e in events] == [0, 1, 2]


async def test_non_stream_calls_ask_for_gzip_and_streams_for_identity(harness: Harness) -> None:
    transport = harness.transport()
    await transport.post_json("/chat/completions", chat_body(), {})
    await collect(transport.stream_events("/chat/completions", chat_body(stream=True), {}))
    await transport.get_json("/models", {})
    sent = [r.headers.get("accept-encoding") for r in harness.upstream.received]
    assert sent == ["gzip, deflate", "identity", "gzip, deflate"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip", "compress"])
async def test_an_encoding_the_gateway_does_not_decode_is_a_502(
    harness: Harness, stream: bool, encoding: str
) -> None:
    content_type = "text/event-stream" if stream else "application/json"
    harness.upstream.script(
        CHAT,
        Reply(
            headers={"Content-Type": content_type, "Content-Encoding": encoding}, body=b"\x00" * 64
        ),
    )
    transport = harness.transport()
    with pytest.raises(ProviderError) as caught:
        if stream:
            await collect(transport.stream_events("/chat/completions", b"{}", {}))
        else:
            await transport.post_json("/chat/completions", chat_body(), {})
    assert caught.value.status == 502
    assert f"encoded as `{encoding}`" in caught.value.message
    assert "gzip, deflate or identity" in caught.value.message
    assert harness.upstream.hits(CHAT) == 1  # not retried: the same answer would come back


async def test_corrupt_gzip_data_is_a_502(harness: Harness) -> None:
    body = gzip.compress(b'{"a": 1}')[:12] + b"not deflate at all"
    harness.upstream.script(
        CHAT,
        Reply(headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, body=body),
    )
    with pytest.raises(ProviderError, match="its gzip data is corrupt"):
        await harness.transport().post_json("/chat/completions", chat_body(), {})


async def test_a_gzip_error_body_is_decoded_for_its_message(harness: Harness) -> None:
    envelope = {"error": {"message": "bad " + "x" * 40, "type": "invalid_request_error"}}
    harness.upstream.script(
        CHAT,
        Reply(
            status=400,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            body=gzip.compress(json.dumps(envelope).encode()),
        ),
    )
    with pytest.raises(InvalidRequest) as caught:
        await harness.transport().post_json("/chat/completions", chat_body(), {})
    assert caught.value.message == "fake: bad " + "x" * 40


# -- size limits ---------------------------------------------------------------------------


async def test_a_body_over_the_limit_fails_and_its_connection_is_dropped(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    big = json.dumps({"choices": [], "pad": "x" * (4 * MIB)}).encode()
    harness.upstream.script(CHAT, Reply(headers={"Content-Type": "application/json"}, body=big))
    transport = harness.transport(max_body_bytes=MIB, max_retries=2)
    with (
        caplog.at_level(logging.WARNING, logger="xrouter.transport"),
        pytest.raises(ProviderError) as caught,
    ):
        await transport.post_json("/chat/completions", chat_body(), {})
    assert caught.value.status == 502
    assert caught.value.message.startswith("fake sent a body larger than 1048576 bytes")
    assert "XR_FAKE_MAX_BODY_BYTES" in caught.value.message
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("XR_FAKE_MAX_BODY_BYTES" in line for line in warnings)
    assert harness.upstream.hits(CHAT) == 1  # a limit is final, never retried
    # The half-read connection was dropped, not pooled: the next call works on a new one.
    reply = await transport.post_json("/chat/completions", chat_body("next"), {})
    assert reply.json()["choices"][0]["message"]["content"] == "next"
    assert harness.upstream.connections == 2
    assert transport.inflight == 0


async def test_an_answer_head_over_the_limit_is_a_502_naming_its_setting(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    padded = {"Content-Type": "application/json", "X-Pad": "p" * 20_000}
    harness.upstream.script(CHAT, Reply(headers=padded, body=b'{"choices": []}'))
    transport = harness.transport(max_head_bytes=8 * 1024)
    with (
        caplog.at_level(logging.WARNING, logger="xrouter.transport"),
        pytest.raises(ProviderError) as caught,
    ):
        await transport.post_json("/chat/completions", chat_body(), {})
    assert caught.value.status == 502
    message = caught.value.message
    assert message.startswith("fake sent a response head larger than 8192 bytes"), message
    assert "XR_FAKE_MAX_HEAD_BYTES" in message
    assert "XR_FAKE_MAX_HEAD_BYTES" in caplog.text
    # The same head fits the default limit.
    reply = await harness.transport().post_json("/chat/completions", chat_body("next"), {})
    assert reply.json()["choices"][0]["message"]["content"] == "next"


async def test_a_body_at_the_limit_is_accepted(harness: Harness) -> None:
    body = json.dumps({"pad": "x" * 1000}).encode()
    harness.upstream.script(CHAT, Reply(headers={"Content-Type": "application/json"}, body=body))
    reply = await harness.transport(max_body_bytes=len(body)).post_json(
        "/chat/completions", chat_body(), {}
    )
    assert reply.content == body


async def test_one_endless_sse_line_fails_at_the_limit_without_waiting_for_its_end(
    harness: Harness,
) -> None:
    # 2 MiB of one `data:` line, no line break, then silence: a parser that checked only
    # complete lines would wait for the end and hit the read timeout instead.
    piece = b"x" * (64 * 1024)
    harness.upstream.script(
        CHAT,
        Reply.sse([sse_frame({"n": 1}), b"data: " + piece, *[piece] * 31], done=False, end="stall"),
    )
    transport = harness.transport(max_event_bytes=256 * 1024, read_timeout_s=5.0)
    received: list[SSEEvent] = []
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        async for batch in transport.stream_events("/chat/completions", b"{}", {}):
            received += batch
    assert time.monotonic() - started < 4.0
    assert received == [SSEEvent(None, '{"n":1}')]
    assert "fake sent one server-sent event larger than 262144 bytes" in caught.value.message
    assert "XR_FAKE_MAX_EVENT_BYTES" in caught.value.message
    assert await asyncio.to_thread(harness.upstream.wait_until, lambda up: up.client_aborts == 1)
    assert transport.inflight == 0


async def test_events_under_the_limit_pass_whatever_the_stream_total(harness: Harness) -> None:
    frames = [{"n": n, "pad": "y" * 900} for n in range(300)]  # ~280 KiB in all
    harness.upstream.script(CHAT, Reply.sse(frames))
    transport = harness.transport(max_event_bytes=4096, max_body_bytes=1024)
    events = await collect(transport.stream_events("/chat/completions", b"{}", {}))
    assert len(events) == 300


# -- 2xx answers that are not the stream asked for -----------------------------------------


async def test_a_stream_that_ends_without_done_fails_after_its_events(harness: Harness) -> None:
    harness.upstream.script(CHAT, Reply.sse([{"n": 1}, {"n": 2}], done=False))
    transport = harness.transport()
    received: list[SSEEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for batch in transport.stream_events("/chat/completions", b"{}", {}):
            received += batch
    assert received == [SSEEvent(None, '{"n":1}'), SSEEvent(None, '{"n":2}')]
    assert caught.value.message == "fake closed the stream before `[DONE]`."
    assert caught.value.status == 502
    assert transport.inflight == 0


async def test_require_done_false_accepts_a_clean_end(harness: Harness) -> None:
    harness.upstream.script(CHAT, Reply.sse([{"n": 1}], done=False))
    stream = harness.transport().stream_events("/chat/completions", b"{}", {}, require_done=False)
    assert await collect(stream) == [SSEEvent(None, '{"n":1}')]


@pytest.mark.parametrize(
    ("reply", "described"),
    [
        (Reply(headers={"Content-Type": "text/html; charset=utf-8"}, body=SECRET_PAGE),
         f"status 200, `text/html` and {len(SECRET_PAGE)} bytes"),
        (Reply(headers={"Content-Type": "text/html"}, chunks=[SECRET_PAGE[:20], SECRET_PAGE[20:]]),
         f"status 200, `text/html` and {len(SECRET_PAGE)} bytes"),
        (Reply(), "status 200, no content type and an empty body"),
        (Reply(status=204), "status 204, no content type and an empty body"),
    ],
)  # fmt: skip
async def test_a_2xx_that_is_not_an_event_stream_fails_before_the_first_event(
    harness: Harness, reply: Reply, described: str
) -> None:
    harness.upstream.script(CHAT, reply)
    transport = harness.transport()
    with pytest.raises(ProviderError) as caught:
        await collect(transport.stream_events("/chat/completions", b"{}", {}))
    message = caught.value.message
    assert message == (
        f"fake answered a streaming request with {described} instead of an event stream "
        "(`text/event-stream`)."
    )
    assert "SECRET" not in message and "Sign in" not in message
    assert harness.upstream.hits(CHAT) == 1
    assert transport.inflight == 0


# -- through the gateway -------------------------------------------------------------------


def test_an_oversized_upstream_answer_is_a_502_json_error_for_the_client(
    fake_upstream: FakeUpstream,
) -> None:
    answer = {"id": "x", "object": "chat.completion", "choices": [], "pad": "z" * 200_000}
    fake_upstream.script(CHAT, Reply.json(answer))
    env = {
        "XR_OPENAI_BASE_URL": fake_upstream.base_url,
        "XR_OPENAI_API_KEY": "sk-configured",
        "XR_OPENAI_MAX_BODY_BYTES": "65536",
        "XR_DISCOVERY": "false",
    }
    with running_xrouter(env) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        reply = client.post("/v1/responses", json={"model": "openai/gpt-test", "input": "hi"})
        after = client.post("/v1/responses", json={"model": "openai/gpt-test", "input": "again"})
    assert reply.status_code == 502
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert error["code"] == "provider_error"
    assert "larger than 65536 bytes" in error["message"]
    assert "XR_OPENAI_MAX_BODY_BYTES" in error["message"]
    assert after.status_code == 200
    assert after.json()["output"][0]["content"][0]["text"] == "again"
