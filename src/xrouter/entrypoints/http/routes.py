"""HTTP routes. Handlers decode, call a use case, encode: no provider branches, no adapters.

Route handlers are built by `build_api_routes` as closures over the use cases, so resolving
dependencies happens once at startup and a request pays for none of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Request, delete, get, post
from litestar import Response as HTTPResponse
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.types import Receive

from xrouter.application.background_responses import BackgroundResponses
from xrouter.application.chat_completions import ChatCompletions
from xrouter.application.count_input_tokens import CountInputTokens
from xrouter.application.create_response import CreateResponse
from xrouter.application.execution import DisconnectSignal
from xrouter.application.get_response import GetResponse
from xrouter.application.list_models import ListModels
from xrouter.domain.chat import ChatCompletion, ChatRequest
from xrouter.domain.errors import ClientDisconnected
from xrouter.domain.models import ModelInfo, ModelList
from xrouter.domain.responses import (
    DeletedResponse,
    InputItemList,
    InputTokens,
    Response,
    ResponseRequest,
)
from xrouter.entrypoints.http.background_routes import replay_stream, wants_stream
from xrouter.entrypoints.http.codec import Codec
from xrouter.entrypoints.http.credentials import call_context, credentials
from xrouter.entrypoints.http.event_stream import EventStream
from xrouter.entrypoints.http.json_answer import JsonAnswer
from xrouter.entrypoints.http.openapi import documented
from xrouter.entrypoints.http.paging import page_query
from xrouter.entrypoints.http.request_id import request_id_of
from xrouter.entrypoints.http.sse import SSEWriter

JSON = "application/json"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
AnyRequest = Request[Any, Any, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UseCases:
    create_response: CreateResponse
    chat_completions: ChatCompletions
    get_response: GetResponse
    list_models: ListModels
    count_input_tokens: CountInputTokens
    background: BackgroundResponses | None = None
    """Replays of background responses (`GET /responses/{id}?stream=true`)."""


async def _watch_disconnect(receive: Receive, signal: DisconnectSignal) -> None:
    """After the body is read, the next ASGI message is `http.disconnect`."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            signal.set()
            return


class _DisconnectWatch:
    """A signal set when the client leaves, while the handler runs. A streaming response
    listens for the disconnect itself once it starts, so the watch ends before it. A class
    rather than an `asynccontextmanager`: that one's generator and helper objects were a
    few microseconds of every request (issue 16)."""

    __slots__ = ("_receive", "_watcher")

    def __init__(self, request: AnyRequest) -> None:
        self._receive = request.receive
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DisconnectSignal:
        signal = DisconnectSignal()
        self._watcher = asyncio.create_task(_watch_disconnect(self._receive, signal))
        return signal

    async def __aexit__(self, *exc_info: object) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


async def _first(items: AsyncIterator[T]) -> T:
    """The stream's first item, before the response starts: a failure before any output
    raises here and becomes a JSON error; a client gone by then ends the handler."""
    first = await anext(items, None)
    if first is None:
        raise ClientDisconnected("The client disconnected before the first output.")
    return first


def _event_stream(frames: AsyncIterator[bytes]) -> EventStream:
    return EventStream(frames, SSE_HEADERS)


