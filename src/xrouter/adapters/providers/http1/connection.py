"""One HTTP/1.1 connection: an asyncio protocol feeding httptools, writing requests and
reading answers (bodies through `body.Body`). See the package docstring for the error
mapping and for when a request may be sent again."""

from __future__ import annotations

import asyncio
import select
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final, cast

import httptools
import httpx

from xrouter.adapters.providers.http1.body import Body

if TYPE_CHECKING:  # the pool owns its connections; only its type is needed here
    from xrouter.adapters.providers.http1.pool import Pool

MAX_HEAD_BYTES: Final = 100 * 1024
"""Default cap on a response head (status line and headers), and on the bytes that may arrive
without body data once the head is in (chunk extensions, trailers): httpcore's (h11's) cap."""
READ_HIGH_WATER: Final = 256 * 1024
"""Unread body bytes above which the socket stops being read (a slow consumer)."""
SINGLE_WRITE_LIMIT: Final = 256 * 1024
"""Bodies up to this size go out with the head in one write."""
_HTTP11: Final = b"HTTP/1.1"


class Stale(Exception):
    """Internal: the peer closed or reset the connection before a byte of the answer."""

    def __init__(self, error: httpx.TransportError, *, unsent: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.unsent = unsent
        """No byte of the request left this process: safe to send elsewhere, whatever the
        method. Otherwise the server may have received and run the request."""


class ResponseHeadTooLarge(httpx.RemoteProtocolError):
    """The response head, or a run of chunk framing or trailers, passed
    `max_response_head_bytes` (`limit`): a distinct type so a caller can name its setting."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class _HeadTooLarge(Exception):
    """Internal: raised from a parser callback to stop parsing an oversized head."""


def expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Connection(asyncio.Protocol):
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
        "_head_done",
        "_head_request",
        "_head_size",
        "_headers",
        "_interim",
        "_keep_alive",
        "_loop",
        "_lost",
        "_max_head",
        "_parser",
        "_pool",
        "_reading_paused",
        "_reason",
        "_received",
        "_request",
        "_saw_body",
        "_status",
        "_transport",
        "_unframed",
        "_waiter",
        "_write_paused",
        "holds_slot",
        "idle_since",
        "in_idle",
        "served",
    )

    def __init__(self, pool: Pool, max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._max_head = max_head_bytes
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._closed = False
        self.holds_slot = False
        """Whether this connection owns one of the pool's slots. The pool sets it when it
        takes the connection in (never across an await, so a cancelled connect cannot leave
        the slot owned twice) and clears it when it frees the slot, exactly once."""
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
        self._head_size = 0
        self._unframed = 0
        self._saw_body = False
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
        self._saw_body = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("Unexpected protocol upgrade in the response."))
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._fail(self._oversized())
            else:
                self._fail(httpx.RemoteProtocolError(f"Malformed HTTP response: {exc}"))
        else:
            # httptools buffers an unfinished header line (or trailer line) whole: bound the
            # bytes that may pile up between two pieces of body.
            if self._saw_body or self._complete:
                self._unframed = 0
            else:
                self._unframed += len(data)
                if self._unframed > self._max_head:
                    self._fail(self._oversized())
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
        self._head_size += len(status) + 15  # "HTTP/1.1 200 " and CRLF

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a trailer field: dropped, as httpcore does; never merged into headers
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        if self._head_size > self._max_head:
            raise _HeadTooLarge
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: skip to the final answer
            self._interim = True
            return
        self._status = status
        self._head_done = True
        if self._head_request:  # no body follows, whatever the headers say
            self._complete = True

    def on_body(self, body: bytes) -> None:
        self._saw_body = True
        if not self._interim and not self._complete:
            self._chunks.append(body)
            self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._reason = b""
            self._headers = []
            self._head_size = 0
            return
        if self._complete:
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()

    # -- the exchange -------------------------------------------------------------------

    def _oversized(self) -> ResponseHeadTooLarge:
        where = (
            "The response head (status line and headers) is"
            if not self._head_done
            else "The response sent a run of chunk framing or trailers"
        )
        limit = self._max_head
        return ResponseHeadTooLarge(f"{where} larger than {limit} bytes.", limit=limit)

    def usable(self, now: float, expiry: float | None) -> bool:
        """Whether an idle connection can carry a new request: open, not expired, and with
        nothing of the previous request left unsent. (`send` checks for an unread close.)"""
        transport = self._transport
        return not (
            self._eof
            or transport is None
            or transport.is_closing()
            or (expiry is not None and now - self.idle_since > expiry)
            or transport.get_write_buffer_size()
        )

    async def send(
        self,
        request: httpx.Request,
        head: bytes,
        body: bytes | None,
        chunked: bool,
        write_timeout: float | None,
    ) -> None:
        """Write the request. Raises Stale(unsent=True) when the connection turns out closed
        before a byte of the request was accepted by the kernel."""
        transport = self._transport
        self._reset(request, head_request=request.method == "HEAD")
        if (
            transport is None
            or self._eof
            or transport.is_closing()
            or (self.served and _readable(transport))  # a reuse, from the pool or a handoff
        ):
            raise Stale(
                httpx.RemoteProtocolError("The connection was closed before use."), unsent=True
            )
        if body is not None:
            if chunked and body:
                body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
            elif chunked:
                body = b"0\r\n\r\n"
            if len(body) <= SINGLE_WRITE_LIMIT:
                self._write_first(transport, head + body)
            else:
                self._write_first(transport, head)
                transport.write(body)
            if self._write_paused:
                await self._drain(write_timeout)
            return
        self._write_first(transport, head)
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

    def _write_first(self, transport: asyncio.Transport, data: bytes) -> None:
        """The request's first write. The write buffer is empty (see `usable`), so the
        transport hands `data` straight to the socket; when that send fails (the peer had
        already reset the connection) the transport closes at once and nothing was sent."""
        transport.write(data)
        if transport.is_closing() and self._active:
            raise Stale(
                httpx.RemoteProtocolError("The connection was closed before use."), unsent=True
            )

    async def _drain(self, limit_s: float | None) -> None:
        while self._write_paused and not self._closed:
            waiter: asyncio.Future[bool] = self._loop.create_future()
            self._drain_waiter = waiter
            timer = None if limit_s is None else self._loop.call_later(limit_s, expire, waiter)
            try:
                woken = await waiter
            finally:
                self._drain_waiter = None
                if timer is not None:
                    timer.cancel()
            if not woken:
                raise httpx.WriteTimeout("Timed out while sending the request.")

    async def receive_head(self, read_timeout: float | None) -> httpx.Response:
        """Wait for the status line and the headers. Raises Stale when the peer closed or
        reset the connection before sending a byte."""
        while not self._head_done:
            if self._error is not None:
                raise self._error
            if self._eof:
                error: httpx.TransportError
                if isinstance(self._lost, OSError):
                    error = httpx.ReadError(describe(self._lost))
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
                raise Stale(error)
            await self._wait(read_timeout)
        reason = self._reason
        return httpx.Response(
            self._status,
            headers=self._headers,
            stream=Body(self, read_timeout),
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
                    raise httpx.ReadError(describe(self._lost))
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
        timer = None if limit_s is None else self._loop.call_later(limit_s, expire, waiter)
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


def _readable(transport: asyncio.Transport) -> bool:
    """Whether the socket under an idle connection has something to read, polled without
    waiting: the event loop delivers it only on its next turn, a request written meanwhile
    would go to a connection the server already closed (and might have to be refused as
    possibly delivered). The check urllib3 and httpcore make before reusing a connection."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
