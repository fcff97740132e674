"""OpenAPI documentation of the API's bodies, generated from the msgspec wire types.

Handlers read raw bodies (for precise 400s), so Litestar cannot infer their schemas; each
route names its request and response types here instead, and the component schemas come from
`msgspec.json.schema_components`, the same types that decode and encode the wire.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from litestar import Request, get
from litestar import Response as HTTPResponse
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    RequestBody,
)

from xrouter.domain.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ChatStreamError,
)
from xrouter.domain.compaction import CompactionResource, CompactRequest
from xrouter.domain.conversations import (
    AddItems,
    Conversation,
    ConversationItemList,
    CreateConversation,
    DeletedConversation,
    UpdateConversation,
)
from xrouter.domain.events import StreamEvent
from xrouter.domain.models import ModelList
from xrouter.domain.responses import (
    DeletedResponse,
    InputItemList,
    InputTokens,
    Response,
    ResponseRequest,
)
from xrouter.entrypoints.http.errors import ErrorEnvelope

_REF = "#/components/schemas/{name}"
_TYPES: tuple[Any, ...] = (
    ResponseRequest,
    Response,
    StreamEvent,
    ChatRequest,
    ChatCompletion,
    ChatCompletionChunk,
    ChatStreamError,
    DeletedResponse,
    InputItemList,
    InputTokens,
    ModelList,
    ErrorEnvelope,
    CompactRequest,
    CompactionResource,
    CreateConversation,
    Conversation,
    UpdateConversation,
    DeletedConversation,
    AddItems,
    ConversationItemList,
)


def _probe_status(*values: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": list(values)}},
        "required": ["status"],
    }


def _probe_response(description: str, status: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _probe_status(status)}},
    }


PROBE_RESPONSES: dict[str, dict[str, Any]] = {
    "/health": {"200": _probe_response("The process answers.", "ok")},
    "/ready": {
        "200": _probe_response("Started and accepting requests.", "ready"),
        "503": _probe_response("Starting, or shutting down (after SIGTERM).", "not_ready"),
    },
}
"""What the probes answer. Their handlers return raw bytes, so Litestar documents a string."""


class WireTypesJsonPlugin(JsonRenderPlugin):
    """Serves /openapi.json with the msgspec wire types added as component schemas.

    Litestar regenerates `components.schemas` from handler signatures, so the wire types are
    merged into the rendered document instead (computed once, when first asked for: about
    30 ms that the gateway's start no longer pays, docs/benchmarks.md, issue 16).
    """

    @functools.cached_property
    def _schemas(self) -> dict[str, Any]:
        roots, schemas = msgspec.json.schema_components(_TYPES, ref_template=_REF)
        schemas["StreamEvent"] = roots[_TYPES.index(StreamEvent)]
        # A union of untagged structs has no msgspec schema; the chunk-or-error is spelled out.
        schemas["ChatStreamItem"] = {
            "anyOf": [
                {"$ref": _REF.format(name=t.__name__)}
                for t in (ChatCompletionChunk, ChatStreamError)
            ]
        }
        return schemas

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        schemas = openapi_schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(self._schemas)
        for path, responses in PROBE_RESPONSES.items():
            operation = openapi_schema.get("paths", {}).get(path, {}).get("get")
            if operation is not None:
                operation["responses"] = responses
        return super().render(request, openapi_schema)


def _ref(schema_type: type) -> Reference:
    return Reference(ref=_REF.format(name=schema_type.__name__))


def _error_response(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={"application/json": OpenAPIMediaType(schema=_ref(ErrorEnvelope))},
    )


def documented(
    response: type, request: type | None = None, *, streams: bool = False
) -> type[Operation]:
    """An Operation class that documents `request` -> `response` (+ SSE when `streams`)."""

    content = {"application/json": OpenAPIMediaType(schema=_ref(response))}
    if streams:
        events = "ChatStreamItem" if response is ChatCompletion else "StreamEvent"
        content["text/event-stream"] = OpenAPIMediaType(
            schema=Reference(ref=_REF.format(name=events))
        )

    # Not re-decorated with @dataclass: generating a dataclass's methods for each of the 36
    # documented routes took about 50 ms of the gateway's start (issue 16); the fields and
    # their methods are Operation's, this only fills two of them in.
    class DocumentedOperation(Operation):
        def __init__(self, **fields: Any) -> None:
            super().__init__(**fields)
            if request is not None:
                self.request_body = RequestBody(
                    content={"application/json": OpenAPIMediaType(schema=_ref(request))},
                    required=True,
                )
            self.responses = {
                "200": OpenAPIResponse(description="Success", content=content),
                "4XX": _error_response(
                    "Invalid request (400), unknown model or resource (404), body not JSON "
                    "(415), overload (429)"
                ),
                "5XX": _error_response(
                    "Internal (500), provider error (502), shutting down (503), provider or "
                    "generation timeout (504)"
                ),
            }

    return DocumentedOperation


def openapi_document_route() -> HTTPRouteHandler:
    """`GET /openapi.json` at the root, the same document as `/docs/openapi.json`."""
    plugin = WireTypesJsonPlugin()
    rendered: list[bytes] = []  # the document never changes once the app is built

    @get("/openapi.json", include_in_schema=False, media_type="application/json")
    async def openapi_document(request: Request[Any, Any, Any]) -> HTTPResponse[bytes]:
        if not rendered:
            rendered.append(plugin.render(request, request.app.openapi_schema.to_schema()))
        return HTTPResponse(rendered[0], media_type="application/json")

    return openapi_document
