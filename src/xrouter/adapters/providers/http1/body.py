"""A response body as httpx reads it (`aiter_raw`, `aiter_bytes`, `aclose`): parts as they
arrive; read to its end, the connection goes back to the pool; closed before, it is dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:  # the connection creates its bodies; only its type is needed here
    from xrouter.adapters.providers.http1.connection import Connection


class Body(httpx.AsyncByteStream):
    """A response body, read as it arrives; the end returns the connection to the pool."""

    __slots__ = ("_conn", "_read_timeout")

    def __init__(self, conn: Connection, read_timeout: float | None) -> None:
        self._conn: Connection | None = conn
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