def build_api_routes(
    use_cases: UseCases, codec: Codec, sse: SSEWriter, *, gateway_keys: bool = False
) -> list[HTTPRouteHandler]:
    """The API routes, to mount under each configured prefix (`/v1`, `/api/v1`).
    `gateway_keys`: XR_AUTH=keys (the Authorization header is the gateway key)."""

    def api_key(request: AnyRequest) -> str | None:
        return credentials(request.headers, gateway_keys)[0] if gateway_keys else None

    def json(value: object, status: int = 200) -> HTTPResponse[bytes]:
        return JsonAnswer(codec.encode(value), status)

    @post(
        "/responses",
        status_code=200,
        summary="Create a model response",
        description="OpenAI Responses API. JSON, or SSE with `stream: true`.",
        operation_class=documented(Response, ResponseRequest, streams=True),
    )
    async def create_response(request: AnyRequest) -> HTTPResponse[Any]:
        payload = codec.decode_response_request(await request.body())
        async with _DisconnectWatch(request) as disconnect:
            headers = request.headers  # Litestar's property looks in the scope each time
            key, client_token = credentials(headers, gateway_keys)
            execution = await use_cases.create_response.start(
                payload,
                request_id=request_id_of(request.scope),
                disconnect=disconnect,
                context=call_context(client_token, headers),
                api_key=key,
            )
            if not payload.stream:
                return json(await execution.result())
            events = execution.batches()
            first = await _first(events)
        return _event_stream(sse.responses(first, events, execution.detach))

    @post(
        "/chat/completions",
        status_code=200,
        summary="Create a chat completion",
        description="OpenAI Chat Completions, served by the same flow as /responses.",
        operation_class=documented(ChatCompletion, ChatRequest, streams=True),
    )
    async def create_chat_completion(request: AnyRequest) -> HTTPResponse[Any]:
        payload = codec.decode_chat_request(await request.body())
        async with _DisconnectWatch(request) as disconnect:
            headers = request.headers  # Litestar's property looks in the scope each time
            key, client_token = credentials(headers, gateway_keys)
            execution = await use_cases.chat_completions.start(
                payload,
                request_id=request_id_of(request.scope),
                disconnect=disconnect,
                context=call_context(client_token, headers),
                api_key=key,
            )
            if not payload.stream:
                return json(await execution.completion())
            chunks = execution.chunk_batches()
            first = await _first(chunks)
        return _event_stream(sse.chat(first, chunks, execution.detach))

    # Static paths under /responses (input_tokens here, compact in compaction_routes.py) win
    # over `/responses/{response_id}` in Litestar's router, whichever module mounts them:
    # tests/test_wire_defects.py holds both to that (no 405 from the id route).
    @post(
        "/responses/input_tokens",
        status_code=200,
        summary="Count a request's input tokens",
        description="The create body; answers the input token count in the model's encoding.",
        operation_class=documented(InputTokens, ResponseRequest),
    )
    async def count_input_tokens(request: AnyRequest) -> HTTPResponse[bytes]:
        payload = codec.decode_response_request(await request.body())
        return json(await use_cases.count_input_tokens.execute(payload, api_key=api_key(request)))

    @get(
        "/responses/{response_id:str}",
        summary="Retrieve a stored response",
        operation_class=documented(Response),
    )
    async def retrieve_response(
        request: AnyRequest, response_id: FromPath[str]
    ) -> HTTPResponse[Any]:
        background = use_cases.background
        if background is not None and wants_stream(request.query_params):
            # A background response's events again, after `starting_after` (background_routes)
            return await replay_stream(
                background, sse, response_id, request.query_params, api_key(request)
            )
        return json(await use_cases.get_response.get(response_id, api_key=api_key(request)))

    @delete(
        "/responses/{response_id:str}",
        status_code=200,
        summary="Delete a stored response",
        operation_class=documented(DeletedResponse),
    )
    async def delete_response(
        request: AnyRequest, response_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        return json(await use_cases.get_response.delete(response_id, api_key=api_key(request)))

    @get(
        "/responses/{response_id:str}/input_items",
        summary="List a response's input items",
        operation_class=documented(InputItemList),
    )
    async def list_input_items(
        request: AnyRequest, response_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        query = page_query(request.query_params)
        page = await use_cases.get_response.input_items(
            response_id,
            after=query.after,
            limit=query.limit,
            order=query.order,
            api_key=api_key(request),
        )
        return json(page)

    @get("/models", summary="List models", operation_class=documented(ModelList))
    async def list_models(request: AnyRequest) -> HTTPResponse[bytes]:
        return json(await use_cases.list_models.execute(api_key(request)))

    # `path`, not `str`: model ids hold slashes (`local/echo`), and the SDK's `%2F` arrives
    # decoded, as one more path segment.
    @get(
        "/models/{model_id:path}",
        summary="Retrieve a model",
        operation_class=documented(ModelInfo),
    )
    async def retrieve_model(request: AnyRequest, model_id: FromPath[str]) -> HTTPResponse[bytes]:
        model = model_id.removeprefix("/")
        return json(await use_cases.list_models.retrieve(model, api_key(request)))

    return [
        create_response,
        create_chat_completion,
        count_input_tokens,
        retrieve_response,
        delete_response,
        list_input_items,
        list_models,
        retrieve_model,
    ]


def build_probe_routes(
    is_ready: Callable[[], bool], redis_ok: Callable[[], Awaitable[bool]] | None = None
) -> list[HTTPRouteHandler]:
    """Liveness and readiness, at the root (not under the API prefixes).

    `redis_ok`: when state is shared on Redis, a bounded health probe whose answer goes in
    the readiness body. It does not decide readiness: with Redis down, requests that need no
    stored state are still served, so taking the instance out of rotation would refuse them
    too.
    """

    @get("/health", summary="Liveness: the process answers", include_in_schema=True)
    async def health() -> HTTPResponse[bytes]:
        return HTTPResponse(b'{"status":"ok"}', media_type=JSON)

    @get("/ready", summary="Readiness: dependencies loaded, accepting requests")
    async def ready() -> HTTPResponse[bytes]:
        ready = is_ready()
        body: dict[str, str] = {"status": "ready" if ready else "not_ready"}
        if redis_ok is not None:
            body["redis"] = "ok" if await redis_ok() else "unavailable"
        return HTTPResponse(
            msgspec.json.encode(body), status_code=200 if ready else 503, media_type=JSON
        )

    return [health, ready]
