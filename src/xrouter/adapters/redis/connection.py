"""One Redis client per process, shared by everything that keeps state in Redis (the response
store, the model catalog cache, the in-flight leases), and the circuit breaker that keeps a
dead Redis from costing each request a wait.

Every command runs through `SharedRedis.run`: it is bounded by `timeout_s` (connect
included), a failure opens the breaker for `breaker_s`, and while it is open every call fails
at once with `RedisUnavailable`. After `breaker_s` one call probes Redis again (the others
still fail fast); its success closes the breaker, so service resumes without a restart.

redis-py's own retries are switched off: a retry multiplies the wait on a dead server, and the
callers decide what a failure means (503, not stored, a local fallback).

Besides redis-py's client, a plain (non-cluster) Redis gets `lean` (resp.py): pipelined RESP
connections that cost a command about a tenth of redis-py's CPU, for the hot path (the
response store). `run_lean` gives an operation one of its lanes, through the same timeout and
breaker; a lane whose call failed for want of an answer is dropped, so a hung Redis never keeps
replies queued, and the next call (the breaker's probe) connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationWrongNumberOfArgsError,
    ClusterError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from xrouter.adapters.redis.resp import Lane, RespClient, endpoint_from_url

log = logging.getLogger("xrouter.redis")

T = TypeVar("T")
C = TypeVar("C")

LEAN_CONNECTIONS: Final = 1
"""Connections of the lean client (at most `pool_size`), chosen by measurement: at c=32 in
process one pipelined connection saved 15-29k responses/s, four 10-27k (replies arrive in
bigger batches on one). A multi-MB save delays the commands behind it on its connection, but
Redis runs commands one at a time anyway, so more lanes would spare only its transfer time."""

RedisClient = Redis | RedisCluster
"""What operations receive: a plain client or a cluster client (same command methods)."""


class RedisUnavailable(Exception):
    """Redis did not answer in time, refused, or the breaker is open. The message says which;
    it never carries the URL's password."""


