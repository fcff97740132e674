"""Who a request is and what it carries for the upstream, read from its headers: the same for
HTTP routes and for a WebSocket handshake."""

from __future__ import annotations

from collections.abc import Mapping

from xrouter.application.ports import CallContext
from xrouter.entrypoints.http.errors import bearer_token

UPSTREAM_AUTHORIZATION = "x-upstream-authorization"
"""With gateway keys and BYOK together: the client's own upstream key, as `Bearer ...`."""


def credentials(headers: Mapping[str, str], gateway_keys: bool) -> tuple[str | None, str | None]:
    """(the gateway key, the client's upstream token). With gateway keys the Authorization
    header carries the gateway key and X-Upstream-Authorization the upstream key (BYOK);
    without, Authorization carries the upstream key (used only in BYOK mode)."""
    bearer = bearer_token(headers.get("authorization"))
    if gateway_keys:
        return bearer, bearer_token(headers.get(UPSTREAM_AUTHORIZATION))
    return None, bearer


def call_context(client_token: str | None, headers: Mapping[str, str]) -> CallContext:
    """The client's upstream token (used only in BYOK mode) and W3C trace context."""
    return CallContext(client_token=client_token, traceparent=headers.get("traceparent"))
