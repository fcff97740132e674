"""`POST /responses/compact`, mounted under every API prefix next to `build_api_routes`.

A static path: Litestar routes it before `/responses/{response_id}`, so it is never taken for
a response id.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post
from litestar import Response as HTTPResponse
from litestar.handlers import HTTPRouteHandler

from xrouter.application.compaction import CompactResponses
from xrouter.domain.compaction import CompactionResource, CompactRequest
from xrouter.entrypoints.http.codec import Codec, decode
from xrouter.entrypoints.http.credentials import call_context, credentials
from xrouter.entrypoints.http.openapi import documented
from xrouter.entrypoints.http.request_id import request_id_of
from xrouter.entrypoints.http.routes import JSON

AnyRequest = Request[Any, Any, Any]


def build_compaction_routes(
    compact: CompactResponses, codec: Codec, *, gateway_keys: bool = False
) -> list[HTTPRouteHandler]:
    """The compaction route; `gateway_keys` as for `build_api_routes`."""
    decoder = msgspec.json.Decoder(CompactRequest)

    @post(
        "/responses/compact",
        status_code=200,
        summary="Compact a conversation window",
        description=(
            "Returns the window compacted (`object: response.compaction`): send its `output` "
            "as the base `input` of a new chain. docs/compaction.md."
        ),
        operation_class=documented(CompactionResource, CompactRequest),
    )
    async def compact_response(request: AnyRequest) -> HTTPResponse[bytes]:
        payload = decode(decoder, await request.body())
        key, client_token = credentials(request.headers, gateway_keys)
        resource = await compact.compact(
            payload,
            api_key=key,
            context=call_context(client_token, request.headers),
            request_id=request_id_of(request.scope),
        )
        return HTTPResponse(codec.encode(resource), status_code=200, media_type=JSON)

    return [compact_response]
