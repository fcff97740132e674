"""A lean HTTP/1.1 client transport for httpx: asyncio protocols and httptools' response parser.

`httpx.AsyncClient(transport=Http1Transport(...))` keeps httpx's client API (auth flows, base
URLs, headers, cookies, `send(stream=True)`, its exception types) and replaces httpcore, whose
connection pool scans every connection for every request (about 0.5-1 ms of CPU per request
at 32 connections). Here a request costs a dictionary lookup, a list pop and a list append.

Pooling: one pool per (scheme, host, port) with a LIFO list of idle keep-alive connections
and a count of open ones; `max_connections` caps the count (a request over it waits, FIFO, for
a released connection or a freed slot, up to the pool timeout: httpx.PoolTimeout);
`max_keepalive_connections` caps the idle list; an idle connection older than
`keepalive_expiry` is closed instead of reused. A connection goes back to the pool only once
its response was read to the end and both sides allow keep-alive; a response closed before
its end closes its connection.

Stale connections: the event loop keeps reading idle sockets, so a connection the server
closed while idle (FIN or RST) is dropped from the pool when that happens. The remaining race
(the server closes just as a request is sent) is handled by one retry: when a request on a
REUSED connection fails because the peer closed or reset the connection before a single byte
of the answer arrived, it is sent once more on a new connection. The server produced no
answer, which is what idle-connection closes look like; a request whose body is a one-shot
stream (not bytes) is not retried. Timeouts are never retried.

Errors are httpx's: httpx.ConnectError (refused, DNS, TLS handshake), httpx.ConnectTimeout,
httpx.WriteTimeout, httpx.ReadTimeout (the longest silence between two reads),
httpx.PoolTimeout, httpx.RemoteProtocolError (malformed answer; the peer closed before the end
of a Content-Length or chunked body, or without answering), httpx.ReadError (the connection
was reset), httpx.LocalProtocolError (a header with CR or LF in it).

Timeouts come from the request's `extensions["timeout"]` (httpx puts its Timeout there).
Proxies are not handled here; httpx ignores the environment's proxies when a client is given a
transport, so `environment_proxy_mounts` gives the client what it would have mounted (httpx's
own transports through the proxies; NO_PROXY hosts stay on this transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Final, cast

import httptools
import httpx
from httpx._utils import get_environment_proxies

from xrouter.adapters.providers.tls import client_ssl_context

__all__ = ["Http1Transport", "environment_proxy_mounts"]

READ_HIGH_WATER: Final = 256 * 1024
"""Unread body bytes above which the socket stops being read (a slow consumer)."""
SINGLE_WRITE_LIMIT: Final = 256 * 1024
"""Bodies up to this size go out with the head in one write."""
_HTTP11: Final = b"HTTP/1.1"


class _Stale(Exception):
    """Internal: the peer closed or reset the connection before a byte of the answer."""

    def __init__(self, error: httpx.TransportError, *, unsent: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.unsent = unsent
        """Nothing of the request was written: always safe to send elsewhere."""


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the asyncio protocol, its parser and the current exchange."""

    __slots__ = (
        "_active",
        "_buffered",
        "_chunks",
        "_closed",
        "_complete",
        "_drain_waiter",
        "_eof",
        "_error",
        "_forgotten",
        "_head_done",
        "_head_request",
        "_headers",
        "_interim",
        "_keep_alive",
        "_loop",
        "_lost",
        "_parser",
        "_pool",
        "_reading_paused",
        "_reason",
        "_received",
        "_request",
        "_status",
        "_transport",
        "_waiter",
        "_write_paused",
        "idle_since",
        "in_idle",
        "served",
    )

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._closed = False
        self._forgotten = False
        self._eof = False
        self._lost: BaseException | None = None
        self._waiter: asyncio.Future[bool] | None = None
        self._drain_waiter: asyncio.Future[bool] | None = None
        self._write_paused = False
        self._reading_paused = False
        self.idle_since = 0.0
        self.in_idle = False
        self.served = 0
        self._reset(None, head_request=False)

    def _reset(self, request: httpx.Request | None, *, head_request: bool) -> None:
        self._request = request
        self._active = request is not None
        self._head_request = head_request
        self._received = False
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._interim = False
        self._head_done = False
        self._complete = False
        self._keep_alive = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._error: httpx.TransportError | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._active or self._complete:
            # Bytes nobody asked for: the connection can no longer be trusted.
            self._keep_alive = False
            if not self._active:
                self.abort()
                return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("Unexpected protocol upgrade in the response."))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"Malformed HTTP response: {exc}"))
        if self._buffered > READ_HIGH_WATER and not self._reading_paused and not self._closed:
            self._reading_paused = True
            transport = self._transport
            if transport is not None:
                transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._eof = True
        self._lost = exc
        self._pool.forget(self)
        self._wake()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(True)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(True)

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._keep_alive = False  # a second answer to one request

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: skip to the final answer
            self._interim = True
            return
        self._status = status
        self._head_done = True
        if self._head_request:  # no body follows, whatever the headers say
            self._complete = True

    def on_body(self, body: bytes) -> None:
        if not self._interim and not self._complete:
            self._chunks.append(body)
            self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._reason = b""
            self._headers = []
            return
        if self._complete:
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()

    # -- the exchange -------------------------------------------------------------------

    def usable(self, now: float, expiry: float | None) -> bool:
        transport = self._transport
        return not (
            self._eof
            or transport is None
            or transport.is_closing()
            or (expiry is not None and now - self.idle_since > expiry)
        )

    async def send(
        self,
        request: httpx.Request,
        head: bytes,
        body: bytes | None,
        chunked: bool,
        write_timeout: float | None,
    ) -> None:
        """Write the request. Raises _Stale when the connection is already closed."""
        transport = self._transport
        self._reset(request, head_request=request.method == "HEAD")
        if transport is None or self._eof or transport.is_closing():
            raise _Stale(
                httpx.RemoteProtocolError("The connection was closed before use."), unsent=True
            )
        if body is not None:
            if chunked and body:
                body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
            elif chunked:
                body = b"0\r\n\r\n"
            if len(body) <= SINGLE_WRITE_LIMIT:
                transport.write(head + body)
            else:
                transport.write(head)
                transport.write(body)
            if self._write_paused:
                await self._drain(write_timeout)
            return
        transport.write(head)
        stream = cast(AsyncIterator[bytes], request.stream)
        async for part in stream:
            if not part:
                continue
            if transport.is_closing():
                return  # the answer (or the error) is read next
            transport.write(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
            if self._write_paused:
                await self._drain(write_timeout)
        if chunked and not transport.is_closing():
            transport.write(b"0\r\n\r\n")
        if self._write_paused:
            await self._drain(write_timeout)

    async def _drain(self, limit_s: float | None) -> None:
        while self._write_paused and not self._closed:
            waiter: asyncio.Future[bool] = self._loop.create_future()
            self._drain_waiter = waiter
            timer = None if limit_s is None else self._loop.call_later(limit_s, _expire, waiter)
            try:
                woken = await waiter
            finally:
                self._drain_waiter = None
                if timer is not None:
                    timer.cancel()
            if not woken:
                raise httpx.WriteTimeout("Timed out while sending the request.")

    async def receive_head(self, read_timeout: float | None) -> httpx.Response:
        """Wait for the status line and the headers. Raises _Stale when the peer closed or
        reset the connection before sending a byte."""
        while not self._head_done:
            if self._error is not None:
                raise self._error
            if self._eof:
                error: httpx.TransportError
                if isinstance(self._lost, OSError):
                    error = httpx.ReadError(_describe(self._lost))
                elif self._received:
                    error = httpx.RemoteProtocolError(
                        "The server closed the connection in the middle of the response head."
                    )
                else:
                    error = httpx.RemoteProtocolError(
                        "Server disconnected without sending a response."
                    )
                if self._received:
                    raise error
                raise _Stale(error)
            await self._wait(read_timeout)
        reason = self._reason
        return httpx.Response(
            self._status,
            headers=self._headers,
            stream=_Body(self, read_timeout),
            extensions={"http_version": self._version(), "reason_phrase": reason},
        )

    def _version(self) -> bytes:
        version = self._parser.get_http_version()
        return _HTTP11 if version == "1.1" else b"HTTP/" + version.encode("ascii")

    async def read_body(self, read_timeout: float | None) -> bytes | None:
        """The next part of the body, None at its end."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._reading_paused:
                    self._reading_paused = False
                    transport = self._transport
                    if transport is not None and not self._closed:
                        transport.resume_reading()
                return data
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            if self._eof:
                if self._lost is None and self._close_delimited():
                    self._complete = True
                    self._keep_alive = False
                    return None
                if isinstance(self._lost, OSError):
                    raise httpx.ReadError(_describe(self._lost))
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            await self._wait(read_timeout)

    def _close_delimited(self) -> bool:
        """Whether the body runs until the connection closes (no length, not chunked)."""
        for name, _ in self._headers:
            lowered = name.lower()
            if lowered in (b"content-length", b"transfer-encoding"):
                return False
        return True

    async def _wait(self, limit_s: float | None) -> None:
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        timer = None if limit_s is None else self._loop.call_later(limit_s, _expire, waiter)
        try:
            woken = await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if not woken:
            raise httpx.ReadTimeout("Timed out while reading the response.")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _fail(self, error: httpx.TransportError) -> None:
        self._error = error
        self._keep_alive = False
        self.abort()

    def finish(self) -> None:
        """The body was read to its end (or, complete, abandoned): reuse or close."""
        self._request = None
        self._active = False
        self._chunks = []
        self._buffered = 0
        if self._keep_alive and self._complete and not self._closed and not self._eof:
            if self._reading_paused:
                self._reading_paused = False
                transport = self._transport
                if transport is not None:
                    transport.resume_reading()
            self.served += 1
            self._pool.release(self)
        else:
            self.close()

    def is_complete(self) -> bool:
        return self._complete

    def close(self) -> None:
        """Close gracefully and give the slot back."""
        self._active = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
        self._pool.forget(self)

    def abort(self) -> None:
        """Drop the connection at once (half-read, broken, timed out) and give the slot back."""
        self._active = False
        self._keep_alive = False
        transport = self._transport
        if transport is not None:
            transport.abort()
        self._pool.forget(self)

    def mark_forgotten(self) -> bool:
        """True the first time: the pool frees this connection's slot once."""
        if self._forgotten:
            return False
        self._forgotten = True
        return True


class _Body(httpx.AsyncByteStream):
    """A response body, read as it arrives; the end returns the connection to the pool."""

    __slots__ = ("_conn", "_read_timeout")

    def __init__(self, conn: _Connection, read_timeout: float | None) -> None:
        self._conn: _Connection | None = conn
        self._read_timeout = read_timeout

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        try:
            data = await conn.read_body(self._read_timeout)
        except BaseException:
            self._conn = None
            conn.abort()
            raise
        if data is None:
            self._conn = None
            conn.finish()
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if conn.is_complete():
            conn.finish()  # fully received: reusable even though not all of it was read
        else:
            conn.abort()  # never reuse a half-read connection


class _Pool:
    """The connections to one origin."""

    __slots__ = (
        "_all",
        "_closed",
        "_expiry",
        "_host",
        "_idle",
        "_max",
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
    ) -> None:
        self.loop = loop
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._server_hostname = host if ssl_context is not None else None
        self._max = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._total = 0
        """Open connections and connections being opened."""
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    async def acquire(
        self, request: httpx.Request, pool_timeout: float | None, connect_timeout: float | None
    ) -> _Connection:
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
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
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

    async def _open(self, request: httpx.Request, limit_s: float | None) -> _Connection:
        """Open a connection in a slot already counted in `_total`."""
        try:
            async with asyncio.timeout(limit_s):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                )
        except BaseException as exc:
            self._slot_freed()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(
                    f"Timed out connecting to {self._host}:{self._port}.", request=request
                ) from None
            if isinstance(exc, OSError):
                raise httpx.ConnectError(_describe(exc), request=request) from None
            raise
        if self._closed:
            conn.abort()
            raise RuntimeError("The transport is closed.")
        self._all.add(conn)
        transport = conn._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def release(self, conn: _Connection) -> None:
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

    def forget(self, conn: _Connection) -> None:
        """A connection closed: drop it and free its slot (once)."""
        if not conn.mark_forgotten():
            return
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

    def _give_back(self, granted: _Connection | None) -> None:
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


