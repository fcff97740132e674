"""Reads one upstream response's body: raw bytes off the connection, each wait bounded by the
idle timeout, decoded piece by piece within the decompression limit.

Every failure comes out as the canonical error (`TransportFailures`): a stall is the idle
timeout, a dropped connection a broken stream, a body over a limit a 502 naming the setting,
an encoding the gateway does not decode a 502 saying so. The caller closes the response
(`Response.aclose()`) when it stops early, which drops a half-read connection instead of
returning it to the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from typing import cast

import httpx

from xrouter.adapters.providers.body_limits import LimitExceeded, head_too_large
from xrouter.adapters.providers.decoding import PIECE_BYTES, BodyDecoder, UndecodableBody
from xrouter.adapters.providers.http1 import ResponseHeadTooLarge
from xrouter.adapters.providers.transport_failures import TransportFailures
from xrouter.domain.errors import GatewayError


class BodyReader:
    """The decoded pieces of one response body (`next()` until it returns None).

    `idle_timeout_s`: the longest silence between two raw chunks this reader enforces itself
    (None: the connection's own read timeout is the idle limit). `max_raw_bytes`: the most raw
    bytes read (a non-stream body; None for a stream), checked before a chunk is kept.
    """

    __slots__ = ("_chunks", "_decoder", "_failures", "_idle_s", "_max_raw", "_pending", "_raw")

    def __init__(
        self,
        response: httpx.Response,
        failures: TransportFailures,
        *,
        max_decoded_bytes: int,
        idle_timeout_s: float | None,
        max_raw_bytes: int | None = None,
    ) -> None:
        self._failures = failures
        try:
            self._decoder = BodyDecoder(response.headers.get("content-encoding"), max_decoded_bytes)
        except UndecodableBody as exc:
            raise failures.undecodable(str(exc)) from None
        self._chunks = cast("AsyncGenerator[bytes, None]", response.aiter_raw())
        self._idle_s = idle_timeout_s
        self._max_raw = max_raw_bytes
        self._raw = 0
        self._pending: Iterator[bytes] | None = None

    async def next(self) -> bytes | None:
        """The next decoded piece; None at the clean end of the body."""
        try:
            while True:
                if self._pending is not None:
                    piece = next(self._pending, None)
                    if piece is not None:
                        return piece
                    self._pending = None
                raw = await self._next_raw()
                if raw is None:
                    self._decoder.finish()
                    return None
                self._pending = self._decoder.feed(raw)
        except LimitExceeded as exc:
            raise self._failures.too_large(exc) from None
        except UndecodableBody as exc:
            raise self._failures.undecodable(str(exc)) from None

    async def read_all(self) -> bytes:
        """The whole decoded body."""
        parts: list[bytes] = []
        while (piece := await self.next()) is not None:
            parts.append(piece)
        return b"".join(parts)

    async def drain(self, limit_bytes: int, within_s: float) -> None:
        """Read the little that may follow the end of a stream (the last chunk of a chunked
        body), briefly, so the connection can go back to the pool; give up silently past
        `limit_bytes` or `within_s` (the caller then closes the response, which drops it)."""
        size = 0
        try:
            async with asyncio.timeout(within_s):
                async for chunk in self._chunks:
                    size += len(chunk)
                    if size > limit_bytes:
                        return
        except (TimeoutError, httpx.TransportError):
            return

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def _next_raw(self) -> bytes | None:
        try:
            if self._idle_s is None:
                raw = await anext(self._chunks)
            else:
                try:
                    async with asyncio.timeout(self._idle_s):
                        raw = await anext(self._chunks)
                except TimeoutError:
                    raise self._failures.timeout("idle") from None
        except StopAsyncIteration:
            return None
        except httpx.TimeoutException:
            raise self._failures.timeout("idle") from None
        except ResponseHeadTooLarge as exc:  # endless trailers, after the body
            raise self._failures.too_large(head_too_large(exc.limit)) from None
        except httpx.TransportError as exc:
            raise self._failures.broken(exc) from None
        if self._max_raw is not None:
            self._raw += len(raw)
            if self._raw > self._max_raw:
                raise self._failures.too_large(
                    LimitExceeded("a body", self._max_raw, "MAX_BODY_BYTES")
                )
        return raw


async def read_prefix(
    response: httpx.Response, failures: TransportFailures, limit_bytes: int, idle_s: float | None
) -> bytes:
    """Up to `limit_bytes` of a body that only informs a message (an error body); a failure
    to read or decode it ends the prefix there, it never fails the call."""
    parts: list[bytes] = []
    size = 0
    try:
        # Reading stops once `limit_bytes` are in; the decoder's own limit is never reached.
        reader = BodyReader(
            response, failures, max_decoded_bytes=limit_bytes + PIECE_BYTES, idle_timeout_s=idle_s
        )
        while size < limit_bytes and (piece := await reader.next()) is not None:
            parts.append(piece)
            size += len(piece)
    except GatewayError:  # a broken, stalled or undecodable error body: keep the prefix
        pass
    return b"".join(parts)[:limit_bytes]
