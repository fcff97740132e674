"""A client that closes its connection in the middle of its request body.

Litestar reads a body through `receive`; when the server reports `http.disconnect` before the
body is complete, Litestar raises a generic 500 (`InternalServerException`, "client
disconnected prematurely") that the error handler logs as an internal error with a 25-line
traceback, for what is an ordinary client event. This middleware turns that moment into
`ClientDisconnected` (499: nobody is left to read it) and one INFO line.
"""

from __future__ import annotations

import logging

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from xrouter.domain.errors import ClientDisconnected
from xrouter.entrypoints.http.request_id import request_id_of

log = logging.getLogger("xrouter.http")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def abandoned_upload_middleware(app: ASGIApp) -> ASGIApp:
    """Raise ClientDisconnected when the client leaves before its body is complete."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] not in _BODY_METHODS:
            await app(scope, receive, send)
            return
        body_complete = False

        async def receive_body() -> ReceiveMessage:
            nonlocal body_complete
            message = await receive()
            if message["type"] == "http.request":
                body_complete = not message.get("more_body", False)
            elif message["type"] == "http.disconnect" and not body_complete:
                log.info(
                    "client closed the connection before its request body was complete: "
                    "%s %s (request %s)",
                    scope["method"],
                    scope["path"],
                    request_id_of(scope),
                )
                raise ClientDisconnected(
                    "The client closed the connection before sending the whole request body."
                )
            return message

        await app(scope, receive_body, send)

    return middleware
