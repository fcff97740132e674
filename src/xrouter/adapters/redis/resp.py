"""A lean Redis client for the hot path: pipelined RESP connections on asyncio protocols.

redis-py's asyncio client costs about 190 us of CPU per command on loopback (packing, a
connection pool get and release, StreamWriter, timeouts, its observability hooks); Redis itself
spends about 40 us on a response store save. Here a command is one `hiredis.pack_command`, one
`transport.write` and one future: replies are parsed by `hiredis.Reader` in `data_received`
and handed to the callers in the order the commands were written (a FIFO of futures), so any
number of concurrent callers share one connection without waiting for each other (pipelining).

- Errors: an error reply raises redis-py's exception class for it (NOSCRIPT: NoScriptError,
  OOM: OutOfMemoryError, NOAUTH/WRONGPASS: AuthenticationError, else ResponseError; redis-py's
  own table), so SharedRedis classifies both clients' errors alike. A lost connection fails
  every caller waiting on it with redis.exceptions.ConnectionError; the next call reconnects.
- Cancellation: a caller cancelled while waiting (its timeout) leaves its future in the FIFO;
  its reply is read and dropped, so the replies behind it still reach their own callers.
- Timeouts: a connect (TCP or TLS or unix, then AUTH and SELECT) is bounded by
  `connect_timeout_s`; a command's wait is bounded by its caller (SharedRedis.run_lean), which
  drops the lane's connection when it times out (`Lane.drop`): the replies queued on a hung
  Redis are never awaited forever, and the next call connects again.
- Lanes: a client may hold several connections, used round robin (SharedRedis measured one
  as fast or faster: LEAN_CONNECTIONS).
- Writes are not flow-controlled: every command is bounded by the caller's timeout and the
  store's record cap, and a timeout drops the connection with its write buffer.

Cluster mode is not handled here (slot routing): SharedRedis keeps redis-py's cluster client.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

Arg = bytes | str | int | float
"""What a command's arguments may be (hiredis.pack_command encodes str as UTF-8)."""

_pack: Final = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)
"""hiredis's RESP encoder (C), typed as it behaves (its stub says a 1-tuple)."""

_parse_error: Final = cast(Callable[[str], ResponseError], BaseParser.parse_error)
"""redis-py's table of error replies (untyped there)."""

_MORE: Final = object()
"""hiredis.Reader's answer when the buffer holds no complete reply yet."""

_URL_OPTIONS: Final = frozenset({"host", "port", "db", "username", "password", "path"})
"""What the lean client understands of a URL; anything else (query options such as
`ssl_cert_reqs`) leaves the process on redis-py, which honours them."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect: TCP `host`:`port` (TLS when `tls`), or the unix socket `path`."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    tls: bool = False
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0

    def __repr__(self) -> str:
        where = self.path if self.path is not None else f"{self.host}:{self.port}"
        secret = ", password=***" if self.password is not None else ""
        return f"Endpoint({where!r}, tls={self.tls}, db={self.db}{secret})"


def endpoint_from_url(url: str, ca_file: str | None = None) -> Endpoint | None:
    """The endpoint of a `redis://`, `rediss://` or `unix://` URL (user and password
    URL-decoded, as redis-py does), or None when the URL carries options only redis-py
    understands."""
    options = cast(dict[str, Any], parse_url(url))
    options.pop("connection_class", None)
    if not options.keys() <= _URL_OPTIONS:
        return None
    return Endpoint(
        host=options.get("host", "localhost"),
        port=int(options.get("port", 6379)),
        path=options.get("path"),
        tls=url.startswith("rediss://"),
        ca_file=ca_file,
        username=options.get("username"),
        password=options.get("password"),
        db=int(options.get("db", 0)),
    )


def _error(reply: ResponseError) -> ResponseError:
    """redis-py's exception for an error reply (its own table: NOSCRIPT, OOM, NOAUTH...)."""
    message = str(reply.args[0]) if reply.args else ""
    return _parse_error(message)


