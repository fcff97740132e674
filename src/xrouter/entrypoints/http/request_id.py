"""`x-request-id` on every response: an inbound one is honoured when it is sane, otherwise a
fresh one is made. Pure ASGI, so it costs one dict lookup and one header append."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

SCOPE_KEY = "xrouter.request_id"
_SANE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_of(scope: Mapping[str, Any]) -> str:
    return str(scope.get(SCOPE_KEY, "unknown"))


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        inbound = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                inbound = value
                break
        raw = (
            inbound
            if inbound is not None and _SANE.match(inbound)
            else (b"req_" + os.urandom(12).hex().encode())
        )
        scope[SCOPE_KEY] = raw.decode()  # type: ignore[literal-required]
        header = (b"x-request-id", raw)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await app(scope, receive, send_with_id)

    return middleware
