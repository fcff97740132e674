"""A provider's in-flight limit: at most `max_inflight` calls at once, the others waiting in
arrival order for up to `queue_timeout_s`, then refused (`Overloaded`, 429 with Retry-After).

`InflightLimiter` is what HttpTransport needs; `LocalInflight` is the limit of one process.
The Redis implementation (`adapters/redis/inflight.py`) shares one limit between every worker
and instance and falls back to a `LocalInflight` while Redis is unavailable.

Semantics (formal/xrouter_inflight.tla): a free slot goes to a new arrival only when nobody
waits (no barging); a waiter either gets a slot, in arrival order, or fails explicitly when
its wait runs out; the limit is never exceeded. `queue_timeout_s = 0` is fail-fast: no wait,
refused at once when every slot is taken.

LocalInflight's waiting queue needs no bound of its own: every waiter is an admitted request,
so the engine's own limit (`max_inflight` of the gateway, per process) bounds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol, final

from xrouter.adapters.providers.transport_settings import TransportSettings
from xrouter.application.refusal_log import RefusalLog
from xrouter.domain.errors import Overloaded

log = logging.getLogger("xrouter.transport")


class Lease:
    """A held slot, handed back to the limiter that gave it. Opaque to the transport."""

    __slots__ = ()


@final
class _LocalLease(Lease):
    __slots__ = ()


LOCAL_LEASE: Lease = _LocalLease()
"""The lease LocalInflight gives: a process-local slot is just a count, so one immutable
value stands for every one of them (no object per call)."""


class InflightLimiter(Protocol):
    """One provider's in-flight limit, as HttpTransport uses it."""

    @property
    def inflight(self) -> int:
        """Calls holding a slot in this process now."""
        ...

    @property
    def waiting(self) -> int:
        """Calls of this process waiting for a slot now."""
        ...

    async def acquire(self) -> Lease:
        """A slot for a generation call: at once when one is free and nobody waits, else
        after waiting in arrival order up to `queue_timeout_s`. Raises Overloaded (429, with
        the transport's `overload_retry_after_s`, naming `max_inflight` and
        `queue_timeout_s`) when the wait runs out, or at once when `queue_timeout_s` is 0."""
        ...

    def acquire_now(self) -> Lease:
        """A slot in this process now or Overloaded at once: never waits, never takes a shared
        lease (model discovery, which must not queue behind generations)."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the slot back. Never blocks and never raises (it runs in `finally` blocks of
        cancelled calls)."""
        ...

    async def aclose(self) -> None:
        """Stop background work (the shared limiter's heartbeat and pending releases)."""
        ...


InflightFactory = Callable[[str, TransportSettings], InflightLimiter]
"""Builds provider `name`'s limiter from its transport settings (the container's choice: the
shared one when Redis is configured)."""


def local_inflight(provider: str, settings: TransportSettings) -> InflightLimiter:
    """The InflightFactory of a single process."""
    return LocalInflight(provider, settings)


class TrackedLimiters:
    """An InflightFactory that remembers the limiters it built, so the gauges of in-flight
    and queued upstream calls can read them when metrics are collected."""

    def __init__(self, factory: InflightFactory) -> None:
        self._factory = factory
        self.limiters: list[tuple[str, InflightLimiter]] = []

    def __call__(self, provider: str, settings: TransportSettings) -> InflightLimiter:
        limiter = self._factory(provider, settings)
        self.limiters.append((provider, limiter))
        return limiter