class _Connection(asyncio.Protocol):
    """One RESP connection: writes commands, parses replies, resolves callers in order."""

    __slots__ = ("_loop", "_pending", "_reader", "_transport", "closed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader = hiredis.Reader(replyError=ResponseError, notEnoughData=_MORE)
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Write one packed command; the future gets its reply (or its error)."""
        if self.closed or self._transport is None:
            raise RedisConnectionError("The Redis connection is closed.")
        waiter = self._loop.create_future()
        self._pending.append(waiter)
        self._transport.write(packed)
        return waiter

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(f"malformed reply ({exc})")
                return
            if reply is _MORE:
                return
            if not pending:
                self.abort("a reply nobody asked for")
                return
            waiter = pending.popleft()
            if waiter.done():  # its caller was cancelled: the reply is dropped
                continue
            if type(reply) is ResponseError:
                waiter.set_exception(_error(reply))
            else:
                waiter.set_result(reply)

    def eof_received(self) -> bool | None:
        return False  # close the transport: connection_lost fails the waiting callers

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all(f"connection lost ({exc or 'closed by Redis'})")

    def abort(self, reason: str) -> None:
        """Close at once (no more writes, nothing more read) and fail every waiting caller."""
        self.closed = True
        transport = self._transport
        if transport is not None:
            transport.abort()
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        pending = self._pending
        while pending:
            waiter = pending.popleft()
            if not waiter.done():
                waiter.set_exception(RedisConnectionError(f"Redis: {reason}."))


def _tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """Verify the server against `ca_file`, else the system's CAs (hostname checked, as
    redis-py does by default)."""
    return ssl.create_default_context(cafile=endpoint.ca_file)


async def _open(endpoint: Endpoint, timeout_s: float) -> _Connection:
    """A connection ready for commands (logged in, database selected) within `timeout_s`."""
    loop = asyncio.get_running_loop()

    def factory() -> _Connection:
        return _Connection(loop)

    async with asyncio.timeout(timeout_s):
        if endpoint.path is not None:
            _, connection = await loop.create_unix_connection(factory, endpoint.path)
        else:
            context = _tls_context(endpoint) if endpoint.tls else None
            _, connection = await loop.create_connection(
                factory,
                endpoint.host,
                endpoint.port,
                ssl=context,
                server_hostname=endpoint.host if context is not None else None,
            )
        try:
            if endpoint.password is not None:
                login: tuple[Arg, ...] = ("AUTH", endpoint.password)
                if endpoint.username is not None:
                    login = ("AUTH", endpoint.username, endpoint.password)
                await connection.send(_pack(login))
            if endpoint.db:
                await connection.send(_pack(("SELECT", endpoint.db)))
        except BaseException:
            connection.abort("connect failed")
            raise
    return connection


class Lane:
    """One connection slot of a RespClient: its live connection, connected again on the
    first call after it was lost (one connect shared by every caller that finds it down)."""

    __slots__ = ("_closed", "_connecting", "_connection", "_endpoint", "_timeout_s")

    def __init__(self, endpoint: Endpoint, connect_timeout_s: float) -> None:
        self._endpoint = endpoint
        self._timeout_s = connect_timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (bytes, int, None or a list of them)."""
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connected()
        return await connection.send(_pack(args))

    def drop(self) -> None:
        """Abort the current connection (its caller timed out: Redis may hang); its waiting
        callers fail, the next call connects again."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort("connection dropped after a timeout")

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort("client closed")

    async def _connected(self) -> _Connection:
        if self._closed:
            raise RedisConnectionError("The Redis client is closed.")
        task = self._connecting
        if task is None:
            task = asyncio.get_running_loop().create_task(self._connect())
            task.add_done_callback(_retrieve)
            self._connecting = task
        # A caller's timeout must not cancel a connect other callers wait for; the connect
        # has its own timeout.
        return await asyncio.shield(task)

    async def _connect(self) -> _Connection:
        try:
            connection = await _open(self._endpoint, self._timeout_s)
            if self._closed:
                connection.abort("client closed")
                raise RedisConnectionError("The Redis client is closed.")
            self._connection = connection
            return connection
        finally:
            self._connecting = None


def _retrieve(task: asyncio.Task[_Connection]) -> None:
    """Mark a connect's failure as seen: every caller may have given up waiting for it."""
    if not task.cancelled():
        task.exception()


class RespClient:
    """A few lanes (connections) used round robin."""

    __slots__ = ("_lanes", "_next", "endpoint")

    def __init__(self, endpoint: Endpoint, *, connections: int, connect_timeout_s: float) -> None:
        if connections < 1:
            raise ValueError("a RespClient needs at least one connection")
        self.endpoint = endpoint
        self._lanes = [Lane(endpoint, connect_timeout_s) for _ in range(connections)]
        self._next = itertools.cycle(self._lanes).__next__

    def __repr__(self) -> str:
        return f"RespClient({self.endpoint!r}, connections={len(self._lanes)})"

    def lane(self) -> Lane:
        """The next lane in turn."""
        return self._next()

    async def execute(self, *args: Arg) -> Any:
        """One command on the next lane (no timeout of its own: the caller bounds it)."""
        return await self._next().execute(*args)

    async def aclose(self) -> None:
        for lane in self._lanes:
            await lane.aclose()


class Script:
    """A Lua script run by EVALSHA; its SHA1 is computed here. A NOSCRIPT answer (Redis
    restarted, or SCRIPT FLUSH) loads it (SCRIPT LOAD) and runs it again, once."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, lane: Lane, keys: Sequence[Arg], args: Sequence[Arg] = ()) -> Any:
        try:
            return await lane.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await lane.execute("SCRIPT", "LOAD", self.source)
            return await lane.execute("EVALSHA", self.sha, len(keys), *keys, *args)
