"""POST bodies must be declared JSON (`Content-Type: application/json`, parameters allowed).

A browser sends a cross-origin POST with `text/plain` or a form encoding without asking the
server first (no CORS preflight), so any web page could make a visitor's browser spend the
operator's credit. Every API body is JSON anyway; refusing other declared types with 415 closes
that door. Browsers may only send `application/json` cross-origin after a preflight, which
`XR_CORS_ORIGINS` decides.

A POST with no body and no Content-Type (`curl -X POST .../cancel`) passes: there is nothing
to declare, and a body-less POST cannot carry a request that spends anything.

Installed as Litestar middleware, so it runs after routing: unknown paths and wrong methods
still get their 404 and 405.
"""

from __future__ import annotations

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

JSON_MEDIA_TYPE = b"application/json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def declares_json(content_type: bytes | None) -> bool:
    """True when a Content-Type value names application/json, whatever its parameters."""
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].strip().lower() == JSON_MEDIA_TYPE


def _content_type(scope: Scope) -> tuple[bytes | None, bool]:
    """The Content-Type, and whether the request says it has a body (a Content-Length other
    than 0, or a Transfer-Encoding)."""
    content_type = None
    has_body = False
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            has_body = has_body or value.strip() != b"0"
        elif name == b"transfer-encoding":
            has_body = True
    return content_type, has_body


def _refusal(content_type: bytes | None) -> bytes:
    sent = (
        f"Content-Type {content_type.decode('latin-1')!r}"
        if content_type is not None
        else "no Content-Type"
    )
    return msgspec.json.encode(
        {
            "error": {
                "message": f"The request body must be JSON, sent with Content-Type: "
                f"application/json; this request has {sent}.",
                "type": "invalid_request_error",
                "param": None,
                "code": "unsupported_media_type",
            }
        }
    )


def require_json_body(app: ASGIApp) -> ASGIApp:
    """Answer 415 in the error envelope to a body-carrying request not declared as JSON."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] not in _BODY_METHODS:
            await app(scope, receive, send)
            return
        content_type, has_body = _content_type(scope)
        if declares_json(content_type) or (content_type is None and not has_body):
            await app(scope, receive, send)
            return
        body = _refusal(content_type)
        await send(
            {
                "type": "http.response.start",
                "status": 415,
                "headers": [
                    (b"content-type", JSON_MEDIA_TYPE),
                    (b"content-length", str(len(body)).encode()),
                    (b"accept", JSON_MEDIA_TYPE),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return middleware
