"""The base of the answers the API routes hand to Litestar ready to send (`JsonAnswer`,
`EventStream`; issue 16, docs/benchmarks.md "the request path").

Litestar turns a handler's `Response` into an ASGI app in `to_asgi_response`, through header
and cookie containers, merging what the route declares (response headers, cookies, a
background task). A ready answer skips `Response.__init__` (those containers are what it
avoids) and builds its ASGI app itself, unless the route declares any of those: then the
Litestar response it stands for is converted as usual, so nothing declared is lost.
"""

from __future__ import annotations

from typing import Any

from litestar import Response
from litestar.types import ASGIApp

__all__ = ["ReadyResponse"]


class ReadyResponse(Response[bytes]):
    """An answer that sends itself (`ready()`) or, with declared extras, converts as
    `as_litestar()` would."""

    __slots__ = ()

    def to_asgi_response(
        self,
        app: Any,
        request: Any,
        *,
        background: Any = None,
        cookies: Any = None,
        headers: dict[str, str] | None = None,
        **others: Any,
    ) -> Any:  # an ASGI app; Litestar's annotation names its own ASGIResponse only
        # Litestar also passes the route's media type and status code (in `others`): the
        # answer's own win, as they do in Response.to_asgi_response.
        if background or cookies or headers:
            return self.as_litestar().to_asgi_response(
                app, request, background=background, cookies=cookies, headers=headers, **others
            )
        return self.ready()

    def as_litestar(self) -> Response[Any]:
        """The Litestar response this answer stands for."""
        raise NotImplementedError

    def ready(self) -> ASGIApp:
        """The ASGI app that sends this answer."""
        raise NotImplementedError
