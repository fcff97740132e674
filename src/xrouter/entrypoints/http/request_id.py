"""`x-request-id` on every response, the access line, and the request's telemetry. An inbound
id is honoured when it is sane, otherwise a fresh one is made. The id also goes into the
context (`CURRENT_REQUEST`), so every log line of the request, the generation task's included,
can carry it (the JSON log format does) and the engine can note the model, provider and tokens
for the access line. With telemetry (http_telemetry.py) the server span starts here (an
inbound `traceparent` is its parent) and the HTTP metrics are recorded once the response has
gone out. Pure ASGI: one dict lookup, one header append, one context variable and two clock
reads when telemetry is off."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from xrouter.application.request_facts import CURRENT_REQUEST, RequestFacts
from xrouter.domain.fallbacks import fallback_header
from xrouter.entrypoints.http.access_log import LOGGER, write_access_line
from xrouter.entrypoints.http.http_telemetry import HttpTelemetry
from xrouter.entrypoints.http.rate_headers import rate_limit_headers

SCOPE_KEY = "xrouter.request_id"
_SANE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_SSE = b"text/event-stream"
FALLBACK_HEADER = b"x-xrouter-fallback"
"""Names each model given up before one served, with its status and why (docs/providers.md)."""


def request_id_of(scope: Mapping[str, Any]) -> str:
    return str(scope.get(SCOPE_KEY, "unknown"))


def request_id_middleware(
    app: ASGIApp, access_log: bool = False, telemetry: HttpTelemetry | None = None
) -> ASGIApp:
    """Wrap `app`; with `access_log` (XR_ACCESS_LOG), write one access line per request; with
    `telemetry`, trace and measure each request."""
    access = logging.getLogger(LOGGER)
    observe = telemetry if telemetry is not None and telemetry.enabled else None

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        inbound = None
        traceparent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                inbound = value
            elif name == b"traceparent":
                traceparent = value
        raw = (
            inbound
            if inbound is not None and _SANE.match(inbound)
            else (b"req_" + os.urandom(12).hex().encode())
        )
        request_id = raw.decode()
        scope[SCOPE_KEY] = request_id  # type: ignore[literal-required]
        header = (b"x-request-id", raw)
        facts = RequestFacts(request_id, route=f"{scope['method']} {scope['path']}")
        facts.hold()  # released once the response has gone out
        token = CURRENT_REQUEST.set(facts)
        span_token = observe.begin(scope, traceparent, facts) if observe is not None else None
        # [status, stream?, first body bytes at]: what the access line needs from the response.
        seen: list[Any] = [500, False, None]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                added = [header]
                if facts.rate is not None:  # a gateway key with limits
                    added.extend(rate_limit_headers(facts.rate))
                if facts.skipped_attempts:  # the models tried first, and why they were left
                    added.append(
                        (FALLBACK_HEADER, fallback_header(facts.skipped_attempts).encode())
                    )
                message["headers"] = [*headers, *added]
                seen[0] = message["status"]
                for name, value in headers:
                    if name == b"content-type":
                        seen[1] = value.startswith(_SSE)
                        break
            elif (
                seen[2] is None and message["type"] == "http.response.body" and message.get("body")
            ):
                seen[2] = time.perf_counter()
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            try:
                elapsed = time.perf_counter() - started
                if observe is not None:
                    observe.response_done(scope, seen[0], elapsed, facts)
                if access_log:
                    write_access_line(
                        access,
                        scope["method"],
                        scope["path"],
                        seen[0],
                        elapsed * 1000,
                        (seen[2] - started) * 1000 if seen[1] and seen[2] is not None else None,
                        facts,
                    )
            finally:
                CURRENT_REQUEST.reset(token)
                if span_token is not None:
                    span_token.var.reset(span_token)
                facts.release()

    return middleware
