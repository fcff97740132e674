"""The shared upstream transport over real loopback HTTP against the fake upstream, and the
mapping of upstream errors to canonical ones."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import time
import warnings
from contextlib import aclosing
from dataclasses import replace
from email.utils import formatdate
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest

from tests.transport_harness import (
    CHAT,
    FAKE_NAMES,
    HEADERS,
    SECRET,
    Harness,
    chat_body,
    closed_port,
    collect,
    harness_fixture,  # noqa: F401  (the `harness` fixture)
)
from tests.upstreams import End, FakeUpstream, Reply, sse_frame
from xrouter.adapters.providers.transport import (
    STREAM_CLOSED_EARLY,
    HttpTransport,
    SSEEvent,
    TransportSettings,
    pooled_client,
)
from xrouter.adapters.providers.upstream_errors import (
    map_stream_error,
    map_upstream_error,
    parse_retry_after,
    redact,
)
from xrouter.domain.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PaymentRequired,
    ProviderError,
    ProviderTimeout,
    Unauthorized,
    UpstreamRateLimited,
)

# -- success -------------------------------------------------------------------------------


async def test_post_json_sends_body_and_headers_and_returns_the_answer(harness: Harness) -> None:
    transport = harness.transport(headers={"X-OpenRouter-Title": "XRouter"})
    reply = await transport.post_json("/chat/completions", chat_body("hi there"), HEADERS)
    assert reply.status == 200
    assert reply.json()["choices"][0]["message"]["content"] == "hi there"
    (request,) = harness.upstream.received
    assert (request.method, request.path) == ("POST", CHAT)
    assert request.json["messages"][0]["content"] == "hi there"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["traceparent"] == HEADERS["traceparent"]
    assert request.headers["x-openrouter-title"] == "XRouter"
    assert request.headers["content-type"] == "application/json"
    assert transport.inflight == 0


async def test_stream_yields_events_and_ends_at_done_without_yielding_it(harness: Harness) -> None:
    transport = harness.transport()
    events = await collect(
        transport.stream_events("/chat/completions", chat_body("one two", stream=True), HEADERS)
    )
    chunks = [json.loads(event.data) for event in events]
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["one ", "two"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert all(event.data != "[DONE]" for event in events)
    assert harness.upstream.received[0].headers["accept"] == "text/event-stream"
    assert transport.inflight == 0


async def test_stream_stops_at_done_even_if_the_upstream_sends_more(harness: Harness) -> None:
    harness.upstream.script(
        CHAT, Reply.sse([{"n": 1}, b"data: [DONE]\n\n", {"n": 2}], done=False, end="stall")
    )
    events = await collect(harness.transport().stream_events("/chat/completions", b"{}", {}))
    assert events == [SSEEvent(None, '{"n":1}')]


async def test_stream_reassembles_split_frames_and_skips_keepalive_comments(
    harness: Harness,
) -> None:
    error = {"error": {"code": 502, "message": "Provider disconnected"}}
    harness.upstream.script(
        CHAT,
        Reply.sse(
            [
                b": OPENROUTER PROCESSING\n\n",
                b'data: {"a"',
                b":1}\r\n\r\n: OPENROUTER PROCESSING\n\nda",
                b"ta: " + json.dumps(error).encode(),
                b"\n\n",
                sse_frame({"b": 2}),
            ],
            done=False,
        ),
    )
    stream = harness.transport().stream_events("/chat/completions", b"{}", {}, require_done=False)
    events = await collect(stream)
    assert events == [
        SSEEvent(None, '{"a":1}'),
        SSEEvent(None, json.dumps(error)),
        SSEEvent(None, '{"b":2}'),
    ]


async def test_responses_stream_ends_cleanly_at_the_end_of_the_body(harness: Harness) -> None:
    body = json.dumps({"model": "gpt-test", "input": "hi", "stream": True}).encode()
    # The Responses protocol never sends `[DONE]`: its last event ends the stream.
    stream = harness.transport().stream_events("/responses", body, {}, require_done=False)
    events = await collect(stream)
    assert events[0].event == "response.created"
    assert events[-1].event == "response.completed"
    assert [json.loads(e.data)["sequence_number"] for e in events] == list(range(len(events)))


async def test_get_json_lists_models(harness: Harness) -> None:
    models = await harness.transport().get_json("/models", HEADERS)
    assert [m["id"] for m in models["data"]] == ["gpt-test", "gpt-test-mini"]
    assert harness.upstream.received[0].method == "GET"


async def test_connections_are_reused(harness: Harness) -> None:
    transport = harness.transport()
    for _ in range(3):
        await transport.post_json("/chat/completions", chat_body(), {})
    await collect(transport.stream_events("/chat/completions", chat_body(stream=True), {}))
    await transport.post_json("/chat/completions", chat_body(), {})
    assert harness.upstream.hits(CHAT) == 5
    assert harness.upstream.connections == 1


# -- retries -------------------------------------------------------------------------------


async def test_retryable_statuses_are_retried_until_success(harness: Harness) -> None:
    harness.upstream.script(CHAT, [Reply.error(503, "busy"), Reply.error(503, "busy")])
    reply = await harness.transport().post_json("/chat/completions", chat_body("ok"), {})
    assert reply.json()["choices"][0]["message"]["content"] == "ok"
    assert harness.upstream.hits(CHAT) == 3
    # Full jitter (0.5 here) times 0.5 s, then times 1 s: exponential.
    assert harness.waits == [0.25, 0.5]


async def test_backoff_is_capped_at_backoff_max(harness: Harness) -> None:
    harness.upstream.script(CHAT, [Reply.error(500, "x")] * 4)
    transport = harness.transport(max_retries=4, backoff_initial_s=1.0, backoff_max_s=2.0)
    await transport.post_json("/chat/completions", chat_body(), {})
    assert harness.waits == [0.5, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 504, 599])
async def test_each_retryable_status_is_retried(harness: Harness, status: int) -> None:
    harness.upstream.script(CHAT, Reply.error(status, "try again"))
    await harness.transport().post_json("/chat/completions", chat_body(), {})
    assert harness.upstream.hits(CHAT) == 2


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422])
async def test_client_errors_are_not_retried(harness: Harness, status: int) -> None:
    harness.upstream.script(CHAT, Reply.error(status, "no"))
    with pytest.raises(GatewayError):
        await harness.transport().post_json("/chat/completions", chat_body(), {})
    assert harness.upstream.hits(CHAT) == 1
    assert harness.waits == []


async def test_x_should_retry_overrides_the_status_rule(harness: Harness) -> None:
    harness.upstream.script(
        CHAT,
        [
            Reply.error(400, "transient", headers={"x-should-retry": "true"}),
            Reply.error(503, "final", headers={"x-should-retry": "false"}),
        ],
    )
    with pytest.raises(ProviderError, match="final"):
        await harness.transport().post_json("/chat/completions", chat_body(), {})
    assert harness.upstream.hits(CHAT) == 2


async def test_429_with_retry_after_zero_is_retried_at_once(harness: Harness) -> None:
    harness.upstream.script(CHAT, Reply.error(429, "slow down", headers={"Retry-After": "0"}))
    await harness.transport().post_json("/chat/completions", chat_body(), {})
    assert harness.upstream.hits(CHAT) == 2
    assert harness.waits == [0.0]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
    ],
)
async def test_retry_after_hints_set_the_wait(
    harness: Harness, headers: dict[str, str], expected: float
) -> None:
    harness.upstream.script(CHAT, Reply.error(429, "later", headers=headers))
    await harness.transport().post_json("/chat/completions", chat_body(), {})
    assert harness.waits == [expected]


async def test_retry_after_as_http_date(harness: Harness) -> None:
    when = formatdate(time.time() + 5, usegmt=True)
    harness.upstream.script(CHAT, Reply.error(503, "later", headers={"Retry-After": when}))
    await harness.transport().post_json("/chat/completions", chat_body(), {})
    (wait,) = harness.waits
    assert 3.0 < wait <= 5.0


async def test_a_retry_after_longer_than_the_cap_ends_retries_and_is_passed_on(
    harness: Harness,
) -> None:
    harness.upstream.script(CHAT, Reply.error(429, "quota", headers={"Retry-After": "120"}))
    with pytest.raises(UpstreamRateLimited) as caught:
        await harness.transport().post_json("/chat/completions", chat_body(), {})
    assert caught.value.retry_after == 120.0
    assert harness.upstream.hits(CHAT) == 1
    assert harness.waits == []


async def test_max_retries_is_respected(harness: Harness) -> None:
    harness.upstream.script(CHAT, [Reply.error(503, "down")] * 5)
    with pytest.raises(ProviderError, match="503") as caught:
        await harness.transport(max_retries=2).post_json("/chat/completions", chat_body(), {})
    assert caught.value.status == 502
    assert harness.upstream.hits(CHAT) == 3
    assert len(harness.waits) == 2


async def test_no_retries_when_max_retries_is_zero(harness: Harness) -> None:
    harness.upstream.script(CHAT, [Reply.error(503, "down")] * 2)
    with pytest.raises(ProviderError):
        await harness.transport(max_retries=0).post_json("/chat/completions", chat_body(), {})
    assert harness.upstream.hits(CHAT) == 1


async def test_connect_errors_are_retried_then_reported(harness: Harness) -> None:
    port = closed_port()
    transport = harness.transport(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2)
    with pytest.raises(ProviderError, match="Could not connect to fake") as caught:
        await transport.post_json("/chat/completions", chat_body(), HEADERS)
    assert f"127.0.0.1:{port}" in caught.value.message
    assert len(harness.waits) == 2
    with pytest.raises(ProviderError, match="Could not connect"):
        await collect(transport.stream_events("/chat/completions", chat_body(), HEADERS))
    assert len(harness.waits) == 4
    assert transport.inflight == 0


async def test_an_answerless_hang_up_is_not_retried(harness: Harness) -> None:
    # The upstream may have acted on the POST: sending it again could bill twice.
    harness.upstream.script(CHAT, Reply.hang_up())
    with pytest.raises(ProviderError, match="closed the connection without answering"):
        await harness.transport().post_json("/chat/completions", chat_body(), {})
    assert harness.upstream.hits(CHAT) == 1


async def test_retries_are_logged_with_provider_status_attempt_and_wait(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.upstream.script(CHAT, [Reply.error(502, "x"), Reply.error(429, "y")])
    with caplog.at_level(logging.INFO, logger="xrouter.transport"):
        await harness.transport().post_json("/chat/completions", chat_body(), {})
    messages = [r.getMessage() for r in caplog.records if r.name == "xrouter.transport"]
    assert messages == [
        "retrying a call to fake after status 502 (retry 1 of 2) in 0.250 s",
        "retrying a call to fake after status 429 (retry 2 of 2) in 0.500 s",
    ]


# -- streams: retries only before the first byte --------------------------------------------


async def test_stream_is_retried_before_it_starts(harness: Harness) -> None:
    harness.upstream.script(CHAT, Reply.error(503, "warming up"))
    events = await collect(
        harness.transport().stream_events("/chat/completions", chat_body("x", stream=True), {})
    )
    assert json.loads(events[1].data)["choices"][0]["delta"]["content"] == "x"
    assert harness.upstream.hits(CHAT) == 2


@pytest.mark.parametrize("end", ["drop", "reset"])
async def test_a_stream_dropped_midway_fails_and_is_never_retried(
    harness: Harness, end: End
) -> None:
    harness.upstream.script(CHAT, Reply.sse([{"n": 1}, {"n": 2}], done=False, end=end))
    transport = harness.transport()
    received: list[SSEEvent] = []
    with pytest.raises(ProviderError) as caught:
        async with aclosing(transport.stream_events("/chat/completions", b"{}", {})) as events:
            async for batch in events:
                received += batch
    assert STREAM_CLOSED_EARLY in caught.value.message
    assert caught.value.status == 502
    assert received == [SSEEvent(None, '{"n":1}'), SSEEvent(None, '{"n":2}')]
    assert harness.upstream.hits(CHAT) == 1
    assert harness.waits == []
    assert transport.inflight == 0


async def test_a_stalled_stream_times_out_after_read_timeout(harness: Harness) -> None:
    harness.upstream.script(CHAT, Reply.sse([{"n": 1}], done=False, end="stall"))
    transport = harness.transport(read_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match=r"sent nothing for 0.2 s") as caught:
        await collect(transport.stream_events("/chat/completions", b"{}", {}))
    assert time.monotonic() - started < 2.0
    assert caught.value.status == 504
    assert harness.upstream.hits(CHAT) == 1
    assert transport.inflight == 0


async def test_a_stream_whose_upstream_never_answers_times_out_without_retry(
    harness: Harness,
) -> None:
    harness.upstream.script(CHAT, Reply.stall())
    transport = harness.transport(first_byte_timeout_s=0.2)
    with pytest.raises(ProviderTimeout) as caught:
        await collect(transport.stream_events("/chat/completions", b"{}", {}))
    assert caught.value.phase == "first_byte"
    assert harness.upstream.hits(CHAT) == 1


async def test_a_slow_stream_lives_while_bytes_flow(harness: Harness) -> None:
    frames = [{"n": n} for n in range(4)]
    harness.upstream.script(CHAT, Reply.sse(frames, chunk_delay_s=0.1))
    transport = harness.transport(read_timeout_s=0.3, total_timeout_s=0.2)
    events = await collect(transport.stream_events("/chat/completions", b"{}", {}))
    assert len(events) == 4  # 0.3 s of streaming: no total deadline on streams


async def test_a_stream_error_status_is_mapped_with_its_body(harness: Harness) -> None:
    body = {"error": {"code": 402, "message": "Insufficient credits. Add more using /credits"}}
    harness.upstream.script(CHAT, Reply.json(body, status=402))
    with pytest.raises(PaymentRequired, match=r"^fake: Insufficient credits"):
        await collect(harness.transport().stream_events("/chat/completions", b"{}", {}))


async def test_a_stream_answered_with_a_json_error_is_mapped(harness: Harness) -> None:
    body = {"error": {"code": "rate_limit_exceeded", "message": "Too many requests"}}
    harness.upstream.script(CHAT, Reply.json(body))
    with pytest.raises(UpstreamRateLimited, match="Too many requests"):
        await collect(harness.transport().stream_events("/chat/completions", b"{}", {}))


async def test_only_a_bounded_prefix_of_an_error_body_is_read(harness: Harness) -> None:
    # 70 KiB of error body and then silence: reading it whole would hit the read timeout.
    harness.upstream.script(
        CHAT, Reply(status=500, chunks=[b"x" * 70_000], end="stall", headers={})
    )
    transport = harness.transport(read_timeout_s=1.0, max_retries=0)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="upstream status 500") as caught:
        await collect(transport.stream_events("/chat/completions", b"{}", {}))
    assert time.monotonic() - started < 0.9
    assert len(caught.value.message) < 600


# -- deadlines -----------------------------------------------------------------------------


async def test_a_non_stream_call_has_a_total_deadline(harness: Harness) -> None:
    harness.upstream.script(CHAT, Reply(delay_s=0.2, chunks=[b"{"] * 20, chunk_delay_s=0.1))
    transport = harness.transport(read_timeout_s=5.0, total_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        await transport.post_json("/chat/completions", chat_body(), {})
    assert time.monotonic() - started < 1.5
    assert caught.value.phase == "total"
    assert caught.value.message == (
        "fake did not answer within 0.5 s (the total deadline of a call, "
        "XR_FAKE_TOTAL_TIMEOUT_S); the call was abandoned."
    )
    assert transport.inflight == 0


# The connection's read timeout is the larger of the first-byte and idle timeouts and the
# transport times the smaller: each arrangement is tried both ways round.
FIRST_BYTE_SHORTER = {"first_byte_timeout_s": 0.2, "read_timeout_s": 5.0}
FIRST_BYTE_LONGER = {"first_byte_timeout_s": 0.3, "read_timeout_s": 0.1}
IDLE_SHORTER = {"first_byte_timeout_s": 5.0, "read_timeout_s": 0.2}
IDLE_LONGER = {"first_byte_timeout_s": 0.1, "read_timeout_s": 0.3}


@pytest.mark.parametrize("timeouts", [FIRST_BYTE_SHORTER, FIRST_BYTE_LONGER])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_late_answer_head_is_the_first_byte_timeout(
    harness: Harness, timeouts: dict[str, float], stream: bool
) -> None:
    harness.upstream.script(CHAT, Reply(delay_s=2.0, body=b"{}"))
    transport = harness.transport(**timeouts)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        if stream:
            await collect(transport.stream_events("/chat/completions", b"{}", {}))
        else:
            await transport.post_json("/chat/completions", chat_body(), {})
    assert time.monotonic() - started < 1.5
    limit = timeouts["first_byte_timeout_s"]
    assert caught.value.phase == "first_byte"
    assert caught.value.message == (
        f"fake did not start its answer within {limit:g} s (the first-byte timeout, "
        "XR_FAKE_FIRST_BYTE_TIMEOUT_S); the call was abandoned."
    )
    assert harness.upstream.hits(CHAT) == 1
    assert transport.inflight == 0


@pytest.mark.parametrize("timeouts", [IDLE_SHORTER, IDLE_LONGER])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_silence_inside_a_body_is_the_idle_timeout(
    harness: Harness, timeouts: dict[str, float], stream: bool
) -> None:
    reply = (
        Reply.sse([{"n": 1}], done=False, end="stall")
        if stream
        else Reply(headers={"Content-Type": "application/json"}, chunks=[b"{"], end="stall")
    )
    harness.upstream.script(CHAT, reply)
    transport = harness.transport(**timeouts)
    with pytest.raises(ProviderTimeout) as caught:
        if stream:
            await collect(transport.stream_events("/chat/completions", b"{}", {}))
        else:
            await transport.post_json("/chat/completions", chat_body(), {})
    limit = timeouts["read_timeout_s"]
    assert caught.value.phase == "idle"
    assert caught.value.message == (
        f"fake sent nothing for {limit:g} s (the read timeout between bytes, "
        "XR_FAKE_READ_TIMEOUT_S); the call was abandoned."
    )


async def test_a_head_later_than_the_idle_timeout_is_fine_within_the_first_byte_timeout(
    harness: Harness,
) -> None:
    # A non-stream answer starts only when it is complete: the wait for it is not "idle".
    harness.upstream.script(CHAT, Reply.json({"ok": True}, delay_s=0.4))
    transport = harness.transport(first_byte_timeout_s=2.0, read_timeout_s=0.1)
    reply = await transport.post_json("/chat/completions", chat_body(), {})
    assert reply.json() == {"ok": True}


async def test_pauses_longer_than_the_first_byte_timeout_are_fine_within_the_idle_timeout(
    harness: Harness,
) -> None:
    harness.upstream.script(CHAT, Reply.sse([{"n": n} for n in range(3)], chunk_delay_s=0.3))
    transport = harness.transport(first_byte_timeout_s=0.1, read_timeout_s=2.0)
    events = await collect(transport.stream_events("/chat/completions", b"{}", {}))
    assert len(events) == 3


async def test_waiting_for_a_free_connection_is_the_pool_timeout(harness: Harness) -> None:
    # A client shared beyond its pool (as GigaChat's may be): two calls, one connection.
    settings = TransportSettings(
        base_url=harness.upstream.base_url,
        max_inflight=2,
        pool_timeout_s=0.2,
        trust_env=False,
        setting_names=FAKE_NAMES,
    )
    client = pooled_client(replace(settings, max_inflight=1), tls=False)
    transport = HttpTransport("fake", settings, client=client)
    harness.upstream.script(CHAT, Reply.sse([{"n": 1}], done=False, end="stall"))
    try:
        holding = transport.stream_events("/chat/completions", b"{}", {})
        assert await anext(holding) == [SSEEvent(None, '{"n":1}')]
        with pytest.raises(ProviderTimeout) as caught:
            await transport.post_json("/chat/completions", chat_body(), {})
        await holding.aclose()
    finally:
        await client.aclose()
    assert caught.value.phase == "pool"
    assert caught.value.message == (
        "No connection to fake became free within 0.2 s (the pool timeout, "
        "XR_FAKE_POOL_TIMEOUT_S); the call was abandoned."
    )
    assert harness.upstream.hits(CHAT) == 1


async def test_an_upstream_that_stops_reading_the_request_is_the_write_timeout(
    harness: Harness,
) -> None:
    with socket.socket() as listener:  # accepts connections in the kernel, never reads them
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        transport = harness.transport(
            base_url=f"http://127.0.0.1:{port}/v1", write_timeout_s=0.3, max_retries=0
        )
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as caught:
            await transport.post_json("/chat/completions", b"x" * (64 * 1024 * 1024), {})
    assert time.monotonic() - started < 3.0
    assert caught.value.phase == "write"
    assert caught.value.message == (
        "Sending the request to fake stalled for 0.3 s (the write timeout, "
        "XR_FAKE_WRITE_TIMEOUT_S); the call was abandoned."
    )


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


async def test_a_proxy_refusing_the_tunnel_is_a_proxy_failure_naming_its_host(
    harness: Harness, clean_proxy_env: pytest.MonkeyPatch
) -> None:
    proxy = harness.upstream  # the fake plays the proxy and refuses the CONNECT
    proxy.script("upstream.invalid:443", Reply(status=407, headers={"Proxy-Authenticate": "Basic"}))
    clean_proxy_env.setenv("HTTPS_PROXY", f"http://user:pw-SECRET@127.0.0.1:{proxy.port}")
    transport = harness.transport(
        base_url="https://upstream.invalid/v1", trust_env=True, max_retries=0
    )
    with pytest.raises(ProviderError) as caught:
        await transport.post_json("/chat/completions", chat_body(), {})
    message = caught.value.message
    assert message.startswith(
        f"The proxy 127.0.0.1:{proxy.port} failed the call to fake (upstream.invalid): "
        "ProxyError: 407"
    )
    assert "pw-SECRET" not in message and "user" not in message
    assert proxy.received[0].method == "CONNECT"


async def test_an_unreachable_proxy_is_named_not_the_upstream(
    harness: Harness, clean_proxy_env: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    clean_proxy_env.setenv("HTTP_PROXY", f"http://user:pw-SECRET@127.0.0.1:{port}")
    transport = harness.transport(
        base_url="http://upstream.invalid/v1", trust_env=True, max_retries=1
    )
    with pytest.raises(ProviderError) as caught:
        await transport.post_json("/chat/completions", chat_body(), {})
    message = caught.value.message
    assert message.startswith(f"Could not connect to the proxy 127.0.0.1:{port} for fake: ")
    assert "pw-SECRET" not in message
    assert len(harness.waits) == 1  # a connect error: retried


async def test_a_retry_that_would_pass_the_deadline_is_not_attempted(harness: Harness) -> None:
    harness.upstream.script(CHAT, Reply.error(503, "later", headers={"Retry-After": "10"}))
    transport = harness.transport(total_timeout_s=5.0)
    with pytest.raises(ProviderError, match="503"):
        await transport.post_json("/chat/completions", chat_body(), {})
    assert harness.waits == []
    assert harness.upstream.hits(CHAT) == 1


# -- in-flight limit -----------------------------------------------------------------------


async def test_in_flight_limit_fails_fast_and_frees_the_slot_when_a_stream_ends(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.upstream.script(CHAT, Reply.sse([{"n": 1}], done=False, end="stall"))
    transport = harness.transport(max_inflight=1, queue_timeout_s=0)
    first = transport.stream_events("/chat/completions", b"{}", {})
    assert await anext(first) == [SSEEvent(None, '{"n":1}')]
    assert transport.inflight == 1

    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="xrouter.transport"),
        pytest.raises(Overloaded) as caught,
    ):
        await transport.post_json("/chat/completions", chat_body(), {})
    assert "XR_FAKE_MAX_INFLIGHT" in caplog.text
    with pytest.raises(Overloaded):  # the slot is taken as the iteration starts
        await anext(transport.stream_events("/chat/completions", b"{}", {}))
    assert time.monotonic() - started < 0.1
    assert caught.value.status == 429
    assert caught.value.retry_after == 1.0
    assert "fake" in caught.value.message and "XR_FAKE_MAX_INFLIGHT" in caught.value.message
    assert harness.upstream.hits(CHAT) == 1

    await first.aclose()
    assert transport.inflight == 0
    reply = await transport.post_json("/chat/completions", chat_body("again"), {})
    assert reply.json()["choices"][0]["message"]["content"] == "again"


async def test_closing_a_stream_early_closes_the_upstream_connection(harness: Harness) -> None:
    harness.upstream.script(CHAT, Reply.sse([{"n": 1}], done=False, end="stall"))
    transport = harness.transport(max_inflight=1)
    stream = transport.stream_events("/chat/completions", b"{}", {})
    await anext(stream)
    await stream.aclose()
    assert await asyncio.to_thread(harness.upstream.wait_until, lambda up: up.client_aborts == 1)


async def test_a_finished_or_failed_call_frees_its_slot(harness: Harness) -> None:
    harness.upstream.script(CHAT, [Reply.error(400, "bad"), Reply.sse([{"n": 1}])])
    transport = harness.transport(max_inflight=1)
    with pytest.raises(InvalidRequest):
        await transport.post_json("/chat/completions", chat_body(), {})
    assert await collect(transport.stream_events("/chat/completions", b"{}", {})) == [
        SSEEvent(None, '{"n":1}')
    ]
    assert transport.inflight == 0


async def test_concurrent_calls_up_to_the_limit_succeed(harness: Harness) -> None:
    harness.upstream.script(CHAT, [Reply.json({"ok": n}, delay_s=0.1) for n in range(3)])
    transport = harness.transport(max_inflight=3)
    replies = await asyncio.gather(
        *(transport.post_json("/chat/completions", chat_body(), {}) for _ in range(3))
    )
    assert sorted(r.json()["ok"] for r in replies) == [0, 1, 2]


async def test_a_cancelled_call_frees_its_slot(harness: Harness) -> None:
    harness.upstream.script(CHAT, Reply.stall())
    transport = harness.transport(max_inflight=1)
    task = asyncio.create_task(transport.post_json("/chat/completions", chat_body(), {}))
    assert await asyncio.to_thread(harness.upstream.wait_until, lambda up: up.hits(CHAT) == 1)
    assert transport.inflight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.inflight == 0


# -- client lifecycle ----------------------------------------------------------------------


async def test_aclose_closes_the_pool_it_built_but_not_an_injected_client(
    fake_upstream: FakeUpstream,
) -> None:
    owned = HttpTransport("fake", TransportSettings(base_url=fake_upstream.base_url))
    await owned.post_json("/chat/completions", chat_body(), {})
    await owned.aclose()
    with pytest.raises(RuntimeError):
        await owned.post_json("/chat/completions", chat_body(), {})

    async with httpx.AsyncClient(base_url=fake_upstream.base_url) as client:
        borrowed = HttpTransport("fake", TransportSettings(base_url="unused"), client=client)
        await borrowed.aclose()
        reply = await borrowed.post_json("/chat/completions", chat_body("still"), {})
        assert reply.json()["choices"][0]["message"]["content"] == "still"


def test_a_ca_bundle_path_and_a_client_certificate_make_an_ssl_context(
    tmp_path: Path,
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=xrouter",
         "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # httpx deprecates verify=<path> and cert=...
        for verify in (True, certifi.where(), str(tmp_path)):
            settings = TransportSettings(
                base_url="https://x.invalid", verify=verify, cert=(str(cert), str(key))
            )
            HttpTransport("fake", settings)
        HttpTransport(
            "fake", TransportSettings(base_url="https://x.invalid", verify=certifi.where())
        )


def test_disabled_tls_verification_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="xrouter.transport"):
        HttpTransport("fake", TransportSettings(base_url="https://x.invalid", verify=False))
    assert "TLS certificate verification is disabled for fake" in caplog.text


# -- secrets ---------------------------------------------------------------------------------


async def test_request_headers_never_reach_errors_or_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {**HEADERS, "x-api-key": SECRET, "cookie": f"session={SECRET}"}
    harness.upstream.script(
        CHAT,
        [
            Reply.error(500, "boom"),
            Reply.error(500, "boom"),
            Reply.error(500, "boom"),
            Reply.error(401, f"Incorrect API key provided: {SECRET}"),
            Reply.sse([{"n": 1}], done=False, end="drop"),
            Reply.sse([{"n": 1}], done=False, end="stall"),
            Reply.error(429, "limited", headers={"Retry-After": "100"}),
        ],
    )
    transport = harness.transport(read_timeout_s=0.2)
    dead = harness.transport(base_url=f"http://127.0.0.1:{closed_port()}/v1")
    errors: list[GatewayError] = []
    with caplog.at_level(logging.DEBUG):
        for call in (
            lambda: transport.post_json("/chat/completions", chat_body(), headers),
            lambda: transport.post_json("/chat/completions", chat_body(), headers),
            lambda: collect(transport.stream_events("/chat/completions", b"{}", headers)),
            lambda: collect(transport.stream_events("/chat/completions", b"{}", headers)),
            lambda: transport.post_json("/chat/completions", chat_body(), headers),
            lambda: dead.post_json("/chat/completions", chat_body(), headers),
        ):
            with pytest.raises(GatewayError) as caught:
                await call()
            errors.append(caught.value)
    assert [type(e) for e in errors] == [
        ProviderError,
        ProviderError,
        ProviderError,
        ProviderTimeout,
        UpstreamRateLimited,
        ProviderError,
    ]
    assert errors[1].code == "upstream_auth_failed"
    assert any("retrying a call to fake" in r.getMessage() for r in caplog.records)
    for error in errors:
        assert SECRET not in str(error) and SECRET not in repr(error)
        assert SECRET not in error.message
    assert SECRET not in caplog.text
    assert all(SECRET not in str(r.args) for r in caplog.records)


# -- map_upstream_error ------------------------------------------------------------------


def openai_error(message: str, code: str | None = None, param: str | None = None) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def openrouter_error(code: int, message: str, **metadata: Any) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if metadata:
        error["metadata"] = metadata
    return json.dumps({"error": error}).encode()


def gigachat_error(status: int, message: str) -> bytes:
    return json.dumps({"status": status, "message": message}).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind", "out_status", "code", "message"),
    [
        (400, openai_error("Unknown parameter: 'foo'.", param="foo"), InvalidRequest, 400, None,
         "fake: Unknown parameter: 'foo'."),
        (400, openai_error("Too long", code="context_length_exceeded", param="messages"),
         InvalidRequest, 400, "context_length_exceeded", "fake: Too long"),
        (400, gigachat_error(400, "Bad request"), InvalidRequest, 400, None, "fake: Bad request"),
        (401, openai_error(f"Incorrect API key provided: {SECRET}"), ProviderError, 502,
         "upstream_auth_failed",
         "The gateway's credentials for fake were refused (upstream status 401). "
         "The gateway operator should check XR_FAKE_API_KEY."),
        (403, gigachat_error(403, "Permission denied"), ProviderError, 502,
         "upstream_auth_failed", "refused (upstream status 403)"),
        (402, openrouter_error(402, "Insufficient credits"), PaymentRequired, 402,
         "insufficient_quota", "fake: Insufficient credits"),
        (402, gigachat_error(402, "Payment Required"), PaymentRequired, 402,
         "insufficient_quota", "fake: Payment Required"),
        (404, openai_error("The model `gpt-9` does not exist", code="model_not_found"),
         ModelNotFound, 404, "model_not_found", "fake: The model `gpt-9` does not exist"),
        (404, gigachat_error(404, "No such model"), ModelNotFound, 404, "model_not_found",
         "fake: No such model"),
        (404, b"Not Found", NotFound, 404, None, "fake: Not Found"),
        (408, openrouter_error(408, "Request timed out"), ProviderTimeout, 504,
         "provider_timeout", "fake timed out (upstream status 408): Request timed out"),
        (504, b"upstream timeout", ProviderTimeout, 504, "provider_timeout", "status 504"),
        (413, gigachat_error(413, "Payload too large"), PayloadTooLarge, 413,
         "request_too_large", "fake: Payload too large"),
        (422, gigachat_error(422, "Invalid params: repetition_penalty must be in range"),
         InvalidRequest, 400, None, "fake: Invalid params: repetition_penalty"),
        (429, openrouter_error(429, "Rate limit exceeded", provider_code="429"),
         UpstreamRateLimited, 429, "rate_limit_exceeded",
         "fake is rate-limiting requests (upstream status 429): Rate limit exceeded"),
        (500, b"Internal Server Error", ProviderError, 502, "provider_error",
         "fake failed with upstream status 500: Internal Server Error"),
        (502, openrouter_error(502, "Provider returned error", raw="model overloaded"),
         ProviderError, 502, "provider_error",
         "upstream status 502: Provider returned error (model overloaded)"),
        (503, openrouter_error(503, "No endpoints found matching your data policy"),
         ProviderError, 502, "provider_error", "upstream status 503: No endpoints found"),
        (502, b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
         ProviderError, 502, "provider_error", "upstream status 502: 502 Bad Gateway"),
        (500, b"", ProviderError, 502, "provider_error", "fake failed with upstream status 500"),
    ],
)  # fmt: skip
def test_map_upstream_error(
    status: int, body: bytes, kind: type[GatewayError], out_status: int, code: str | None,
    message: str,
) -> None:  # fmt: skip
    error = map_upstream_error("fake", status, body, {}, setting_names=FAKE_NAMES)
    assert type(error) is kind or (kind is ModelNotFound and isinstance(error, ModelNotFound))
    assert error.status == out_status
    assert error.code == code
    assert message in error.message
    assert SECRET not in error.message


def test_invalid_request_keeps_the_upstream_param() -> None:
    error = map_upstream_error("fake", 400, openai_error("bad", param="temperature"), {})
    assert error.param == "temperature"


def test_a_key_refused_under_byok_is_the_clients_401_with_the_upstream_message() -> None:
    body = openai_error(f"Incorrect API key provided: {SECRET}.")
    error = map_upstream_error("fake", 401, body, {}, byok=True)
    assert isinstance(error, Unauthorized)
    assert error.status == 401
    assert error.message == "fake: Incorrect API key provided: sk-***."


def test_a_moderation_403_is_a_bad_request_not_a_credentials_problem() -> None:
    body = openrouter_error(
        403, "Your input was flagged", reasons=["violence"], flagged_input="..."
    )
    error = map_upstream_error("fake", 403, body, {})
    assert isinstance(error, InvalidRequest)
    assert error.code == "content_policy_violation"
    assert error.message == "fake: Your input was flagged"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Retry-After": "7"}, 7.0), ({"retry-after-ms": "250"}, 0.25), ({}, None)],
)
def test_rate_limit_carries_the_retry_after_hint(
    headers: dict[str, str], expected: float | None
) -> None:
    error = map_upstream_error("fake", 429, b"slow down", headers)
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after == expected


def test_a_long_plain_text_body_is_truncated() -> None:
    error = map_upstream_error("fake", 500, b"x" * 10_000, {})
    assert len(error.message) < 600
    assert error.message.endswith("…")


def test_parse_retry_after() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after({"Retry-After": formatdate(now + 30, usegmt=True)}, now=now) == 30.0
    assert parse_retry_after({"Retry-After": formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "-5"}) == 0.0
    assert parse_retry_after({"retry-after-ms": "nan", "retry-after": "2"}) == 2.0


def test_redact_masks_credentials_and_keeps_the_rest() -> None:
    text = f"key {SECRET} and Bearer abcdefghijklmnop and api_key=abcdef123456 ok"
    assert redact(text) == "key sk-*** and Bearer *** and api_key=*** ok"


# -- map_stream_error --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "status", "message"),
    [
        ({"code": 429, "message": "Rate limit exceeded"}, UpstreamRateLimited, 429,
         "Rate limit exceeded"),
        ({"code": 502, "message": "Provider disconnected"}, ProviderError, 502,
         "upstream status 502: Provider disconnected"),
        ({"code": "502", "message": "down"}, ProviderError, 502, "upstream status 502"),
        ({"code": "server_error", "message": "Internal error"}, ProviderError, 502,
         "fake: Internal error"),
        ({"code": "rate_limit_exceeded", "message": "Slow down"}, UpstreamRateLimited, 429,
         "fake: Slow down"),
        ({"code": None, "message": "busy", "metadata": {"error_type": "rate_limit_exceeded"}},
         UpstreamRateLimited, 429, "fake: busy"),
        ({"code": "context_length_exceeded", "message": "Too long", "param": "input"},
         InvalidRequest, 400, "fake: Too long"),
        ({"code": "insufficient_quota", "message": "No credits"}, PaymentRequired, 402,
         "fake: No credits"),
        ({"message": "Something broke", "type": "server_error"}, ProviderError, 502,
         "fake: Something broke"),
        ({"code": "brand_new_code", "message": "Odd"}, ProviderError, 502, "fake: Odd"),
        ({}, ProviderError, 502, "fake failed while streaming and gave no message"),
        ({"code": 401, "message": f"bad key {SECRET}"}, ProviderError, 502,
         "credentials for fake were refused"),
    ],
)  # fmt: skip
def test_map_stream_error(
    error: dict[str, Any], kind: type[GatewayError], status: int, message: str
) -> None:
    mapped = map_stream_error("fake", error)
    assert type(mapped) is kind
    assert mapped.status == status
    assert message in mapped.message
    assert SECRET not in mapped.message


def test_stream_error_codes_are_kept_for_invalid_requests() -> None:
    mapped = map_stream_error("fake", {"code": "context_length_exceeded", "param": "input"})
    assert (mapped.code, mapped.param) == ("context_length_exceeded", "input")