class LocalInflight:
    """The in-flight limit of one process, with a bounded FIFO wait.

    The free path is two attribute reads and an increment: no future, no task. A waiter gets a
    future; a release hands its slot straight to the oldest waiter (the count does not drop,
    so no new arrival can take the slot in between). The wait's deadline is a timer that
    resolves the waiter's future, so a waiter ends either granted or timed out, never both.
    A waiter cancelled while waiting leaves the queue; one cancelled after a slot was handed
    to it passes the slot on.
    """

    __slots__ = (
        "_held",
        "_limit",
        "_provider",
        "_refusals",
        "_settings",
        "_timeout_s",
        "_waiters",
    )

    def __init__(
        self, provider: str, settings: TransportSettings, *, refusals: RefusalLog | None = None
    ) -> None:
        """`refusals` shares the rate limit of refusal log lines (the shared limiter's)."""
        self._provider = provider
        self._settings = settings
        self._limit = settings.max_inflight
        self._timeout_s = settings.queue_timeout_s
        self._held = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._refusals = refusals or RefusalLog(log)

    def __repr__(self) -> str:
        return (
            f"LocalInflight({self._provider!r}, held={self._held}, limit={self._limit}, "
            f"waiting={len(self._waiters)})"
        )

    @property
    def inflight(self) -> int:
        return self._held

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._waiters)

    async def acquire(self, *, timeout_s: float | None = None) -> Lease:
        """`timeout_s` replaces `queue_timeout_s` for this call (the shared limiter falling
        back here with what is left of a wait)."""
        if self._held < self._limit and not self._waiters:
            self._held += 1
            return LOCAL_LEASE
        timeout = self._timeout_s if timeout_s is None else timeout_s
        if timeout <= 0:
            raise self._refuse(waited=self._timeout_s > 0)
        return await self._wait(timeout)

    def acquire_now(self) -> Lease:
        if self._held < self._limit and not self._waiters:
            self._held += 1
            return LOCAL_LEASE
        raise self._refuse(waited=False)

    def release(self, lease: Lease) -> None:
        self._held -= 1
        if self._waiters:
            self._grant()

    async def aclose(self) -> None:
        return None

    # -- internals -----------------------------------------------------------------------

    async def _wait(self, timeout_s: float) -> Lease:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout_s, self._expire, waiter)
        # A slot may be free behind waiters that were cancelled but have not yet left.
        self._grant()
        try:
            granted = await waiter
        except asyncio.CancelledError:
            if not waiter.done() or waiter.cancelled():
                waiter.cancel()
                self._leave(waiter)
            elif waiter.result():
                # Granted at the moment we were cancelled: pass the slot on.
                self.release(LOCAL_LEASE)
            raise
        finally:
            timer.cancel()
        if not granted:
            raise self._refuse(waited=True)
        return LOCAL_LEASE

    def _grant(self) -> None:
        """Hand free slots to the oldest live waiters."""
        waiters = self._waiters
        while waiters and self._held < self._limit:
            waiter = waiters.popleft()
            if waiter.done():  # cancelled, not yet gone
                continue
            self._held += 1
            waiter.set_result(True)

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            self._leave(waiter)
            waiter.set_result(False)

    def _leave(self, waiter: asyncio.Future[bool]) -> None:
        with contextlib.suppress(ValueError):  # already popped by `_grant`
            self._waiters.remove(waiter)
        self._grant()

    def _refuse(self, *, waited: bool) -> Overloaded:
        return refusal(
            self._provider,
            self._settings,
            self._refusals,
            inflight=self._held,
            waited=waited,
        )


def refusal(
    provider: str,
    settings: TransportSettings,
    refusals: RefusalLog,
    *,
    inflight: int,
    waited: bool,
    who: str = "The gateway has",
) -> Overloaded:
    """The Overloaded for a call refused by `provider`'s in-flight limit, with its log line
    (rate limited): which setting acted, and what to change. `who` says whose count
    `inflight` is ("The gateway has", "The gateways sharing Redis have")."""
    names = settings.setting_names
    limit, queue = names("max_inflight"), names("queue_timeout_s")
    if waited:
        refusals.refused(
            queue,
            "refusing a call to %s with 429: it waited %s s (%s) for one of the %d slots (%s)",
            provider,
            settings.queue_timeout_s,
            queue,
            settings.max_inflight,
            limit,
        )
        message = (
            f"All {settings.max_inflight} slots for calls to {provider} (the configured "
            f"limit, {limit}) stayed taken while this request waited "
            f"{settings.queue_timeout_s:g} s for one ({queue}). Retry after a short wait."
        )
        return Overloaded(message, retry_after=settings.overload_retry_after_s)
    fail_fast = settings.queue_timeout_s <= 0
    refusals.refused(
        limit,
        "refusing calls to %s with 429: %d in flight, the limit set by %s%s",
        provider,
        inflight,
        limit,
        f" ({queue} is 0: no wait)" if fail_fast else "",
    )
    message = (
        f"{who} {inflight} calls in flight to {provider}, the configured limit ({limit})"
        + (f", and {queue} is 0, so calls over it are refused, not queued" if fail_fast else "")
        + ". Retry after a short wait."
    )
    return Overloaded(message, retry_after=settings.overload_retry_after_s)
