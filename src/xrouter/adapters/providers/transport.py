"""Shared HTTP transport for every upstream provider.

One pooled `httpx.AsyncClient` per upstream, created at startup and closed at shutdown;
retries with exponential backoff and full jitter (connect errors, 408, 409, 429, 5xx;
`Retry-After` and `retry-after-ms` honoured) but never once a stream's first byte was
received; a per-provider in-flight limit (`inflight.py`: over it a generation call waits in
arrival order up to `queue_timeout_s`, then gets `Overloaded`, 429 with Retry-After; open
streams count until they end; shared across workers when the limiter is Redis's; model
discovery never waits and never takes a shared lease); upstream errors mapped to canonical
errors with the upstream status and message kept and secrets never shown.

Timeouts, one policy enforced here and nowhere else (`transport_failures.py` names each):
connect, write and pool are the connection layer's; the first byte (the response head) and
the silence between bytes of a body are both bounded: the connection's read timeout is set to
the larger of the two, and the transport times the smaller itself; a non-stream call also has
a total deadline. Streams have no total deadline here (the engine bounds a generation).

Answers are bounded too (`body_limits.py`): a non-stream body, one server-sent event, and
what a compressed answer inflates to, each checked before the bytes over it are kept
(`response_body.py`, `decoding.py`, `sse_reader.py`); over a limit the call fails with a 502
naming the setting and the connection is dropped, never returned to the pool half-read.
Non-stream calls ask for `gzip, deflate` (LLM JSON shrinks 5-10x, and decoding is bounded);
streams ask for `identity`, because a compressing server or proxy may hold events back to fill
its buffer, and latency matters more than bandwidth there. A stream that does come
compressed is decoded all the same; any other encoding is refused.

Protocol modules build the body and the headers (auth, traceparent) and read the events; this
module only moves bytes. It never logs or reports a header: not a key, not a value.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx
import msgspec

from xrouter.adapters.providers.body_limits import (
    ERROR_BODY_LIMIT,
    LimitExceeded,
    head_too_large,
)
from xrouter.adapters.providers.decoding import ACCEPTED_ENCODINGS
from xrouter.adapters.providers.deployments import Deployment, DeploymentSelector
from xrouter.adapters.providers.http1 import (
    Http1Transport,
    ResponseHeadTooLarge,
    environment_proxy_mounts,
)
from xrouter.adapters.providers.http1.direct import DirectSend
from xrouter.adapters.providers.http1.proxies import environment_proxies
from xrouter.adapters.providers.inflight import InflightLimiter, LocalInflight
from xrouter.adapters.providers.response_body import BodyReader, read_prefix
from xrouter.adapters.providers.sse_reader import SSEEvent, SSEParser
from xrouter.adapters.providers.tls import client_ssl_context
from xrouter.adapters.providers.transport_failures import (
    STREAM_CLOSED_EARLY,
    TransportFailures,
    proxy_for,
)
from xrouter.adapters.providers.transport_settings import TransportSettings
from xrouter.adapters.providers.upstream_errors import (
    map_stream_error,
    map_upstream_error,
    parse_retry_after,
)
from xrouter.adapters.providers.upstream_spans import (
    PEEKED_EVENTS,
    AttemptSpan,
    AttemptSpans,
    StreamModel,
    end_attempt,
)
from xrouter.domain.errors import GatewayError, ProviderError

__all__ = [
    "STREAM_CLOSED_EARLY",
    "HttpTransport",
    "SSEEvent",
    "TransportSettings",
    "UpstreamReply",
    "pooled_client",
]

log = logging.getLogger("xrouter.transport")

RETRYABLE_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
DRAIN_AFTER_DONE_S = 0.1
"""How long the end of a body after `[DONE]` may take to arrive before the connection is
dropped instead of reused."""
_JSON_TYPES = ("application/json",)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A successful (2xx) non-stream answer; `content` is the decoded body."""

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


