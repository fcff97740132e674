"""The shared Redis client's circuit breaker, against a real redis-server: a dead Redis
costs one bounded wait per breaker period, not one per call; an error reply from a live
Redis is not an outage; service resumes by itself when Redis is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.redis_servers import RedisServer
from xrouter.adapters.redis.connection import (
    CircuitBreaker,
    RedisSettings,
    RedisUnavailable,
    SharedRedis,
    redacted,
)


def _shared(url: str, **options: Any) -> SharedRedis:
    return SharedRedis(RedisSettings(url, timeout_s=0.2, breaker_s=0.4, **options))


async def _set(redis: SharedRedis) -> Any:
    return await redis.run("set a key", lambda client: client.set("k", b"v"))


def test_a_hung_redis_costs_one_timeout_per_breaker_period(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()

    async def scenario() -> None:
        redis = _shared(server.url)
        assert await _set(redis)
        server.pause()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match=r"no answer within 0\.2 s"):
            await _set(redis)
        assert time.monotonic() - started < 0.4
        # The breaker is open: the next calls fail at once, without a wait each.
        started = time.monotonic()
        for _ in range(50):
            with pytest.raises(RedisUnavailable, match="unavailable"):
                await _set(redis)
        assert time.monotonic() - started < 0.05
        assert not redis.healthy
        server.resume()
        await asyncio.sleep(0.45)  # the breaker period passes; the next call probes
        assert await _set(redis)
        assert redis.healthy
        await redis.aclose()

    asyncio.run(scenario())


def test_an_error_reply_is_not_an_outage(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        redis = _shared(redis_server.url)
        await redis.run("make a list", lambda client: client.rpush("a-list", b"x"))
        with pytest.raises(RedisUnavailable, match="refused to read"):
            await redis.run("read", lambda client: client.get("a-list"))  # WRONGTYPE
        assert redis.healthy
        assert await _set(redis)
        await redis.aclose()

    asyncio.run(scenario())


def test_a_probe_that_gets_an_error_reply_closes_the_breaker() -> None:
    now = [0.0]
    breaker = CircuitBreaker(1.0, monotonic=lambda: now[0])
    assert breaker.failed()
    assert not breaker.allow()
    now[0] = 1.5
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # one probe at a time
    breaker.succeeded()
    assert breaker.closed and breaker.allow()


def test_the_password_is_redacted_everywhere_it_is_shown() -> None:
    url = "redis://user:s3cret-passw0rd@10.0.0.1:6380/2"
    assert redacted(url) == "redis://***@10.0.0.1:6380/2"
    redis = _shared(url)
    for text in (repr(redis), repr(redis.settings), redis.where, repr(redis.client)):
        assert "s3cret-passw0rd" not in text
    assert redacted("unix:///run/redis.sock") == "unix:///run/redis.sock"
