"""`OPTIONS` answers with every method of the path in `Allow`.

Litestar builds the OPTIONS handler of a path with the route first registered there, and keeps
it when later handlers join the path: `OPTIONS /v1/responses/{id}` said `GET, OPTIONS`,
leaving out DELETE (the 405 answers, computed from the whole route, were right). This
middleware writes `Allow` from the route the request was routed to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send


def allowed_methods(routes: Iterable[Any], path_template: str) -> list[str]:
    """The methods of the HTTP route at `path_template` (Litestar's `path_format`), sorted."""
    methods: set[str] = set()
    for route in routes:
        if getattr(route, "path_format", None) == path_template:
            methods.update(getattr(route, "methods", ()))
    return sorted(methods)


def options_allow_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "OPTIONS":
            await app(scope, receive, send)
            return
        raw: Mapping[str, Any] = scope
        methods = allowed_methods(raw["litestar_app"].routes, raw.get("path_template", ""))
        if not methods:
            await app(scope, receive, send)
            return
        allow = ", ".join(methods).encode()

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"allow"]
                message["headers"] = [*headers, (b"allow", allow)]
            await send(message)

        await app(scope, receive, send_with_allow)

    return middleware
