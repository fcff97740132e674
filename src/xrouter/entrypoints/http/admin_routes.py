"""Operator routes under /admin, at the root (not under the API prefixes).

Every one of them needs `Authorization: Bearer <XR_ADMIN_KEY>` (compared in constant time:
both sides are hashed first, so not even the length leaks); without an admin key configured
none is mounted, and they answer 404 like any unknown path. `/admin/usage` reads the
analytics; `/admin/keys` administers gateway keys (application/key_admin.py), and a key's
secret appears only in the answer that creates or rotates it (sent `Cache-Control: no-store`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
from litestar import Request, get, post
from litestar import Response as HTTPResponse
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from xrouter.adapters.telemetry.analytics import AnalyticsSink
from xrouter.application.key_admin import KeyAdmin, KeyView, key_view
from xrouter.application.usage_summary import GROUP_BY, GroupBy, summary
from xrouter.domain.errors import InvalidRequest, Unauthorized
from xrouter.domain.keys import KeyLimits
from xrouter.entrypoints.http.codec import decode

JSON = "application/json"
DEFAULT_SINCE_S = 3600.0


NO_STORE = {"cache-control": "no-store"}


class LimitsBody(msgspec.Struct, forbid_unknown_fields=True):
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent: int | None = None


class CreateKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /admin/keys`: `expires_at` in Unix seconds; `models` glob patterns (none: all)."""

    name: str
    expires_at: float | None = None
    models: list[str] = msgspec.field(default_factory=list)
    limits: LimitsBody | None = None


class KeyList(msgspec.Struct):
    data: list[KeyView]
    object: str = "list"


class KeyWithSecret(msgspec.Struct):
    """The answer of create and rotate: the only time a key's secret is sent."""

    key: KeyView
    secret: str


def build_admin_routes(
    analytics: AnalyticsSink,
    wall_clock: Callable[[], float] = time.time,
    *,
    admin_key: str | None = None,
    keys: KeyAdmin | None = None,
) -> list[HTTPRouteHandler]:
    """The /admin routes, behind `admin_key` (None: none mounted, every /admin path is 404).

    `GET /admin/usage?since=<seconds>&by=<model|provider|day|api|status>`: the analytics
    summary of the last `since` seconds (default one hour), grouped by `by` (default model).
    With the memory sink each worker answers from its own records: with several workers use
    the Redis sink (XR_ANALYTICS=redis), which every worker writes to.

    With `keys`: `POST /admin/keys`, `GET /admin/keys`, `GET /admin/keys/{id}`,
    `POST /admin/keys/{id}/revoke`, `POST /admin/keys/{id}/rotate`."""
    if not admin_key:
        return []
    encode = msgspec.json.Encoder().encode
    authorize = _authorizer(admin_key)

    @get(
        "/admin/usage",
        summary="Analytics summary (operators)",
        description="Requests, failures, tokens and latency percentiles of the last `since` "
        "seconds, grouped by `by` (model, provider, day, api, status).",
    )
    async def usage(request: Request[Any, Any, Any]) -> HTTPResponse[bytes]:
        authorize(request)
        query = request.query_params
        since_s = _since(query.get("since"))
        by = _by(query.get("by"))
        start = wall_clock() - since_s
        window = await analytics.window(start)
        body = summary(
            window.records,
            by,
            since=start,
            sink=analytics.name,
            cut=window.cut,
            dropped=analytics.dropped,
            failed=analytics.failed,
        )
        return HTTPResponse(encode(body), media_type=JSON)

    if keys is None:
        return [usage]
    return [usage, *_key_routes(keys, authorize, wall_clock)]


def _authorizer(admin_key: str) -> Callable[[Request[Any, Any, Any]], None]:
    """A check of the request's bearer token against `admin_key`: Unauthorized (401) when it
    is missing or wrong. Both sides are hashed, so the comparison takes the same time whatever
    the token's length and however much of it matches."""
    expected = hashlib.sha256(admin_key.encode()).digest()

    def authorize(request: Request[Any, Any, Any]) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(token.strip().encode()).digest()
        if not (hmac.compare_digest(given, expected) and scheme.lower() == "bearer"):
            raise Unauthorized(
                "The /admin routes need the gateway's admin key (XR_ADMIN_KEY) as "
                "`Authorization: Bearer <admin key>`; this request has none or another."
            )

    return authorize


def _key_routes(
    keys: KeyAdmin,
    authorize: Callable[[Request[Any, Any, Any]], None],
    wall_clock: Callable[[], float],
) -> list[HTTPRouteHandler]:
    encode = msgspec.json.Encoder().encode
    create_decoder = msgspec.json.Decoder(CreateKeyBody)

    def answer(value: object, status: int = 200, *, secret: bool = False) -> HTTPResponse[bytes]:
        headers = NO_STORE if secret else None
        return HTTPResponse(encode(value), status_code=status, media_type=JSON, headers=headers)

    @post("/admin/keys", summary="Create a gateway key (operators)", status_code=201)
    async def create_key(request: Request[Any, Any, Any]) -> HTTPResponse[bytes]:
        authorize(request)
        body = decode(create_decoder, await request.body())
        limits = body.limits or LimitsBody()
        key, secret = await keys.create(
            body.name,
            expires_at=body.expires_at,
            models=body.models,
            limits=KeyLimits(
                requests_per_minute=limits.requests_per_minute,
                tokens_per_minute=limits.tokens_per_minute,
                concurrent=limits.concurrent,
            ),
        )
        return answer(KeyWithSecret(key_view(key, wall_clock()), secret), 201, secret=True)

    @get("/admin/keys", summary="List gateway keys (operators)")
    async def list_keys(request: Request[Any, Any, Any]) -> HTTPResponse[bytes]:
        authorize(request)
        now = wall_clock()
        return answer(KeyList([key_view(key, now) for key in await keys.list_keys()]))

    @get("/admin/keys/{key_id:str}", summary="Show a gateway key (operators)")
    async def show_key(
        request: Request[Any, Any, Any], key_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        authorize(request)
        return answer(key_view(await keys.show(key_id), wall_clock()))

    @post("/admin/keys/{key_id:str}/revoke", summary="Revoke a gateway key (operators)")
    async def revoke_key(
        request: Request[Any, Any, Any], key_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        authorize(request)
        return answer(key_view(await keys.revoke(key_id), wall_clock()))

    @post("/admin/keys/{key_id:str}/rotate", summary="Rotate a gateway key (operators)")
    async def rotate_key(
        request: Request[Any, Any, Any], key_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        authorize(request)
        key, secret = await keys.rotate(key_id)
        return answer(KeyWithSecret(key_view(key, wall_clock()), secret), secret=True)

    return [create_key, list_keys, show_key, revoke_key, rotate_key]


def _since(raw: str | None) -> float:
    if raw is None or raw == "":
        return DEFAULT_SINCE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequest(
            f"`since` must be a positive number of seconds (3600 for the last hour), got {raw!r}.",
            param="since",
            code="invalid_value",
        )
    return value


def _by(raw: str | None) -> GroupBy:
    if raw is None or raw == "":
        return "model"
    if raw not in GROUP_BY:
        raise InvalidRequest(
            f"`by` must be one of {', '.join(GROUP_BY)}, got {raw!r}.",
            param="by",
            code="invalid_value",
        )
    return cast(GroupBy, raw)
