"""Background responses over HTTP: `POST /responses/{id}/cancel`, and the replay stream that
`GET /responses/{id}?stream=true&starting_after=N` answers (the retrieve route in routes.py
hands that query to `replay_stream`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, post
from litestar import Response as HTTPResponse
from litestar.datastructures import MultiDict
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Stream

from xrouter.application.background_responses import BackgroundResponses
from xrouter.domain.errors import InvalidRequest
from xrouter.domain.events import StreamEvent
from xrouter.domain.responses import Response
from xrouter.entrypoints.http.codec import Codec
from xrouter.entrypoints.http.errors import bearer_token
from xrouter.entrypoints.http.openapi import documented
from xrouter.entrypoints.http.sse import DONE_FRAME, SSEWriter

JSON = "application/json"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
AnyRequest = Request[Any, Any, Any]


def wants_stream(query: MultiDict[str]) -> bool:
    """`stream=true` on a retrieve: replay the events instead of answering the response."""
    raw = query.get("stream")
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0", ""):
        return False
    raise InvalidRequest("`stream` must be true or false.", param="stream", code="invalid_value")


def _starting_after(query: MultiDict[str]) -> int | None:
    raw = query.get("starting_after")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(
            "`starting_after` must be an integer: the sequence number of the last event the "
            "client has.",
            param="starting_after",
            code="invalid_value",
        ) from None
    if value < 0:
        raise InvalidRequest(
            "`starting_after` must be 0 or more.", param="starting_after", code="invalid_value"
        )
    return value


async def replay_stream(
    background: BackgroundResponses,
    sse: SSEWriter,
    response_id: str,
    query: MultiDict[str],
    api_key: str | None,
) -> Stream:
    """The SSE answer of `GET /responses/{id}?stream=true[&starting_after=N]`. Its checks
    (404, 400) raise before the stream starts, so they are JSON errors."""
    events = await background.replay(
        response_id, starting_after=_starting_after(query), api_key=api_key
    )
    return Stream(_frames(sse, events), media_type="text/event-stream", headers=SSE_HEADERS)


async def _frames(sse: SSEWriter, events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    """One frame per event, then [DONE] once the terminal event went out. A replay drives
    nothing: a client that leaves just stops reading."""
    async for event in events:
        yield sse.frame(event)
    yield DONE_FRAME


def build_background_routes(
    background: BackgroundResponses, codec: Codec, *, gateway_keys: bool = False
) -> list[HTTPRouteHandler]:
    """The background routes, to mount under each API prefix next to `build_api_routes`.
    `gateway_keys`: XR_AUTH=keys (the Authorization header is the gateway key)."""

    @post(
        "/responses/{response_id:str}/cancel",
        status_code=200,
        summary="Cancel a background response",
        description="Only a response created with `background: true`, while it runs; "
        "idempotent on a cancelled one.",
        operation_class=documented(Response),
    )
    async def cancel_response(
        request: AnyRequest, response_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        key = bearer_token(request.headers.get("authorization")) if gateway_keys else None
        response = await background.cancel(response_id, api_key=key)
        return HTTPResponse(codec.encode(response), status_code=200, media_type=JSON)

    return [cancel_response]