class Http1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over pooled keep-alive connections (see the module docstring).

    `ssl_context`: used for https; None builds the default verifying context on first use.
    `limits`: max_connections, max_keepalive_connections, keepalive_expiry, per origin.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._limits = limits or httpx.Limits(
            max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0
        )
        self._pools: dict[tuple[bytes, bytes, int], _Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("The transport is closed.")
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout") or {}
        pool = self._pool_for(request.url)
        head, body, chunked = _encode_head(request)
        replayable = body is not None
        pool_timeout = timeouts.get("pool")
        connect_timeout = timeouts.get("connect")
        write_timeout = timeouts.get("write")
        read_timeout = timeouts.get("read")
        retried = False
        while True:
            conn = await pool.acquire(request, pool_timeout, connect_timeout)
            try:
                await conn.send(request, head, body, chunked, write_timeout)
                return await conn.receive_head(read_timeout)
            except _Stale as stale:
                conn.abort()
                if conn.served and stale.unsent:
                    continue  # closed while idle, noticed late: take another connection
                if conn.served and replayable and not retried:
                    retried = True
                    continue
                raise stale.error from None
            except BaseException:
                conn.abort()
                raise

    def _pool_for(self, url: httpx.URL) -> _Pool:
        scheme = url.raw_scheme
        host = url.raw_host
        port = url.port
        if port is None:
            port = 443 if scheme == b"https" else 80
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            if scheme not in (b"http", b"https"):
                raise httpx.UnsupportedProtocol(f"Unsupported URL scheme {scheme!r}.")
            loop = asyncio.get_running_loop()
            if self._loop is None:
                self._loop = loop
            elif loop is not self._loop:
                raise RuntimeError("Http1Transport is bound to another event loop.")
            context = None
            if scheme == b"https":
                if self._ssl_context is None:
                    self._ssl_context = client_ssl_context(verify=True)
                context = self._ssl_context
            pool = _Pool(loop, host.decode("ascii"), port, context, self._limits)
            self._pools[key] = pool
        return pool

    async def aclose(self) -> None:
        self._closed = True
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            pool.close()


def environment_proxy_mounts(
    *, verify: ssl.SSLContext | bool, limits: httpx.Limits
) -> dict[str, httpx.AsyncBaseTransport | None]:
    """`mounts=` for a client on Http1Transport with `trust_env=True`: HTTP(S)_PROXY / ALL_PROXY
    / NO_PROXY from the environment, as httpx applies them to a client without a transport
    (a proxied URL goes through httpx's own transport and the proxy; None: this transport)."""
    return {
        pattern: None
        if proxy is None
        else httpx.AsyncHTTPTransport(proxy=proxy, verify=verify, limits=limits, trust_env=True)
        for pattern, proxy in get_environment_proxies().items()
    }


def _encode_head(request: httpx.Request) -> tuple[bytes, bytes | None, bool]:
    """The request head, the body when it is bytes (None: an async stream), and whether the
    body goes out chunked. Host, Content-Length and Transfer-Encoding come from the request's
    headers (httpx sets them) and are added only when missing."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    has_host = has_length = chunked = False
    count = 0
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"host":
            has_host = True
        elif lowered == b"content-length":
            has_length = True
        elif lowered == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        parts += (name, b": ", value, b"\r\n")
        count += 1
    body: bytes | None
    try:
        body = request.content
    except httpx.RequestNotRead:
        body = None
    if not has_host:
        parts.insert(1 + 3, b"Host: " + request.url.netloc + b"\r\n")
        count += 1
    if not has_length and not chunked:
        if body is None:
            parts.append(b"Transfer-Encoding: chunked\r\n")
            chunked = True
            count += 1
        elif body or request.method in ("POST", "PUT", "PATCH"):
            parts.append(b"Content-Length: %d\r\n" % len(body))
            count += 1
    parts.append(b"\r\n")
    head = b"".join(parts)
    newlines = head.count(b"\n")
    if newlines != count + 2 or head.count(b"\r") != newlines:
        raise httpx.LocalProtocolError(
            "A request header name or value contains a line break.", request=request
        )
    return head, body, chunked


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
