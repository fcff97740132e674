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

Connecting: every address of the host, IPv6 and IPv4 interleaved, the next one started 250 ms
after the previous one unless it failed sooner (happy eyeballs, RFC 8305).

Stale connections and resending: a request is sent again only when it provably did not reach
the server, or when its method is idempotent; a POST that may have run upstream (and been
billed) is never sent twice. The event loop keeps reading idle sockets, so a connection the
server closed while idle (FIN or RST) is dropped from the pool when that happens, and before
a reuse the socket is polled for anything the loop has not delivered yet (as urllib3 and
httpcore do). A reused connection found closed before a byte of the request was written
(or whose first write the kernel refused) is dropped and the request goes to another
connection, whatever its method. Once the request was written, a peer that closes or resets
without a byte of answer is an error (httpx.RemoteProtocolError / httpx.ReadError) for a
non-idempotent method; an idempotent one (GET, HEAD, OPTIONS, TRACE, PUT, DELETE; RFC 9110
9.2.2) with a bytes body is sent once more on a new connection (the idle-close race). A
request whose body is a one-shot stream, a fresh connection, and timeouts are never retried.

Responses: trailer fields of a chunked body are dropped, as httpcore drops them (they never
reach `response.headers`). A response head over `max_response_head_bytes` (default 100 KiB,
httpcore's limit), or as many bytes of chunk framing or trailers without body data, is an
httpx.RemoteProtocolError (its subclass ResponseHeadTooLarge): the parser buffers a header
line whole, so this bounds memory.

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
import ssl
from collections.abc import Mapping

import httpx

from xrouter.adapters.providers.http1.connection import (
    MAX_HEAD_BYTES,
    ResponseHeadTooLarge,
    Stale,
)
from xrouter.adapters.providers.http1.pool import Pool
from xrouter.adapters.providers.http1.proxies import environment_proxies
from xrouter.adapters.providers.http1.request_head import encode_head
from xrouter.adapters.providers.tls import client_ssl_context

__all__ = ["Http1Transport", "ResponseHeadTooLarge", "environment_proxy_mounts"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""RFC 9110 9.2.2: a client may repeat these automatically when a connection fails."""


class Http1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over pooled keep-alive connections (see the module docstring).

    `ssl_context`: used for https; None builds the default verifying context on first use.
    `limits`: max_connections, max_keepalive_connections, keepalive_expiry, per origin.
    `max_response_head_bytes`: the largest response head (status line and headers) accepted.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: httpx.Limits | None = None,
        max_response_head_bytes: int = MAX_HEAD_BYTES,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_head = max_response_head_bytes
        self._limits = limits or httpx.Limits(
            max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0
        )
        self._pools: dict[tuple[bytes, bytes, int], Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("The transport is closed.")
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout") or {}
        pool = self._pool_for(request.url)
        head, body, chunked = encode_head(request)
        repeatable = body is not None and request.method in IDEMPOTENT_METHODS
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
            except Stale as stale:
                conn.abort()
                if conn.served and stale.unsent:
                    continue  # closed while idle, nothing sent: take another connection
                if conn.served and repeatable and not retried:
                    retried = True  # the idle-close race, and repeating it is harmless
                    continue
                raise stale.error from None
            except BaseException:
                conn.abort()
                raise

    def _pool_for(self, url: httpx.URL) -> Pool:
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
            pool = Pool(loop, host.decode("ascii"), port, context, self._limits, self._max_head)
            self._pools[key] = pool
        return pool

    def open_connections(self) -> int:
        """Connections open or being opened, over every origin (idle ones included)."""
        return sum(pool.open_connections for pool in self._pools.values())

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
        for pattern, proxy in environment_proxies().items()
    }
