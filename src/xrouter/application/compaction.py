"""Use case: compact a conversation window (`POST /v1/responses/compact`).

Two ways, by provider:

- an upstream that compacts natively (a Responses API server, `NativeCompaction`) gets the
  window, as the gateway holds it, on its own `/responses/compact`, and its answer is relayed
  once checked to be a compaction (a malformed one is a 502, never a success);
- for every other provider the requested model writes the summary: one ordinary,
  non-stream, unstored response through `CreateResponse` (so admission, access control,
  limits, history, usage and telemetry are those of any request), asked with the fixed
  prompt below. The summary is sealed by the gateway into one `compaction` item that later
  requests expand back into context (`compaction_items.py`).

The answer is a compacted input window, not a response: nothing is stored, and the client
starts a new chain with `output` as its base `input`.
"""

from __future__ import annotations

import msgspec

from xrouter.application.access import AccessControl
from xrouter.application.compaction_items import CompactionItems, SealedSummary
from xrouter.application.create_response import CreateResponse
from xrouter.application.history import ConversationHistory
from xrouter.application.ports import (
    CallContext,
    Clock,
    CompactCall,
    IdGenerator,
    ModelCatalog,
    NativeCompaction,
    ResponseStore,
)
from xrouter.domain import ingest
from xrouter.domain.compaction import CompactionResource, CompactRequest
from xrouter.domain.errors import InvalidRequest, ProviderError
from xrouter.domain.keys import Principal
from xrouter.domain.models import ModelRoute
from xrouter.domain.responses import (
    CompactionItem,
    InputItem,
    ResponseRequest,
    Usage,
    output_text,
)

SUMMARY_INSTRUCTIONS = (
    "You compact conversations. Write a faithful summary of the conversation so far, one "
    "that lets it continue in a new context window with nothing else from before: the "
    "user's goals and requests, every decision and agreement, facts, names, numbers, code, "
    "file paths and identifiers exactly as given, the tool calls made and their results, "
    "what is done and what remains open. Add nothing that was not said, and do not answer "
    "or continue the conversation: only summarise it."
)
"""The summariser's instructions (docs/compaction.md quotes them)."""

SUMMARY_REQUEST = (
    "Compact the conversation above into the summary your instructions describe. Reply with "
    "the summary only."
)
"""The last user message of the summarising request, after the window."""

_CLIENT_INSTRUCTIONS = (
    "\n\nThe conversation ran under these instructions; they will be given again, so do not "
    "summarise them:\n"
)


class CompactResponses:
    def __init__(
        self,
        *,
        create_response: CreateResponse,
        catalog: ModelCatalog,
        store: ResponseStore,
        items: CompactionItems,
        clock: Clock,
        ids: IdGenerator,
        access: AccessControl | None = None,
    ) -> None:
        """`access`: gateway keys (None: authentication off)."""
        self._create = create_response
        self._catalog = catalog
        self._history = ConversationHistory(store)
        self._items = items
        self._clock = clock
        self._ids = ids
        self._access = access or AccessControl.off(clock)

    async def compact(
        self,
        request: CompactRequest,
        *,
        api_key: str | None = None,
        context: CallContext | None = None,
        request_id: str | None = None,
    ) -> CompactionResource:
        """The compacted window of `request`. Raises GatewayError: bad input (400), unknown
        model (404), key refused (401/403/429), and the summarising model's or the native
        upstream's failures."""
        if not request.model.strip():
            raise InvalidRequest(
                "`model` must be a non-empty model id such as 'local/echo'.",
                param="model",
                code="invalid_value",
            )
        if request.input is None and request.previous_response_id is None:
            raise InvalidRequest(
                "Nothing to compact: send the window as `input`, name it with "
                "`previous_response_id`, or both.",
                param="input",
                code="missing_required_parameter",
            )
        own_items = _own_items(request)
        # Checked like a create request's input, before anything is sent anywhere.
        ingest.validate(ResponseRequest(model=request.model, input=own_items))
        principal = await self._access.authenticate(api_key)
        route, provider = await self._catalog.resolve(request.model)
        public = f"{route.provider}/{route.upstream_model}"
        self._access.check_model(principal, request.model, (request.model, public))
        context = context or CallContext()
        if isinstance(provider, NativeCompaction) and provider.compacts_natively:
            return await self._native(request, own_items, principal, route, provider, context)
        return await self._summarise(request, own_items, principal, context, api_key, request_id)

    async def _summarise(
        self,
        request: CompactRequest,
        own_items: list[InputItem],
        principal: Principal,
        context: CallContext,
        api_key: str | None,
        request_id: str | None,
    ) -> CompactionResource:
        instructions = SUMMARY_INSTRUCTIONS
        if request.instructions:
            instructions += _CLIENT_INSTRUCTIONS + request.instructions
        summarising = ResponseRequest(
            model=request.model,
            input=[*own_items, InputItem(type="message", role="user", content=SUMMARY_REQUEST)],
            instructions=instructions,
            previous_response_id=request.previous_response_id,
            prompt_cache_key=request.prompt_cache_key,
            store=False,
            stream=False,
        )
        execution = await self._create.start(
            summarising, request_id=request_id, context=context, api="compact", api_key=api_key
        )
        response = await execution.result()
        summary = output_text(response).strip()
        if response.status != "completed" or not summary:
            # A cut-short or empty summary would silently lose the conversation.
            raise ProviderError(
                f"The model '{request.model}' did not write a complete summary (status "
                f"'{response.status}'"
                + (", no text" if not summary else "")
                + "); the conversation was not compacted. Retry, or compact with another "
                "model."
            )
        now = int(self._clock.now())
        sealed = self._items.seal(
            SealedSummary(
                summary=summary, owner=principal.owner, model=request.model, created_at=now
            )
        )
        item = CompactionItem(id=self._ids.new_id("cmp"), encrypted_content=sealed)
        return CompactionResource(
            id=self._ids.new_id("resp"),
            created_at=now,
            output=[msgspec.to_builtins(item)],
            usage=response.usage or Usage(input_tokens=0, output_tokens=0, total_tokens=0),
        )

    async def _native(
        self,
        request: CompactRequest,
        own_items: list[InputItem],
        principal: Principal,
        route: ModelRoute,
        provider: NativeCompaction,
        context: CallContext,
    ) -> CompactionResource:
        # The upstream keeps nothing (the gateway is the store): it gets the whole window.
        history = await self._history.load(request.previous_response_id, owner=principal.owner)
        items = self._items.expand(
            history + own_items, own_from=len(history), owner=principal.owner, provider=provider
        )
        access = self._access
        admission = await access.admit(principal)
        try:
            answer = await provider.compact(
                CompactCall(
                    route=route,
                    items=items,
                    instructions=request.instructions,
                    prompt_cache_key=request.prompt_cache_key,
                    context=context,
                )
            )
            await access.charge(principal, answer.usage.total_tokens)
        finally:
            access.finish(principal, admission)
        return answer


def _own_items(request: CompactRequest) -> list[InputItem]:
    if request.input is None:
        return []
    if isinstance(request.input, str):
        return [InputItem(type="message", role="user", content=request.input)]
    return request.input
