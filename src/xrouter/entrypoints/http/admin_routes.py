"""Operator routes under /admin, at the root (not under the API prefixes).

Open to anyone who reaches the port for now: the access-control issue (12) puts them behind
the admin key. They read, never change, the gateway's state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
from litestar import Request, get
from litestar import Response as HTTPResponse
from litestar.handlers import HTTPRouteHandler

from xrouter.adapters.telemetry.analytics import AnalyticsSink
from xrouter.application.usage_summary import GROUP_BY, GroupBy, summary
from xrouter.domain.errors import InvalidRequest

JSON = "application/json"
DEFAULT_SINCE_S = 3600.0


def build_admin_routes(
    analytics: AnalyticsSink, wall_clock: Callable[[], float] = time.time
) -> list[HTTPRouteHandler]:
    """`GET /admin/usage?since=<seconds>&by=<model|provider|day|api|status>`: the analytics
    summary of the last `since` seconds (default one hour), grouped by `by` (default model).

    With the memory sink each worker answers from its own records: with several workers use
    the Redis sink (XR_ANALYTICS=redis), which every worker writes to."""
    encode = msgspec.json.Encoder().encode

    @get(
        "/admin/usage",
        summary="Analytics summary (operators)",
        description="Requests, failures, tokens and latency percentiles of the last `since` "
        "seconds, grouped by `by` (model, provider, day, api, status).",
    )
    async def usage(request: Request[Any, Any, Any]) -> HTTPResponse[bytes]:
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

    return [usage]


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
