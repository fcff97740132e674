"""`OpenAICompatibleProvider`: the Provider port over any server that speaks OpenAI's Chat
Completions or Responses API (OpenAI, vLLM, Ollama, LM Studio, OpenRouter...).

It builds the payload (chat_protocol / responses_protocol), the headers (credentials,
traceparent), moves it with the shared HttpTransport and turns the answer into canonical
events (chat_parser / responses_protocol). Retries, timeouts and HTTP error mapping are the
transport's; an error found inside a 200 is mapped here with `map_stream_error`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import msgspec

from xrouter.adapters.providers.inflight import InflightLimiter
from xrouter.adapters.providers.openai_compatible import compaction_protocol
from xrouter.adapters.providers.openai_compatible.chat_parser import (
    ChatStreamParser,
    parse_completion,
)
from xrouter.adapters.providers.openai_compatible.chat_protocol import (
    ChatDialect,
    build_chat_payload,
)
from xrouter.adapters.providers.openai_compatible.responses_protocol import (
    ResponsesStreamParser,
    build_responses_payload,
    parse_response,
)
from xrouter.adapters.providers.provider_spec import Protocol, ProviderSpec
from xrouter.adapters.providers.sse_reader import SSEEvent
from xrouter.adapters.providers.transport import HttpTransport
from xrouter.adapters.providers.upstream_errors import ErrorMapper, map_stream_error
from xrouter.application.ports import CallContext, CompactCall, GenerationRequest
from xrouter.domain.compaction import CompactionResource
from xrouter.domain.errors import ProviderError, Unauthorized
from xrouter.domain.models import ModelInfo
from xrouter.domain.provider_events import ProviderEvent

log = logging.getLogger(__name__)


class _Model(msgspec.Struct):
    id: str
    owned_by: str | None = None
    created: int | None = None
    # Not every server says, nor in one type: kept only when a positive integer, so an odd
    # value never fails discovery.
    context_length: Any = None  # OpenRouter
    max_model_len: Any = None  # vLLM

    def context(self) -> int | None:
        for value in (self.context_length, self.max_model_len):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None


class _ModelList(msgspec.Struct):
    data: list[_Model]


def require_chat_protocol(spec: ProviderSpec, vendor: str) -> None:
    """Refuse (ValueError, at startup) a vendor that has no Responses API configured to speak
    it: every call would fail at the upstream."""
    if spec.protocol != "chat":
        raise ValueError(
            f"The {vendor} provider '{spec.name}' speaks Chat Completions only; set its "
            "protocol to `chat`."
        )


class OpenAICompatibleProvider:
    """Implements the Provider port for one configured upstream."""

    def __init__(
        self,
        spec: ProviderSpec,
        *,
        transport: HttpTransport | None = None,
        extra_headers: Mapping[str, str] | None = None,
        dialect: ChatDialect | None = None,
        limiter: InflightLimiter | None = None,
    ) -> None:
        """`transport` replaces the one built from `spec.transport` (tests); `extra_headers`
        go on every call (a flavour's attribution headers); `limiter` enforces the in-flight
        limit of the transport built here (default: this process's own)."""
        if spec.protocol not in ("chat", "responses"):
            raise ValueError(f"protocol must be 'chat' or 'responses', not {spec.protocol!r}")
        name = spec.name
        self._name = name
        self._transport = transport or HttpTransport(name, spec.transport, limiter=limiter)
        self._api_key = spec.api_key
        self._protocol: Protocol = spec.protocol
        self._byok = spec.byok
        self._extra_headers = dict(extra_headers or {})
        self._static_models = [
            ModelInfo(id=f"{name}/{model}", owned_by=name) for model in spec.static_models
        ]
        self._dialect = dialect or ChatDialect()
        self._map_error: ErrorMapper = functools.partial(
            map_stream_error, name, setting_names=spec.setting_names
        )
        self._encoder = msgspec.json.Encoder()

    @property
    def name(self) -> str:
        return self._name

    @property
    def protocol(self) -> Protocol:
        return self._protocol

    async def aclose(self) -> None:
        """Close the transport's pooled connections (at gateway shutdown)."""
        await self._transport.aclose()

    def knows_model(self, upstream_model: str) -> bool:
        # Any model may be tried; the upstream's own 404 becomes model_not_found.
        return True

    def static_models(self) -> list[ModelInfo]:
        """The configured models, listed whatever discovery finds."""
        return list(self._static_models)

    async def list_models(self) -> list[ModelInfo]:
        """Discovery: the upstream's `GET /models` now. Errors propagate: the catalog decides
        how to cache and degrade."""
        headers = self._base_headers()
        if self._api_key:  # discovery is the operator's, even in BYOK mode
            headers["Authorization"] = f"Bearer {self._api_key}"
        raw: Any = await self._transport.get_json("/models", headers)
        try:
            models = msgspec.convert(raw, _ModelList)
        except msgspec.ValidationError as exc:
            raise ProviderError(
                f"{self._name} answered GET /models with an unexpected shape ({exc})."
            ) from None
        return [
            ModelInfo(
                id=f"{self._name}/{model.id}",
                owned_by=model.owned_by or self._name,
                created=model.created or 0,
                context_length=model.context(),
            )
            for model in models.data
        ]

    async def stream(self, call: GenerationRequest) -> AsyncIterator[list[ProviderEvent]]:
        headers = self._headers(call)
        streaming = call.request.stream
        if self._protocol == "responses":
            payload = build_responses_payload(call, stream=streaming)
            path = "/responses"
        else:
            payload = build_chat_payload(call, stream=streaming, dialect=self._dialect)
            path = "/chat/completions"
        payload = self.adjust_payload(payload, call)
        body = self._encoder.encode(payload)
        if not streaming:
            reply = await self._transport.post_json(path, body, headers, byok=self._byok)
            whole = self._parse_whole(reply.content, reply.headers.get("content-type"))
            if whole:
                yield whole
            return
        # A Responses upstream ends with its own terminal event, never `[DONE]` (OpenAI's
        # does not send it); a Chat Completions stream without `[DONE]` was cut short.
        reads = self._transport.stream_events(
            path, body, headers, byok=self._byok, require_done=self._protocol != "responses"
        )
        # The parsers run inline rather than in generators of their own, and each read of the
        # upstream's body (many events from a fast upstream) is one batch: one `async for` /
        # `yield` step per read, not per event, on the way to the engine (issue 16).
        try:
            if self._protocol == "responses":
                responses = ResponsesStreamParser(provider=self._name, map_error=self._map_error)
                async for read in reads:
                    # OpenAI sends no [DONE]: its terminal event ends the stream.
                    batch, failure = _parse_read(read, responses.feed, lambda: responses.done)
                    if batch:
                        yield batch
                    if failure is not None:
                        raise failure
                    if responses.done:
                        return
                closing = responses.finish()
            else:
                chat = ChatStreamParser(provider=self._name, map_error=self._map_error)
                async for read in reads:
                    batch, failure = _parse_read(read, chat.feed)
                    if batch:
                        yield batch
                    if failure is not None:
                        raise failure
                closing = chat.finish()
            if closing:
                yield closing
        finally:
            # Frees the transport's in-flight slot and connection when we stop early.
            close = getattr(reads, "aclose", None)
            if close is not None:
                await close()

    @property
    def compacts_natively(self) -> bool:
        """A Responses API upstream has `/responses/compact` (the NativeCompaction port)."""
        return self._protocol == "responses"

    async def compact(self, call: CompactCall) -> CompactionResource:
        """Pass a compaction through to the upstream; its answer checked (502 otherwise)."""
        body = self._encoder.encode(compaction_protocol.build_compact_payload(call))
        reply = await self._transport.post_json(
            compaction_protocol.PATH, body, self._headers_for(call.context), byok=self._byok
        )
        return compaction_protocol.parse_compaction(
            reply.content, provider=self._name, content_type=reply.headers.get("content-type")
        )

    # --- hooks for flavours (OpenRouter) ----------------------------------------------------

    def adjust_payload(self, payload: dict[str, Any], call: GenerationRequest) -> dict[str, Any]:
        """The payload as sent; flavours override to add their own fields."""
        return payload

    # --- internals ---------------------------------------------------------------------------

    def _base_headers(self) -> dict[str, str]:
        return dict(self._extra_headers)

    def _headers(self, call: GenerationRequest) -> dict[str, str]:
        return self._headers_for(call.context)

    def _headers_for(self, context: CallContext) -> dict[str, str]:
        headers = self._base_headers()
        if self._byok:
            token = context.client_token
            if not token:
                raise Unauthorized(
                    f"The provider '{self._name}' uses your own API key (BYOK): send it as "
                    "`Authorization: Bearer <key>`."
                )
            headers["Authorization"] = f"Bearer {token}"
        elif self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if context.traceparent:
            headers["traceparent"] = context.traceparent
        return headers

    def _parse_whole(self, content: bytes, content_type: str | None) -> list[ProviderEvent]:
        parse = parse_response if self._protocol == "responses" else parse_completion
        return parse(
            content, provider=self._name, map_error=self._map_error, content_type=content_type
        )


def _parse_read(
    read: list[SSEEvent],
    feed: Callable[[str], list[ProviderEvent]],
    stop: Callable[[], bool] | None = None,
) -> tuple[list[ProviderEvent], Exception | None]:
    """The events of one upstream read, parsed by `feed`, and the failure that cut it short
    (None when it did not): what came before a failure still goes out first, then the
    failure, as when events went one by one. `stop()` true after an event: the rest of the
    read is not parsed. A plain function, not a generator: it adds no step per event."""
    batch: list[ProviderEvent] = []
    try:
        for sse in read:
            batch += feed(sse.data)
            if stop is not None and stop():
                break
    except Exception as failure:  # a parser's failure, raised by the caller after the batch
        return batch, failure
    return batch, None
