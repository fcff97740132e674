"""Analytics persistence (issue 11, item 5): the sink's bounded queue and its two stores, the
summary, `GET /admin/usage` and `xrouter usage`."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from litestar import Litestar

from tests.conftest import LiveServer
from tests.redis_servers import RedisServer
from xrouter.adapters.redis.connection import RedisSettings, SharedRedis
from xrouter.adapters.telemetry.analytics import (
    STREAM_KEY,
    AnalyticsSink,
    MemoryRing,
    RedisStream,
)
from xrouter.application.outcome import RequestOutcome
from xrouter.application.usage_summary import percentile, summarize, summary
from xrouter.domain.secrets import SecretMasker
from xrouter.entrypoints.analytics_config import build_analytics
from xrouter.entrypoints.cli.main import main
from xrouter.entrypoints.config import Settings, env_name
from xrouter.entrypoints.http.admin_routes import build_admin_routes
from xrouter.entrypoints.http.errors import exception_handlers

NOW = time.time()


def outcome(n: int = 0, **changes: Any) -> RequestOutcome:
    fields: dict[str, Any] = {
        "request_id": f"req_{n}",
        "finished_at": NOW - 10,
        "api": "responses",
        "route": "POST /v1/responses",
        "stream": False,
        "model_requested": "local/echo",
        "model": "local/echo",
        "upstream_model": None,
        "provider": "local",
        "response_id": f"resp_{n}",
        "upstream_response_id": None,
        "status": "completed",
        "failed_stage": None,
        "error_type": None,
        "finish_reason": "stop",
        "duration_s": 0.010,
        "generate_s": 0.008,
        "ttft_s": 0.004,
        "input_tokens": 10,
        "output_tokens": 20,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "attempts": 1,
    }
    fields.update(changes)
    return RequestOutcome(**fields)


def failure(n: int, **changes: Any) -> RequestOutcome:
    return outcome(
        n,
        **{
            "status": "failed",
            "failed_stage": "generate",
            "error_type": "provider_error",
            "finish_reason": None,
            "ttft_s": None,
            "output_tokens": None,
            **changes,
        },
    )


async def eventually(done: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Until `done()` (polled; bounded by `timeout_s`)."""
    for _ in range(int(timeout_s / 0.01)):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not done within {timeout_s} s")


async def settle(sink: AnalyticsSink) -> None:
    """Until the drain has taken everything queued and written or failed it."""
    await eventually(lambda: sink.queued == 0)
    await asyncio.sleep(0.05)  # the batch it took is being written


def shared(url: str, **options: Any) -> SharedRedis:
    return SharedRedis(RedisSettings(url=url, **options))


# --- the sink -------------------------------------------------------------------------------


async def test_memory_sink_keeps_records_off_the_request_path() -> None:
    sink = AnalyticsSink(MemoryRing(100), queue_size=100)
    sink.record(outcome(1))
    # Queued, not written: the request did not wait, and tests can still find it.
    assert sink.queued == 1
    assert [r.request_id for r in sink.for_request("req_1")] == ["req_1"]
    await sink.start()
    sink.record(outcome(2))
    sink.record(failure(3))
    await settle(sink)
    assert sink.queued == 0
    assert sink.written == 3
    assert [r.request_id for r in await sink.records(NOW - 60)] == ["req_1", "req_2", "req_3"]
    assert sink.for_request("req_3") == [failure(3)]
    await sink.aclose(1.0)


async def test_records_since_filters_by_finish_time_and_the_ring_is_bounded() -> None:
    sink = AnalyticsSink(MemoryRing(3), queue_size=100)
    await sink.start()
    for n in range(5):
        sink.record(outcome(n, finished_at=NOW - 100 + n * 10))
    await sink.aclose(1.0)
    # The ring kept the newest three (2, 3, 4); since NOW-75 leaves out 2 (finished NOW-80).
    assert [r.request_id for r in await sink.records(NOW - 75)] == ["req_3", "req_4"]
    assert [r.request_id for r in await sink.records(0)] == ["req_2", "req_3", "req_4"]


def test_a_full_queue_drops_and_counts_without_awaiting(caplog: pytest.LogCaptureFixture) -> None:
    # No event loop at all: record() is plain synchronous code that cannot wait.
    sink = AnalyticsSink(MemoryRing(100), queue_size=3, setting_names=env_name)
    with caplog.at_level(logging.WARNING, logger="xrouter.analytics"):
        for n in range(10):
            sink.record(outcome(n))
    assert sink.queued == 3
    assert sink.dropped == 7
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # at most one a minute
    assert "XR_ANALYTICS_QUEUE_SIZE" in warnings[0]
    assert "req_3" in warnings[0]


