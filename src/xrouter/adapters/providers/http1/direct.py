"""`AsyncClient.send(request, stream=True)` without httpx's per-request client work, for the one
kind of client the gateway builds for itself: no auth flow, no event hooks, no redirects
followed, no proxy in front (NO_PROXY entries only), a lean `Http1Transport` underneath.

Profiled on the relay of non-stream chat completions, httpx's client layer (merging the base
URL, which parses the URL again; merging the default headers; building urllib and email
objects so the cookie jar can look for Set-Cookie in every answer) cost more CPU than the
connection work itself. Here the merged URL of each path is kept once it was built, the
default headers are merged as a dictionary, and the cookie jar is consulted only when it has
cookies to send or the answer has some to set; what reaches the wire and what the caller gets
back are what the client would have produced.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx

from xrouter.adapters.providers.http1 import Http1Transport

__all__ = ["DirectSend"]

MAX_URLS = 64
"""Merged URLs kept (paths seen; a provider uses a handful); past it a URL is merged each time."""
_COOKIE_HEADERS = (b"set-cookie", b"set-cookie2")
_EMPTY_BODY_LENGTH = frozenset({"POST", "PUT", "PATCH"})
"""Methods httpx gives `Content-Length: 0` when they have no body."""
# httpx's own logger, so that its request line is logged as the client logs it.
_httpx_log = logging.getLogger("httpx")


class DirectSend:
    """Builds and sends requests for `client` straight to `transport` (the client's only one).

    The caller guarantees the client has no auth, event hooks or proxy mounts: use
    `DirectSend.usable` to ask. `build` falls back to `client.build_request` when the client's
    cookie jar has cookies, so they are sent as the client sends them.
    """

    __slots__ = ("_client", "_defaults", "_timeouts", "_transport", "_urls")

    def __init__(
        self, client: httpx.AsyncClient, transport: Http1Transport, timeout: httpx.Timeout
    ) -> None:
        self._client = client
        self._transport = transport
        self._timeouts = timeout.as_dict()
        # The client's headers as sent (name as spelled, value), by lower-case name.
        self._defaults = {
            name.lower().decode("ascii"): (name, value) for name, value in client.headers.raw
        }
        self._urls: dict[str, httpx.URL] = {}

    @staticmethod
    def usable(mounts: Mapping[str, object] | None) -> bool:
        """Whether a client with these `mounts=` sends every request through its transport
        (no proxy: NO_PROXY patterns mount None, the client's own transport)."""
        return not mounts or all(proxy is None for proxy in mounts.values())

    def build(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> httpx.Request:
        """The request `client.build_request(method, url, content=body, headers=headers)` would
        build, with the client's timeout; `headers` names are lower case."""
        if self._client.cookies:
            return self._client.build_request(method, url, content=body, headers=headers)
        merged = self._urls.get(url)
        if merged is None:
            merged = self._client.build_request(method, url).url
            if len(self._urls) < MAX_URLS:
                self._urls[url] = merged
        # The head httpx.Request(content=body) would prepare (Host first; the length of a
        # body last, an empty body's after Host), encoded as httpx encodes it (ASCII), built
        # in one pass instead of three Headers copies and a scan per default.
        raw = [] if "host" in headers else [(b"Host", merged.netloc)]
        sized = "content-length" in headers or "transfer-encoding" in headers
        if not sized and not body and method in _EMPTY_BODY_LENGTH:
            raw.append((b"Content-Length", b"0"))
        # Headers.update: the client's headers the caller does not set, then the caller's.
        raw += [pair for name, pair in self._defaults.items() if name not in headers]
        raw += [(name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()]
        if not sized and body:
            raw.append((b"Content-Length", b"%d" % len(body)))
        request = httpx.Request(
            method,
            merged,
            headers=raw,
            stream=httpx.ByteStream(body or b""),
            extensions={"timeout": self._timeouts},
        )
        request.read()  # a bytes body is read at once, as with content=
        return request

    async def send(self, request: httpx.Request) -> httpx.Response:
        """The response head, as `client.send(request, stream=True)` returns it."""
        try:
            response = await self._transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request  # as httpx's request_context does
            raise
        response.request = request
        if any(name.lower() in _COOKIE_HEADERS for name, _ in response.headers.raw):
            self._client.cookies.extract_cookies(response)
        if _httpx_log.isEnabledFor(logging.INFO):
            _httpx_log.info(
                'HTTP Request: %s %s "%s %d %s"',
                request.method,
                request.url,
                response.http_version,
                response.status_code,
                response.reason_phrase,
            )
        return response
