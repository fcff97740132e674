"""Shared HTTP transport for every upstream provider.

One pooled `httpx.AsyncClient` per upstream, created at startup and closed at shutdown;
connect/read/write/pool timeouts and a total deadline for non-stream calls; retries with
exponential backoff and full jitter (connect errors, 408, 409, 429, 5xx; `Retry-After` and
`retry-after-ms` honoured) but never once a stream's first byte was received; a per-provider
in-flight limit (over it: `Overloaded`, 429 with Retry-After; open streams count until they
end); upstream errors mapped to canonical errors with the upstream status and message kept and
secrets never shown.

Protocol modules build the body and the headers (auth, traceparent) and read the events; this
module only moves bytes. It never logs or reports a header: not a key, not a value.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import httpx
import msgspec

from xrouter.adapters.providers.http1 import Http1Transport, environment_proxy_mounts
from xrouter.adapters.providers.sse_reader import SSEEvent, SSEParser
from xrouter.adapters.providers.tls import client_ssl_context
from xrouter.adapters.providers.upstream_errors import (
    env_name,
    map_stream_error,
    map_upstream_error,
    parse_retry_after,
)
from xrouter.domain.errors import GatewayError, Overloaded, ProviderError, ProviderTimeout

__all__ = ["HttpTransport", "SSEEvent", "TransportSettings", "UpstreamReply"]

log = logging.getLogger("xrouter.transport")

RETRYABLE_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of an error body read before mapping it; the rest is dropped."""
DRAIN_AFTER_DONE_S = 0.1
"""How long the end of a body after `[DONE]` may take to arrive before the connection is
dropped instead of reused."""
STREAM_CLOSED_EARLY = "the upstream closed the stream before it finished"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TransportSettings:
    base_url: str
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    """Longest silence between bytes; a long stream lives while bytes flow."""
    write_timeout_s: float = 30.0
    pool_timeout_s: float = 10.0
    total_timeout_s: float = 600.0
    """Deadline for a whole non-stream call, retries and waits included."""
    max_retries: int = 2
    """Retries after the first try."""
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    max_inflight: int = 64
    headers: Mapping[str, str] = field(default_factory=dict)
    """Static headers on every call (attribution headers, for instance)."""
    verify: bool | str = True
    """TLS verification: True, or a CA bundle path. Never disabled silently."""
    cert: tuple[str, str] | None = None
    """Client certificate and key files, for mutual TLS."""
    max_retry_wait_s: float = 30.0
    """Longest wait an upstream's Retry-After may ask for; asking more ends the retries."""
    overload_retry_after_s: float = 1.0
    """Retry-After given to a caller rejected by the in-flight limit."""
    trust_env: bool = True
    """Honour HTTP(S)_PROXY / NO_PROXY and SSL_CERT_FILE / SSL_CERT_DIR from the environment."""


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A successful (2xx) non-stream answer."""

    status: int
    headers: httpx.Headers
    content: bytes

    def json(self) -> Any:
        """The body decoded as JSON (msgspec.DecodeError when it is not JSON)."""
        return msgspec.json.decode(self.content)


class _Retry(Exception):
    """Internal: the attempt failed in a way worth another try."""

    def __init__(self, error: GatewayError, hint: float | None, what: str) -> None:
        super().__init__(what)
        self.error = error
        self.hint = hint
        self.what = what


class HttpTransport:
    """Moves requests and responses between the gateway and one upstream (`provider`)."""

    def __init__(
        self,
        provider: str,
        settings: TransportSettings,
        *,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """`client` replaces the pooled client built from `settings`; its owner closes it."""
        self._provider = provider
        self._settings = settings
        self._sleep = sleep
        self._jitter = jitter
        self._inflight = 0
        self._owns_client = client is None
        self._client = client or _pooled_client(provider, settings)

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def settings(self) -> TransportSettings:
        return self._settings

    @property
    def inflight(self) -> int:
        """Calls running now, open streams included."""
        return self._inflight

    async def aclose(self) -> None:
        """Close the pooled client (when this transport built it)."""
        if self._owns_client:
            await self._client.aclose()

    async def post_json(
        self, path: str, body: bytes, headers: Mapping[str, str], *, byok: bool = False
    ) -> UpstreamReply:
        """POST `body` (JSON) to `path` and return the 2xx answer.

        Raises the mapped GatewayError for a non-2xx answer (after retries), ProviderTimeout
        past `total_timeout_s`, Overloaded when `max_inflight` calls are running.
        """
        request_headers = self._headers(headers, "application/json", has_body=True)
        return await self._call("POST", path, body, request_headers, byok)

    async def get_json(self, path: str, headers: Mapping[str, str], *, byok: bool = False) -> Any:
        """GET `path` and return its decoded JSON body (model discovery), with retries."""
        reply = await self._call(
            "GET", path, None, self._headers(headers, "application/json", has_body=False), byok
        )
        try:
            return reply.json()
        except msgspec.DecodeError:
            raise ProviderError(
                f"{self._provider} answered GET {_path_only(path)} with a body that is not JSON."
            ) from None

    def stream_events(
        self, path: str, body: bytes, headers: Mapping[str, str], *, byok: bool = False
    ) -> AsyncGenerator[SSEEvent, None]:
        """POST `body` to `path` and yield the server-sent events of the answer, `[DONE]` ending
        the iteration (it is not yielded).

        Retries happen only before the answer starts; once the first byte of a 2xx arrived,
        a failure is final: ProviderTimeout when the upstream is silent for `read_timeout_s`,
        ProviderError when it drops the connection. The in-flight slot is held until the
        iteration ends or the iterator is closed, so close it (`contextlib.aclosing`) when
        you stop early. Raises Overloaded at once when the limit is reached.
        """
        self._check_capacity()
        request_headers = self._headers(headers, "text/event-stream", has_body=True)
        return self._stream(path, body, request_headers, byok)

    # -- internals -----------------------------------------------------------------------

    def _headers(
        self, headers: Mapping[str, str], accept: str, *, has_body: bool
    ) -> dict[str, str]:
        merged = {"accept": accept}
        if has_body:
            merged["content-type"] = "application/json"
        for source in (self._settings.headers, headers):
            for key, value in source.items():
                merged[key.lower()] = value
        return merged

    def _check_capacity(self) -> None:
        if self._inflight >= self._settings.max_inflight:
            raise Overloaded(
                f"The gateway has {self._inflight} calls in flight to {self._provider}, the "
                f"configured limit ({env_name(self._provider, 'MAX_INFLIGHT')}). "
                "Retry after a short wait.",
                retry_after=self._settings.overload_retry_after_s,
            )

    def _acquire(self) -> None:
        self._check_capacity()
        self._inflight += 1

    def _release(self) -> None:
        self._inflight -= 1

    async def _call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        byok: bool,
    ) -> UpstreamReply:
        self._acquire()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._settings.total_timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._with_retries(
                        lambda: self._buffered(method, path, body, headers, byok),
                        deadline=deadline,
                    )
            except TimeoutError:
                raise ProviderTimeout(
                    f"{self._provider} did not answer within "
                    f"{self._settings.total_timeout_s:g} s (the total deadline of a call)."
                ) from None
        finally:
            self._release()

    async def _buffered(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], byok: bool
    ) -> UpstreamReply:
        response = await self._send(method, path, body, headers)
        try:
            if not response.is_success:
                content = await self._read_bounded(response)
                raise self._status_failure(response, content, byok)
            try:
                content = await response.aread()
            except httpx.TimeoutException:
                raise self._read_timeout() from None
            except httpx.TransportError as exc:
                raise self._broken(exc) from None
            return UpstreamReply(response.status_code, response.headers, content)
        finally:
            await response.aclose()

    async def _stream(
        self, path: str, body: bytes, headers: dict[str, str], byok: bool
    ) -> AsyncGenerator[SSEEvent, None]:
        self._acquire()
        try:
            response = await self._with_retries(
                lambda: self._open_stream(path, body, headers, byok), deadline=None
            )
            try:
                content_type = response.headers.get("content-type", "").lower()
                if content_type.startswith("application/json"):
                    raise await self._json_instead_of_stream(response)
                parser = SSEParser()
                async with aclosing(
                    cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
                ) as chunks:
                    while True:
                        chunk = await self._next_chunk(chunks)
                        events = parser.feed(chunk) if chunk is not None else parser.close()
                        for event in events:
                            if event.data == "[DONE]":
                                await self._finish_body(chunks)
                                return
                            yield event
                        if chunk is None:
                            return
            finally:
                await response.aclose()
        finally:
            self._release()

    async def _finish_body(self, chunks: AsyncIterator[bytes]) -> None:
        """Read the little that follows `[DONE]` (the end of the chunked body), briefly, so the
        connection goes back to the pool instead of being closed half-read."""
        try:
            async with asyncio.timeout(DRAIN_AFTER_DONE_S):
                size = 0
                async for chunk in chunks:
                    size += len(chunk)
                    if size > ERROR_BODY_LIMIT:
                        return
        except (TimeoutError, httpx.TransportError):
            return

    async def _next_chunk(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """The next chunk of a streamed body, None at its clean end; a stall or a dropped
        connection becomes the canonical error."""
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            return None
        except httpx.TimeoutException:
            raise self._read_timeout() from None
        except httpx.TransportError as exc:
            raise self._broken(exc) from None

    async def _open_stream(
        self, path: str, body: bytes, headers: dict[str, str], byok: bool
    ) -> httpx.Response:
        response = await self._send("POST", path, body, headers)
        if response.is_success:
            return response
        try:
            content = await self._read_bounded(response)
        finally:
            await response.aclose()
        raise self._status_failure(response, content, byok)

    async def _send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> httpx.Response:
        """Send the request and wait for the status line and headers."""
        request = self._client.build_request(method, path, content=body, headers=headers)
        try:
            return await self._client.send(request, stream=True)
        except httpx.ConnectTimeout:
            raise _Retry(
                ProviderTimeout(
                    f"Could not connect to {self._provider} within "
                    f"{self._settings.connect_timeout_s:g} s ({self._host()})."
                ),
                None,
                "connect timeout",
            ) from None
        except httpx.ConnectError as exc:
            raise _Retry(
                ProviderError(
                    f"Could not connect to {self._provider} ({self._host()}): {_describe(exc)}."
                ),
                None,
                "connect error",
            ) from None
        except httpx.TimeoutException:
            raise self._read_timeout() from None
        except httpx.TransportError as exc:
            raise ProviderError(
                f"{self._provider} closed the connection without answering: {_describe(exc)}."
            ) from None

    async def _with_retries(
        self, attempt_once: Callable[[], Awaitable[T]], *, deadline: float | None
    ) -> T:
        settings = self._settings
        attempt = 0
        while True:
            try:
                return await attempt_once()
            except _Retry as retry:
                if attempt >= settings.max_retries:
                    raise retry.error from None
                wait = self._backoff(attempt, retry.hint)
                if wait is None or (
                    deadline is not None and asyncio.get_running_loop().time() + wait > deadline
                ):
                    raise retry.error from None
                attempt += 1
                log.info(
                    "retrying a call to %s after %s (retry %d of %d) in %.3f s",
                    self._provider,
                    retry.what,
                    attempt,
                    settings.max_retries,
                    wait,
                )
                await self._sleep(wait)

    def _backoff(self, attempt: int, hint: float | None) -> float | None:
        """Seconds before retry number `attempt + 1`; None when the upstream asks for longer
        than `max_retry_wait_s` (the caller then gets the error and its Retry-After)."""
        if hint is not None:
            return hint if hint <= self._settings.max_retry_wait_s else None
        ceiling = min(self._settings.backoff_max_s, self._settings.backoff_initial_s * 2.0**attempt)
        return self._jitter() * ceiling

    def _status_failure(
        self, response: httpx.Response, content: bytes, byok: bool
    ) -> GatewayError | _Retry:
        status = response.status_code
        error = map_upstream_error(self._provider, status, content, response.headers, byok=byok)
        should_retry = response.headers.get("x-should-retry", "").strip().lower()
        retryable = (
            status in RETRYABLE_STATUSES
            if should_retry not in ("true", "false")
            else (should_retry == "true")
        )
        if not retryable:
            return error
        return _Retry(error, parse_retry_after(response.headers), f"status {status}")

    async def _read_bounded(self, response: httpx.Response) -> bytes:
        """Up to ERROR_BODY_LIMIT bytes of an error body; a failure to read it is no body."""
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                parts.append(chunk)
                size += len(chunk)
                if size >= ERROR_BODY_LIMIT:
                    break
        except httpx.TransportError:
            pass
        return b"".join(parts)[:ERROR_BODY_LIMIT]

    async def _json_instead_of_stream(self, response: httpx.Response) -> GatewayError:
        content = await self._read_bounded(response)
        try:
            decoded = msgspec.json.decode(content)
        except msgspec.DecodeError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
            return map_stream_error(self._provider, decoded["error"])
        return ProviderError(
            f"{self._provider} answered a streaming request with JSON instead of an event stream."
        )

    def _read_timeout(self) -> ProviderTimeout:
        return ProviderTimeout(
            f"{self._provider} sent nothing for {self._settings.read_timeout_s:g} s "
            "(the read timeout); the call was abandoned."
        )

    def _broken(self, exc: httpx.TransportError) -> ProviderError:
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return ProviderError(f"{self._provider}: {STREAM_CLOSED_EARLY}.")
        return ProviderError(f"The connection to {self._provider} failed: {_describe(exc)}.")

    def _host(self) -> str:
        url = httpx.URL(self._settings.base_url)
        return f"{url.host}:{url.port}" if url.port else url.host


def _tls(provider: str, settings: TransportSettings) -> ssl.SSLContext | bool:
    """The TLS setup for httpx: an SSL context for a CA bundle or a client certificate (httpx
    deprecates passing those as paths), else the plain flag."""
    if settings.verify is False:
        log.warning("TLS certificate verification is disabled for %s", provider)
        if settings.cert is None:
            return False
    elif settings.verify is True and settings.cert is None:
        return True
    return client_ssl_context(
        verify=settings.verify, cert=settings.cert, trust_env=settings.trust_env
    )


def _pooled_client(provider: str, settings: TransportSettings) -> httpx.AsyncClient:
    return pooled_client(settings, tls=_tls(provider, settings))


def pooled_client(
    settings: TransportSettings, *, tls: ssl.SSLContext | bool, auth: httpx.Auth | None = None
) -> httpx.AsyncClient:
    """An upstream's client: httpx's API on the lean HTTP/1.1 transport (`http1/`), sized and
    timed from `settings`; `tls` is a context or the verify flag; `auth` an httpx auth flow
    (GigaChat's token refresh)."""
    limits = httpx.Limits(
        max_connections=settings.max_inflight,
        max_keepalive_connections=settings.max_inflight,
    )
    return httpx.AsyncClient(
        base_url=settings.base_url,
        auth=auth,
        transport=Http1Transport(ssl_context=_ssl_context(tls, settings), limits=limits),
        mounts=environment_proxy_mounts(verify=tls, limits=limits) if settings.trust_env else None,
        timeout=httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.write_timeout_s,
            pool=settings.pool_timeout_s,
        ),
        http2=False,
        follow_redirects=False,
        trust_env=settings.trust_env,
    )


def _ssl_context(tls: ssl.SSLContext | bool, settings: TransportSettings) -> ssl.SSLContext | None:
    """`_tls`'s answer as the SSL context Http1Transport uses for https; None (plain http, or
    the default trust store from the environment) lets it build the default context on first
    use."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    if not settings.base_url.lower().startswith("https:"):
        return None
    if tls is False:
        return client_ssl_context(verify=False)
    return client_ssl_context(verify=True, trust_env=settings.trust_env)


def _describe(exc: Exception) -> str:
    """The exception's kind and text; httpx's texts name sockets and protocol states, never
    the request's headers."""
    text = str(exc).strip().rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _path_only(path: str) -> str:
    return path.split("?", 1)[0]