async def test_aclose_writes_what_is_queued() -> None:
    sink = AnalyticsSink(MemoryRing(100), queue_size=100, linger_s=10.0)
    await sink.start()
    for n in range(5):
        sink.record(outcome(n))
    await sink.aclose(2.0)  # does not wait for the linger: closing writes at once
    assert sink.written == 5
    assert len(await sink.records(0)) == 5


def test_off_keeps_nothing_and_drops_nothing() -> None:
    sink = build_analytics(Settings(analytics="off"), None)
    sink.record(outcome(1))
    assert (sink.name, sink.queued, sink.dropped, sink.for_request("req_1")) == ("off", 0, 0, [])


def test_auto_is_memory_without_redis() -> None:
    sink = build_analytics(Settings(), None)
    assert sink.name == "memory"


# --- the Redis stream -------------------------------------------------------------------------


async def test_redis_stream_one_entry_per_record(redis_server: RedisServer) -> None:
    redis = shared(redis_server.url)
    sink = AnalyticsSink(RedisStream(redis, maxlen=1000), queue_size=1000)
    await sink.start()
    records = [outcome(n) for n in range(7)] + [failure(7)]
    for record in records:
        sink.record(record)
    await sink.aclose(5.0)
    assert sink.written == 8 and sink.failed == 0
    assert redis_server.cli("XLEN", STREAM_KEY) == "8"
    first = redis_server.cli("XRANGE", STREAM_KEY, "-", "+", "COUNT", "1").splitlines()
    assert first[1] == "r"  # one field, `r`: the record as msgspec JSON
    assert msgspec.json.decode(first[2], type=RequestOutcome) == records[0]
    assert await sink.records(NOW - 60) == records
    assert await sink.records(NOW) == []  # every record finished at NOW - 10
    await redis.aclose()


async def test_redis_stream_is_capped_with_maxlen(redis_server: RedisServer) -> None:
    redis = shared(redis_server.url)
    sink = AnalyticsSink(RedisStream(redis, maxlen=100), queue_size=5000)
    await sink.start()
    for n in range(3000):
        sink.record(outcome(n))
    await sink.aclose(10.0)
    assert sink.written == 3000
    # `MAXLEN ~`: at least 100 kept, trimmed by whole nodes (100 entries each by default).
    assert 100 <= int(redis_server.cli("XLEN", STREAM_KEY)) <= 300
    await redis.aclose()


async def test_redis_stream_on_a_cluster(redis_cluster: Any) -> None:
    # No lean client on a cluster: the batch script goes through redis-py's cluster client.
    redis = shared(redis_cluster.url, cluster=True)
    assert redis.lean is None
    stream = RedisStream(redis, maxlen=1000)
    records = [outcome(n) for n in range(3)]
    await stream.write(records)
    assert (await stream.window(NOW - 60)).records == records
    await redis.aclose()


async def test_a_long_read_goes_in_pages_and_says_when_it_is_cut(
    redis_server: RedisServer,
) -> None:
    redis = shared(redis_server.url)
    stream = RedisStream(redis, maxlen=100_000)
    records = [outcome(n, finished_at=NOW - 100 + n * 0.01) for n in range(2500)]
    for start in range(0, 2500, 500):
        await stream.write(records[start : start + 500])
    whole = await stream.window(NOW - 200)
    assert (whole.cut, whole.records) == (False, records)
    cut = await stream.window(NOW - 200, limit=1200)
    assert cut.cut and cut.records == records[-1200:]  # the newest kept, oldest first
    await redis.aclose()


