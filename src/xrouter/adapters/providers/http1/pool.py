"""The connection pool of one origin: a LIFO idle list, a count of open connections and a
FIFO queue of waiters; acquire and release are O(1).

Slot accounting: `_total` counts slots, and each slot has exactly one owner at any time: the
`acquire` call that took it (while it connects or waits), a waiter it was handed to, or the
`Connection` it was given to (`holds_slot`). A slot changes hands only in code without an
await, and whoever owns it when something fails (cancellation included) frees it, once."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque

import httpx

from xrouter.adapters.providers.http1.connect import open_tcp_socket
from xrouter.adapters.providers.http1.connection import MAX_HEAD_BYTES, Connection, describe


class Pool:
    """The connections to one origin."""

    __slots__ = (
        "_all",
        "_closed",
        "_expiry",
        "_host",
        "_idle",
        "_max",
        "_max_head",
        "_max_idle",
        "_port",
        "_server_hostname",
        "_ssl",
        "_total",
        "_waiters",
        "loop",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        limits: httpx.Limits,
        max_head_bytes: int = MAX_HEAD_BYTES,
    ) -> None:
        self.loop = loop
        self._max_head = max_head_bytes
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._server_hostname = host if ssl_context is not None else None
        self._max = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._total = 0
        """Open connections and connections being opened."""
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections open or being opened (slots in use, including idle connections)."""
        return self._total

    async def acquire(
        self, request: httpx.Request, pool_timeout: float | None, connect_timeout: float | None
    ) -> Connection:
        if self._closed:
            raise RuntimeError("The transport is closed.")
        idle = self._idle
        if idle:
            now = self.loop.time()
            expiry = self._expiry
            while idle:
                conn = idle.pop()
                conn.in_idle = False
                if conn.usable(now, expiry):
                    return conn
                conn.close()
        if self._max is None or self._total < self._max:
            self._total += 1
            return await self._open(request, connect_timeout)
        waiter: asyncio.Future[Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(pool_timeout):
                granted = await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._give_back(waiter.result())
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout(
                    "Timed out waiting for a free connection.", request=request
                ) from None
            raise
        if granted is None:  # a slot was freed and handed to us
            return await self._open(request, connect_timeout)
        return granted

    async def _open(self, request: httpx.Request, limit_s: float | None) -> Connection:
        """Open a connection in a slot already counted in `_total` and owned by this call
        until the connection takes it; any failure here, cancellation at any await
        (resolving, connecting, the TLS handshake) included, frees the slot here, once. A
        Connection made before the failure holds no slot: its close frees nothing."""
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(limit_s):
                sock = await open_tcp_socket(self.loop, self._host, self._port)
                # From here the transport owns the socket and closes it on any failure, later
                # than now for TLS (it closes the ssl layer first): closing it here too would
                # free its descriptor under a live transport, and the next socket given that
                # number would collide with it.
                owned, sock = sock, None
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self, self._max_head),
                    sock=owned,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                )
        except BaseException as exc:
            if sock is not None:
                sock.close()  # failed before the transport took it
            self._slot_freed()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(
                    f"Timed out connecting to {self._host}:{self._port}.", request=request
                ) from None
            if isinstance(exc, OSError):
                raise httpx.ConnectError(describe(exc), request=request) from None
            raise
        if self._closed:
            conn.abort()
            self._slot_freed()
            raise RuntimeError("The transport is closed.")
        conn.holds_slot = True  # no await since the connect: the slot passes atomically
        self._all.add(conn)
        return conn

    def release(self, conn: Connection) -> None:
        """A connection whose exchange ended cleanly."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if self._closed or (self._max_idle is not None and len(self._idle) >= self._max_idle):
            conn.close()
            return
        conn.idle_since = self.loop.time()
        conn.in_idle = True
        self._idle.append(conn)

    def forget(self, conn: Connection) -> None:
        """A connection closed: drop it and free its slot (once)."""
        if not conn.holds_slot:
            return
        conn.holds_slot = False
        if conn.in_idle:
            conn.in_idle = False
            self._idle.remove(conn)  # only when a server closes an idle connection
        self._all.discard(conn)
        self._slot_freed()

    def _slot_freed(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter; `_total` stays
                return
        self._total -= 1

    def _give_back(self, granted: Connection | None) -> None:
        if granted is None:
            self._slot_freed()
        else:
            self.release(granted)

    def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.cancel()