def redacted(url: str) -> str:
    """`url` with its password (and user) replaced by `***`, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str
    cluster: bool = False
    ca_file: str | None = None
    pool_size: int = 64
    timeout_s: float = 0.5
    breaker_s: float = 2.0

    def __repr__(self) -> str:
        return (
            f"RedisSettings(url={redacted(self.url)!r}, cluster={self.cluster}, "
            f"pool_size={self.pool_size}, timeout_s={self.timeout_s}, "
            f"breaker_s={self.breaker_s})"
        )


class CircuitBreaker:
    """Closed: calls go through. Open (after a failure): calls fail at once until `open_s` has
    passed; then one call at a time probes, and its success closes the breaker."""

    __slots__ = ("_monotonic", "_open_s", "_open_until", "_probing", "failures")

    def __init__(self, open_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._open_s = open_s
        self._monotonic = monotonic
        self._open_until = 0.0
        self._probing = False
        self.failures = 0
        """Failures since start (a health figure for /ready and, later, metrics)."""

    @property
    def closed(self) -> bool:
        return self._open_until == 0.0

    def allow(self) -> bool:
        """May a call go to Redis now? Open and not yet due: no; due: one probe at a time."""
        if self._open_until == 0.0:
            return True
        if self._probing or self._monotonic() < self._open_until:
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        self._open_until = 0.0
        self._probing = False

    def failed(self) -> bool:
        """Record a failure; True when this failure opened a closed breaker."""
        self.failures += 1
        was_closed = self._open_until == 0.0
        self._open_until = self._monotonic() + self._open_s
        self._probing = False
        return was_closed


class SharedRedis:
    """The process's Redis client and its breaker."""

    def __init__(
        self,
        settings: RedisSettings,
        *,
        client: RedisClient | None = None,
        setting_names: Callable[[str], str] = lambda name: name,
    ) -> None:
        """`client` replaces the one built from `settings` (tests); `setting_names` gives the
        operator's name of a setting (`redis_timeout_s` -> its variable) for log lines."""
        self.settings = settings
        self._names = setting_names
        self.client: RedisClient = client if client is not None else _build_client(settings)
        self.lean: RespClient | None = None if client is not None else _build_lean(settings)
        """The lean client (resp.py) for a plain Redis; None for a cluster (slot routing stays
        with redis-py), an injected client, or a URL with options only redis-py knows."""
        self.breaker = CircuitBreaker(settings.breaker_s)
        self.where = redacted(settings.url)

    def __repr__(self) -> str:
        return f"SharedRedis({self.where!r}, cluster={self.settings.cluster})"

    @property
    def healthy(self) -> bool:
        return self.breaker.closed

    async def run(self, what: str, operation: Callable[[RedisClient], Awaitable[T]]) -> T:
        """`operation(client)` within `timeout_s`, through the breaker. `what` names the
        operation in the log line and the error ("store response", "acquire lease")."""
        return await self._guarded(what, operation, self.client, None)

    async def run_lean(self, what: str, operation: Callable[[Lane], Awaitable[T]]) -> T:
        """`run` on one lane of the lean client (there must be one: `lean` is not None)."""
        assert self.lean is not None, "run_lean needs the lean client (a plain Redis URL)"
        lane = self.lean.lane()
        return await self._guarded(what, operation, lane, lane)

    async def _guarded(
        self, what: str, operation: Callable[[C], Awaitable[T]], client: C, lane: Lane | None
    ) -> T:
        if not self.breaker.allow():
            raise RedisUnavailable(
                f"Redis at {self.where} is unavailable (a recent call failed; the next "
                f"probe is due within {self._names('redis_breaker_s')})."
            )
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                result = await operation(client)
        except (RedisError, OSError, TimeoutError) as exc:
            if _answered(exc):
                # Redis answered, with an error (out of memory, a script error): it is up,
                # so the breaker stays as it is, but the operation failed all the same.
                log.error("Redis at %s refused to %s: %s", self.where, what, type(exc).__name__)
                self.breaker.succeeded()  # also ends a probe: Redis is there
                raise RedisUnavailable(
                    f"Redis at {self.where} refused to {what} ({type(exc).__name__})."
                ) from None
            if lane is not None:
                lane.drop()  # no answer: replies queued behind it would never come either
            raise self._outage(what, exc) from None
        except AttributeError as exc:
            if not self.settings.cluster:
                raise
            # redis-py's asyncio cluster client can fail inside itself when many calls share
            # a node's connections (a connection torn down while in use: "'NoneType' object
            # has no attribute 'writelines'", redis/redis-py#4287). That call is lost, Redis
            # is not down: no breaker, the caller answers as for an unavailable Redis.
            log.warning("Redis cluster client failed to %s: %s", what, type(exc).__name__)
            raise RedisUnavailable(
                f"Redis at {self.where} could not {what} (the cluster client failed)."
            ) from None
        except BaseException:
            # Cancelled (the client went away) or a bug: not Redis's fault, but a probe must
            # not stay claimed forever.
            if not self.breaker.closed:
                self.breaker.failed()
            raise
        if not self.breaker.closed:
            log.warning("Redis at %s answers again", self.where)
        self.breaker.succeeded()
        return result

    def _outage(self, what: str, exc: BaseException) -> RedisUnavailable:
        """Open the breaker (logging when this failure opened it) and say what failed."""
        reason = (
            f"no answer within {self.settings.timeout_s} s ({self._names('redis_timeout_s')})"
            if isinstance(exc, TimeoutError)
            else type(exc).__name__
        )
        if self.breaker.failed():
            log.error(
                "Redis at %s failed to %s: %s; calls skip Redis for %s s (%s), then one probes it",
                self.where,
                what,
                reason,
                self.settings.breaker_s,
                self._names("redis_breaker_s"),
            )
        return RedisUnavailable(f"Redis at {self.where} failed to {what}: {reason}.")

    async def ping(self) -> bool:
        """A health probe for /ready: True when Redis answered PING in time."""
        try:
            await self.run("answer PING", _ping)
        except RedisUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        # Closing a dead connection is not worth a failure.
        if self.lean is not None:
            await self.lean.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()


def _answered(exc: BaseException) -> bool:
    """An error reply from a working server, as opposed to no answer (a cluster that says it
    is down, or a failed login, count as no answer)."""
    return isinstance(exc, ResponseError) and not isinstance(
        exc, (ClusterError, AuthenticationWrongNumberOfArgsError, TryAgainError)
    )


async def _ping(client: RedisClient) -> Any:
    return await client.ping()


def _build_lean(settings: RedisSettings) -> RespClient | None:
    if settings.cluster:
        return None
    endpoint = endpoint_from_url(settings.url, settings.ca_file)
    if endpoint is None:
        return None
    return RespClient(
        endpoint,
        connections=max(1, min(LEAN_CONNECTIONS, settings.pool_size)),
        connect_timeout_s=settings.timeout_s,
    )


def _build_client(settings: RedisSettings) -> RedisClient:
    """A cluster client, or a plain client on a blocking pool (a full pool waits for a free
    connection up to the command timeout instead of failing at once)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.timeout_s,
        "socket_connect_timeout": settings.timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if settings.url.startswith("rediss://") and settings.ca_file:
        options["ssl_ca_certs"] = settings.ca_file
    if settings.cluster:
        return RedisCluster.from_url(settings.url, max_connections=settings.pool_size, **options)
    pool = BlockingConnectionPool.from_url(
        settings.url, max_connections=settings.pool_size, timeout=settings.timeout_s, **options
    )
    return Redis(connection_pool=pool)