@dataclass(slots=True)
class _Call:
    """One call's memory across its attempts: the deployment whose attempt failed last, which
    the next attempt avoids even when no cooldown keeps it out (`cooldown_s = 0`)."""

    failed: int | None = None
    status: int | None = None
    """The status of the current attempt's answer when the deployment path read it (a 429 or
    5xx that cooled the deployment down), for the attempt's span."""


@dataclass(frozen=True, slots=True)
class _Target:
    """The deployment one attempt goes to, and the failures that name its host and proxy."""

    index: int
    deployment: Deployment
    failures: TransportFailures


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
        limiter: InflightLimiter | None = None,
    ) -> None:
        """`client` replaces the pooled client built from `settings`; its owner closes it.
        `limiter` enforces `max_inflight` (default: this process's own, `LocalInflight`);
        the transport closes it."""
        self._provider = provider
        self._settings = settings
        self._sleep = sleep
        self._jitter = jitter
        self._limiter: InflightLimiter = limiter or LocalInflight(provider, settings)
        self._owns_client = client is None
        self._timeout = call_timeout(settings)
        # The client built here sends through DirectSend (httpx's client work per request
        # costs more than the connection's); a client given from outside goes through httpx.
        self._direct: DirectSend | None = None
        if client is None:
            tls = _tls(provider, settings)
            lean = lean_transport(settings, tls)
            client = pooled_client(settings, tls=tls, transport=lean)
            if not settings.trust_env or DirectSend.usable(environment_proxies()):
                self._direct = DirectSend(client, lean, self._timeout)
        self._client = client
        self._failures = TransportFailures(
            provider, settings, proxy_for(settings.base_url, trust_env=settings.trust_env)
        )
        self._spans = AttemptSpans(provider, settings.base_url)
        # Several deployments: each attempt picks one (`deployments.py`); None keeps the
        # single-URL path as it was.
        self._deployments = (
            DeploymentSelector(
                settings.deployments, strategy=settings.strategy, cooldown_s=settings.cooldown_s
            )
            if settings.deployments
            else None
        )
        # Each deployment's messages name its own host and the proxy its URL goes through
        # (the client's proxy mounts already route each request by its own URL).
        self._deployment_failures = tuple(
            TransportFailures(
                provider,
                replace(settings, base_url=d.base_url),
                proxy_for(d.base_url, trust_env=settings.trust_env),
            )
            for d in settings.deployments
        )
        # The connection's read timeout is the larger of the first-byte and idle timeouts;
        # the transport times the smaller one itself (none when they are equal).
        read = self._timeout.read
        first_byte, idle = settings.first_byte_timeout_s, settings.read_timeout_s
        self._head_timer_s = first_byte if read is not None and first_byte < read else None
        self._idle_timer_s = idle if read is not None and idle < read else None

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def settings(self) -> TransportSettings:
        return self._settings

    @property
    def inflight(self) -> int:
        """Calls of this process running now, open streams included."""
        return self._limiter.inflight

    @property
    def limiter(self) -> InflightLimiter:
        return self._limiter

    async def aclose(self) -> None:
        """Close the limiter and the pooled client (when this transport built it)."""
        await self._limiter.aclose()
        if self._owns_client:
            await self._client.aclose()

    async def post_json(
        self, path: str, body: bytes, headers: Mapping[str, str], *, byok: bool = False
    ) -> UpstreamReply:
        """POST `body` (JSON) to `path` and return the 2xx answer.

        Raises the mapped GatewayError for a non-2xx answer (after retries), ProviderTimeout
        when a timeout ran out (`phase` says which), ProviderError for a body over a size
        limit, Overloaded when `max_inflight` calls stayed running for `queue_timeout_s`.
        """
        request_headers = self._headers(headers, "application/json", has_body=True)
        lease = await self._limiter.acquire()
        try:
            return await self._call("POST", path, body, request_headers, byok)
        finally:
            self._limiter.release(lease)

    async def get_json(self, path: str, headers: Mapping[str, str], *, byok: bool = False) -> Any:
        """GET `path` and return its decoded JSON body (model discovery), with retries.
        Counts against this process's in-flight limit but never waits for a slot (Overloaded
        at once) and never takes a shared one."""
        lease = self._limiter.acquire_now()
        try:
            reply = await self._call(
                "GET", path, None, self._headers(headers, "application/json", has_body=False), byok
            )
        finally:
            self._limiter.release(lease)
        try:
            return reply.json()
        except msgspec.DecodeError:
            raise ProviderError(
                f"{self._provider} answered GET {_path_only(path)} with a body that is not JSON."
            ) from None

    def stream_events(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        byok: bool = False,
        require_done: bool = True,
    ) -> AsyncGenerator[list[SSEEvent], None]:
        """POST `body` to `path` and yield the server-sent events of the answer, `[DONE]` ending
        the iteration (it is not yielded). Each yielded list holds the events one read of the
        body completed, in order, never empty: one async step per read, not per event (a fast
        upstream sends hundreds of events per read; issue 16).

        `require_done`: a body that ends cleanly without `data: [DONE]` is a ProviderError
        (the upstream stopped before it finished); False for upstreams that never send it
        (the Responses protocol ends with its own terminal event).

        Retries happen only before the answer starts; once the first byte of a 2xx arrived,
        a failure is final: ProviderTimeout when the upstream is silent for `read_timeout_s`,
        ProviderError when it drops the connection or sends an event over `max_event_bytes`.
        A 2xx that is not an event stream fails before the first event. The in-flight slot is
        held until the iteration ends or the iterator is closed, so close it
        (`contextlib.aclosing`) when you stop early. The slot is taken when the iteration
        starts, before connecting: over the limit the first step waits up to
        `queue_timeout_s`, then raises Overloaded.
        """
        request_headers = self._headers(headers, "text/event-stream", has_body=True)
        return self._stream(path, body, request_headers, byok, require_done)

    # -- internals -----------------------------------------------------------------------

    def _headers(
        self, headers: Mapping[str, str], accept: str, *, has_body: bool
    ) -> dict[str, str]:
        streaming = accept == "text/event-stream"
        merged = {
            "accept": accept,
            "accept-encoding": "identity" if streaming else ACCEPTED_ENCODINGS,
        }
        if has_body:
            merged["content-type"] = "application/json"
        for source in (self._settings.headers, headers):
            for key, value in source.items():
                merged[key.lower()] = value
        return merged

    async def _call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        byok: bool,
    ) -> UpstreamReply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.total_timeout_s
        call = _Call()
        try:
            async with asyncio.timeout_at(deadline):
                return await self._with_retries(
                    lambda: self._buffered(method, path, body, headers, byok, call),
                    deadline=deadline,
                )
        except TimeoutError:
            raise self._failures.timeout("total") from None

    async def _buffered(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        byok: bool,
        call: _Call,
    ) -> UpstreamReply:
        target = self._aim(call)
        span = self._spans.start(method, path, headers, _where(target))
        status = None
        try:
            response = await self._send(target, call, method, path, body, headers, byok)
            status = response.status_code
            try:
                if not response.is_success:
                    raise self._status_failure(response, await self._error_body(response), byok)
                reader = BodyReader(
                    response,
                    self._failures,
                    max_decoded_bytes=self._settings.max_decompressed_bytes,
                    idle_timeout_s=self._idle_timer_s,
                    max_raw_bytes=self._settings.max_body_bytes,
                )
                content = await reader.read_all()
                reply = UpstreamReply(response.status_code, response.headers, content)
            finally:
                await response.aclose()
        except BaseException as exc:
            end_attempt(
                span,
                status if status is not None else call.status,
                exc.error if isinstance(exc, _Retry) else exc,
            )
            raise
        end_attempt(span, status, None, answer=reply.content if method == "POST" else None)
        return reply

    async def _stream(
        self, path: str, body: bytes, headers: dict[str, str], byok: bool, require_done: bool
    ) -> AsyncGenerator[list[SSEEvent], None]:
        lease = await self._limiter.acquire()
        try:
            call = _Call()
            response, span = await self._with_retries(
                lambda: self._open_stream(path, body, headers, byok, call), deadline=None
            )
            failure: BaseException | None = None
            named = StreamModel(span)  # the answering model, for the attempt's span
            try:
                await self._check_event_stream(response)
                reader = BodyReader(
                    response,
                    self._failures,
                    max_decoded_bytes=self._settings.max_decompressed_bytes,
                    idle_timeout_s=self._idle_timer_s,
                )
                parser = SSEParser(self._settings.max_event_bytes)
                while True:
                    piece = await reader.next()
                    try:
                        events = parser.feed(piece) if piece is not None else parser.close()
                    except LimitExceeded as exc:
                        raise self._failures.too_large(exc) from None
                    # One pass at C speed for `[DONE]`; the model is watched for in the
                    # first few events only (StreamModel's own limit): no Python step per event.
                    datas = [event.data for event in events]
                    cut = datas.index("[DONE]") if "[DONE]" in datas else len(datas)
                    for data in datas[: min(cut, PEEKED_EVENTS)]:
                        named.see(data)
                    if cut:
                        yield events if cut == len(events) else events[:cut]
                    if cut < len(events):
                        await reader.drain(ERROR_BODY_LIMIT, DRAIN_AFTER_DONE_S)
                        return
                    if piece is None:
                        if require_done:
                            raise self._failures.no_done()
                        return
            except BaseException as exc:
                failure = exc
                raise
            finally:
                end_attempt(span, response.status_code, failure, model=named.model)
                await response.aclose()
        finally:
            self._limiter.release(lease)

    async def _check_event_stream(self, response: httpx.Response) -> None:
        """A 2xx to a streaming request must be an event stream: JSON may carry an error,
        anything else (an HTML page, an empty body) fails before the first event."""
        content_type = response.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        if media == "text/event-stream":
            return
        if media in _JSON_TYPES or media.endswith("+json"):
            raise await self._json_instead_of_stream(response)
        length = response.headers.get("content-length")
        if length is not None and length.strip().isdigit():
            size = f"{int(length)} bytes" if int(length) else "an empty body"
        else:
            prefix = await self._error_body(response)
            size = (
                f"more than {ERROR_BODY_LIMIT} bytes"
                if len(prefix) >= ERROR_BODY_LIMIT
                else (f"{len(prefix)} bytes" if prefix else "an empty body")
            )
        raise self._failures.not_a_stream(response.status_code, media, size)

    async def _open_stream(
        self, path: str, body: bytes, headers: dict[str, str], byok: bool, call: _Call
    ) -> tuple[httpx.Response, AttemptSpan]:
        """The response head of one attempt, with the attempt's span (ended by the caller
        once the stream ends; here when the attempt fails)."""
        target = self._aim(call)
        span = self._spans.start("POST", path, headers, _where(target))
        status = None
        try:
            response = await self._send(target, call, "POST", path, body, headers, byok)
            status = response.status_code
            if response.is_success:
                return response, span
            try:
                content = await self._error_body(response)
            finally:
                await response.aclose()
            raise self._status_failure(response, content, byok)
        except BaseException as exc:
            end_attempt(
                span,
                status if status is not None else call.status,
                exc.error if isinstance(exc, _Retry) else exc,
            )
            raise

    def _aim(self, call: _Call) -> _Target | None:
        """Where the next attempt of `call` goes: None for a provider without deployments,
        else the deployment the selector picks, not the one that just failed when another is
        up. With all cooling down, the last error is raised at once (no attempt is made)."""
        call.status = None
        selector = self._deployments
        if selector is None:
            return None
        index = selector.pick(avoid=call.failed)
        if index is None:
            last = selector.last_error
            if last is None:  # unreachable: only a failure cools a deployment down
                raise ProviderError(f"Every deployment of {self._provider} is cooling down.")
            raise copy.copy(last).with_traceback(None)
        return _Target(index, selector.deployments[index], self._deployment_failures[index])

    async def _send(
        self,
        target: _Target | None,
        call: _Call,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        byok: bool,
    ) -> httpx.Response:
        """Send the request (to `target` when the provider has deployments) and wait for the
        status line and headers."""
        if target is not None:
            assert self._deployments is not None  # a target comes from the selector
            return await self._send_deployed(
                self._deployments, target, call, method, path, body, headers, byok
            )
        return await self._send_request(self._build(method, path, body, headers), self._failures)

    async def _send_deployed(
        self,
        selector: DeploymentSelector,
        target: _Target,
        call: _Call,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        byok: bool,
    ) -> httpx.Response:
        """`_send` to the deployment `target`. A connect error, 429 or 5xx cools it down and
        makes `call`'s next attempt avoid it. The deployment counts the call in flight until
        the response is closed."""
        index, deployment = target.index, target.deployment
        if deployment.api_key and not byok:
            scheme = headers.get("authorization", "Bearer ").split(" ", 1)[0] or "Bearer"
            headers = {**headers, "authorization": f"{scheme} {deployment.api_key}"}
        request = self._build(method, deployment.base_url.rstrip("/") + path, body, headers)
        selector.started(index)
        began = time.monotonic()
        try:
            response = await self._send_request(request, target.failures)
            status = response.status_code
            if status == 429 or status >= 500:
                call.status = status
                try:
                    content = await self._error_body(response)
                finally:
                    await response.aclose()
                raise self._status_failure(response, content, byok)
        except BaseException as exc:
            selector.ended(index)
            if isinstance(exc, _Retry | GatewayError):
                selector.failed(index, exc.error if isinstance(exc, _Retry) else exc)
                call.failed = index
            raise
        selector.succeeded(index, time.monotonic() - began)
        response.stream = _CountedStream(response.stream, lambda: selector.ended(index))
        return response

    def _build(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> httpx.Request:
        if self._direct is not None:
            return self._direct.build(method, url, body, headers)
        return self._client.build_request(
            method, url, content=body, headers=headers, timeout=self._timeout
        )

    async def _dispatch(self, request: httpx.Request) -> httpx.Response:
        if self._direct is not None:
            return await self._direct.send(request)
        return await self._client.send(request, stream=True)

    async def _send_request(
        self, request: httpx.Request, failures: TransportFailures
    ) -> httpx.Response:
        """Send `request` and wait for its head; `failures` names the host it went to."""
        try:
            if self._head_timer_s is None:
                return await self._dispatch(request)
            try:
                async with asyncio.timeout(self._head_timer_s):
                    return await self._dispatch(request)
            except TimeoutError:
                raise failures.timeout("first_byte") from None
        except httpx.ConnectTimeout:
            raise _Retry(failures.timeout("connect"), None, "connect timeout") from None
        except httpx.ProxyError as exc:
            raise failures.proxy_failed(exc) from None
        except httpx.ConnectError as exc:
            raise _Retry(failures.connect_failed(exc), None, "connect error") from None
        except httpx.PoolTimeout:
            raise failures.timeout("pool") from None
        except httpx.WriteTimeout:
            raise failures.timeout("write") from None
        except httpx.TimeoutException:  # ReadTimeout: waiting for the head
            raise failures.timeout("first_byte") from None
        except ResponseHeadTooLarge as exc:
            raise failures.too_large(head_too_large(exc.limit)) from None
        except httpx.TransportError as exc:
            raise failures.hung_up(exc) from None

    async def _with_retries(
        self, attempt_once: Callable[[], Awaitable[T]], *, deadline: float | None
    ) -> T:
        settings = self._settings
        attempt = 0
        while True:
            try:
                return await attempt_once()
            except _Retry as retry:
                if attempt >= settings.max_retries or (
                    self._deployments is not None and not self._deployments.any_up()
                ):
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
        error = map_upstream_error(
            self._provider,
            status,
            content,
            response.headers,
            byok=byok,
            setting_names=self._settings.setting_names,
        )
        should_retry = response.headers.get("x-should-retry", "").strip().lower()
        retryable = (
            status in RETRYABLE_STATUSES
            if should_retry not in ("true", "false")
            else (should_retry == "true")
        )
        if not retryable:
            return error
        return _Retry(error, parse_retry_after(response.headers), f"status {status}")

    async def _error_body(self, response: httpx.Response) -> bytes:
        """Up to ERROR_BODY_LIMIT bytes of a body that only informs a message."""
        return await read_prefix(response, self._failures, ERROR_BODY_LIMIT, self._idle_timer_s)

    async def _json_instead_of_stream(self, response: httpx.Response) -> GatewayError:
        content = await self._error_body(response)
        try:
            decoded = msgspec.json.decode(content)
        except msgspec.DecodeError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
            return map_stream_error(
                self._provider, decoded["error"], setting_names=self._settings.setting_names
            )
        return ProviderError(
            f"{self._provider} answered a streaming request with JSON instead of an event stream."
        )


class _CountedStream(httpx.AsyncByteStream):
    """A deployment's response body that tells the selector when it is closed, so a stream
    counts in flight until it ends."""

    def __init__(self, inner: Any, on_close: Callable[[], None]) -> None:
        self._inner = inner
        self._on_close: Callable[[], None] | None = on_close

    async def __aiter__(self) -> AsyncGenerator[bytes, None]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


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


def _limits(settings: TransportSettings) -> httpx.Limits:
    return httpx.Limits(
        max_connections=settings.max_inflight,
        max_keepalive_connections=settings.max_inflight,
    )


def lean_transport(settings: TransportSettings, tls: ssl.SSLContext | bool) -> Http1Transport:
    """The lean HTTP/1.1 transport (`http1/`) an upstream's client sends through."""
    return Http1Transport(
        ssl_context=_ssl_context(tls, settings),
        limits=_limits(settings),
        max_response_head_bytes=settings.max_head_bytes,
    )


def pooled_client(
    settings: TransportSettings,
    *,
    tls: ssl.SSLContext | bool,
    auth: httpx.Auth | None = None,
    transport: Http1Transport | None = None,
) -> httpx.AsyncClient:
    """An upstream's client: httpx's API on the lean HTTP/1.1 transport (`transport`, else a
    new `lean_transport`), sized and timed from `settings`; `tls` is a context or the verify
    flag; `auth` an httpx auth flow (GigaChat's token refresh)."""
    limits = _limits(settings)
    return httpx.AsyncClient(
        base_url=settings.base_url,
        auth=auth,
        transport=transport or lean_transport(settings, tls),
        mounts=environment_proxy_mounts(verify=tls, limits=limits) if settings.trust_env else None,
        timeout=call_timeout(settings),
        http2=False,
        follow_redirects=False,
        trust_env=settings.trust_env,
    )


def call_timeout(settings: TransportSettings) -> httpx.Timeout:
    """The connection layer's timeouts for one call. Its read timeout bounds both the wait
    for the head and the silences of a body, so it is the larger of the first-byte and idle
    timeouts; HttpTransport enforces the smaller one itself."""
    return httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=max(settings.first_byte_timeout_s, settings.read_timeout_s),
        write=settings.write_timeout_s,
        pool=settings.pool_timeout_s,
    )


def _ssl_context(tls: ssl.SSLContext | bool, settings: TransportSettings) -> ssl.SSLContext | None:
    """`_tls`'s answer as the SSL context Http1Transport uses for https; None (plain http, or
    the default trust store from the environment) lets it build the default context on first
    use. Any https deployment counts, not only the first, which stands for the provider."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    urls = (settings.base_url, *(d.base_url for d in settings.deployments))
    if not any(url.lower().startswith("https:") for url in urls):
        return None
    if tls is False:
        return client_ssl_context(verify=False)
    return client_ssl_context(verify=True, trust_env=settings.trust_env)


def _where(target: _Target | None) -> str | None:
    """The base URL an attempt goes to when it is a deployment's (None: the provider's)."""
    return target.deployment.base_url if target is not None else None


def _path_only(path: str) -> str:
    return path.split("?", 1)[0]