async def test_redis_down_counts_failed_batches_and_the_drain_goes_on(
    redis_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory()
    redis = shared(server.url, timeout_s=0.3, breaker_s=0.1)
    sink = AnalyticsSink(RedisStream(redis), queue_size=1000, linger_s=0.01)
    await sink.start()
    sink.record(outcome(0))
    await settle(sink)
    assert sink.written == 1
    server.kill()
    with caplog.at_level(logging.WARNING, logger="xrouter.analytics"):
        for n in range(1, 4):
            sink.record(outcome(n))
        await settle(sink)
        await eventually(lambda: sink.failed >= 3)
    assert (sink.written, sink.failed, sink.dropped) == (1, 3, 0)
    assert any("not written to the redis store" in r.getMessage() for r in caplog.records), (
        caplog.text
    )
    server.start()  # same port: Redis is back
    await asyncio.sleep(0.15)  # the breaker's period
    sink.record(outcome(4))
    await eventually(lambda: sink.written >= 2)
    await sink.aclose(2.0)
    assert [r.request_id for r in await sink.records(0)] == ["req_4"]
    await redis.aclose()


# --- the summary ----------------------------------------------------------------------------


def test_summary_rows_by_model_provider_status_and_day() -> None:
    day = time.mktime((2026, 11, 28, 12, 0, 0, 0, 0, 0)) - time.timezone
    records = [
        outcome(1, ttft_s=0.1, duration_s=1.0),
        outcome(2, ttft_s=0.3, duration_s=3.0, cached_tokens=5, reasoning_tokens=7),
        outcome(3, ttft_s=0.2, duration_s=2.0, finished_at=day),
        outcome(4, model="openai/gpt-4o", provider="openai", input_tokens=100),
        failure(5, model="openai/gpt-4o", provider="openai", duration_s=9.0),
        failure(
            6,
            model=None,
            provider=None,
            model_requested="nope/x",
            failed_stage="ingest",
            error_type="model_not_found",
            input_tokens=None,
        ),
    ]
    by_model = summarize(records, "model")
    assert [(r.key, r.requests, r.failed) for r in by_model] == [
        ("local/echo", 3, 0),
        ("openai/gpt-4o", 2, 1),
        ("nope/x", 1, 1),
    ]
    echo = by_model[0]
    assert (echo.input_tokens, echo.output_tokens, echo.cached_tokens) == (30, 60, 5)
    assert echo.reasoning_tokens == 7
    assert (echo.ttft_p50_s, echo.ttft_p95_s) == (0.2, 0.3)
    assert (echo.duration_p50_s, echo.duration_p95_s) == (2.0, 3.0)
    unrouted = by_model[2]
    assert unrouted.ttft_p50_s is None and unrouted.input_tokens == 0
    assert [r.key for r in summarize(records, "provider")] == ["local", "openai", "-"]
    assert [(r.key, r.requests) for r in summarize(records, "status")] == [
        ("completed", 4),
        ("failed/generate/provider_error", 1),
        ("failed/ingest/model_not_found", 1),
    ]
    days = summarize(records, "day")
    assert days[0].key == "2026-11-28"  # in date order
    total = summary(records, "api", since=0, sink="memory").total
    assert (total.key, total.requests, total.failed, total.input_tokens) == ("total", 6, 2, 140)


def test_percentiles_are_values_that_occurred() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (
        50.0,
        95.0,
        100.0,
    )
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0


# --- GET /admin/usage and `xrouter usage` ---------------------------------------------------


ADMIN_KEY = "analytics-admin-key-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def _serve_admin(sink: AnalyticsSink) -> Iterator[str]:
    """`build_admin_routes` in a bare Litestar app on a loopback port (the gateway's own app
    mounts the same routes)."""
    app = Litestar(
        route_handlers=build_admin_routes(sink, admin_key=ADMIN_KEY),
        exception_handlers=exception_handlers(SecretMasker.empty()),
        logging_config=None,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, loop="asyncio", http="h11", log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the admin server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def admin_server() -> Iterator[str]:
    """A server answering /admin/usage from a memory sink holding three records."""
    ring = MemoryRing(100)
    ring.ring.extend([outcome(1), outcome(2, ttft_s=0.5), failure(3, finished_at=NOW - 7200)])
    yield from _serve_admin(AnalyticsSink(ring))


@pytest.fixture
def no_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XR_ADMIN_KEY", ADMIN_KEY)  # what `xrouter usage` sends the server
    for name in ("XR_REDIS_URL", "XR_ANALYTICS", "XR_STORAGE"):
        monkeypatch.delenv(name, raising=False)


def test_admin_usage_answers_the_summary(admin_server: str) -> None:
    answer = httpx.get(
        f"{admin_server}/admin/usage", params={"since": "3600"}, headers=ADMIN, timeout=10
    )
    assert answer.status_code == 200
    body = answer.json()
    assert (body["object"], body["by"], body["sink"], body["records"]) == (
        "usage.summary",
        "model",
        "memory",
        2,  # the failure finished two hours ago
    )
    assert body["rows"][0]["key"] == "local/echo" and body["rows"][0]["requests"] == 2
    assert body["dropped"] == 0
    everything = httpx.get(
        f"{admin_server}/admin/usage",
        params={"since": "86400", "by": "status"},
        headers=ADMIN,
        timeout=10,
    ).json()
    assert [(r["key"], r["requests"]) for r in everything["rows"]] == [
        ("completed", 2),
        ("failed/generate/provider_error", 1),
    ]


@pytest.mark.parametrize(
    ("query", "param"),
    [({"since": "-5"}, "since"), ({"since": "soon"}, "since"), ({"by": "colour"}, "by")],
)
def test_admin_usage_refuses_a_bad_query(
    admin_server: str, query: dict[str, str], param: str
) -> None:
    answer = httpx.get(f"{admin_server}/admin/usage", params=query, headers=ADMIN, timeout=10)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        param,
        "invalid_value",
    )


def test_usage_command_asks_a_running_server(
    admin_server: str, no_redis_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["usage", "--url", admin_server, "--since", "3h", "--by", "model"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Usage since ") and "(3h), by model: 3 requests" in lines[0]
    assert lines[1].split() == [
        "model",
        "requests",
        "failed",
        "input",
        "output",
        "cached",
        "reasoning",
        "ttft",
        "p50",
        "ttft",
        "p95",
        "total",
        "p50",
        "total",
        "p95",
    ]
    assert lines[2].split()[:3] == ["local/echo", "3", "1"]
    assert lines[3].startswith("---")
    assert lines[4].split()[:3] == ["total", "3", "1"]
    # Columns line up: figures are right-aligned, so every line is as wide as the header.
    assert len({len(line) for line in lines[1:]}) == 1, out
    assert main(["usage", "--url", admin_server, "--json", "--by", "provider"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["by"], body["records"], body["rows"][0]["key"]) == ("provider", 2, "local")


def test_usage_command_without_a_server_says_so_in_one_line(
    no_redis_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert main(["usage", "--url", closed]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "cannot reach the server" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    "argv",
    [["usage", "--since", "yesterday"], ["usage", "--by", "colour"], ["usage", "--since", "-1h"]],
)
def test_usage_command_bad_arguments_exit_2(
    argv: list[str], no_redis_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage" in capsys.readouterr().err


async def _seed_stream(url: str, records: list[RequestOutcome]) -> None:
    redis = shared(url)
    sink = AnalyticsSink(RedisStream(redis), queue_size=1000)
    await sink.start()
    for record in records:
        sink.record(record)
    await sink.aclose(5.0)
    await redis.aclose()


def test_usage_command_reads_the_redis_stream(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asyncio.run(
        _seed_stream(
            redis_server.url,
            [
                outcome(1),
                outcome(2, model="openai/gpt-4o", provider="openai", api="chat"),
                failure(3),
            ],
        )
    )
    monkeypatch.setenv("XR_REDIS_URL", redis_server.url)
    monkeypatch.delenv("XR_ANALYTICS", raising=False)
    assert main(["usage", "--since", "30m", "--by", "api"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "by api: 3 requests (redis analytics)" in lines[0]
    assert [line.split()[:3] for line in lines[2:4]] == [
        ["responses", "2", "1"],
        ["chat", "1", "0"],
    ]
    assert main(["usage", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["sink"], body["records"], body["dropped"]) == ("redis", 3, None)


def test_usage_command_redis_down_exits_1(
    redis_factory: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = redis_factory()
    server.kill()
    monkeypatch.setenv("XR_REDIS_URL", server.url)
    assert main(["usage"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read the analytics stream" in err


# --- end to end: requests through the gateway -----------------------------------------------


def test_requests_through_the_gateway_produce_records(
    serve_with: Callable[..., LiveServer],
) -> None:
    server = serve_with(analytics="memory", admin_key=ADMIN_KEY)
    if not isinstance(server.container.analytics(), AnalyticsSink):
        pytest.skip(
            "the container's `analytics` is not the AnalyticsSink yet, nor /admin/usage "
            "mounted (the lead's wiring of issue 11)"
        )
    with server.client() as client:
        ok = client.post("/v1/responses", json={"model": "local/echo", "input": "one two"})
        failed = client.post("/v1/responses", json={"model": "local/error", "input": "hi"})
        unknown = client.post("/v1/responses", json={"model": "nope/x", "input": "hi"})
        assert (ok.status_code, failed.status_code, unknown.status_code) == (200, 502, 404)
        deadline = time.monotonic() + 5
        while True:
            body = client.get("/admin/usage", params={"by": "status"}, headers=ADMIN).json()
            if body["records"] >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    keys = {row["key"]: row["requests"] for row in body["rows"]}
    assert keys["completed"] == 1, keys
    assert sum(count for key, count in keys.items() if key.startswith("failed/")) == 2, keys
    sink = server.container.analytics()
    assert sink.for_request(ok.headers["x-request-id"])[0].output_tokens
