"""Use case: count a request's input tokens without running it (`POST
/v1/responses/input_tokens`).

The body is a create request, checked as create checks it: the gateway key (401), the request's
rules (400), the model served (404) and allowed for the key (403). Nothing is generated, stored
or charged to the key's limits: a count is not a use of the model. The count covers what the
model would read (application/turn_input.py, as create reads it): the history of
`previous_response_id` or `conversation`, sealed compaction items opened into their summaries,
the instructions, the input and the function tools' definitions, in the encoding of the model
the request is routed to (o200k for the GPT-4o / 4.1 / 5 / o-series, cl100k otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from xrouter.application.access import AccessControl
from xrouter.application.compaction_items import CompactionItems
from xrouter.application.conversations import Conversations
from xrouter.application.ports import ModelCatalog, ResponseStore
from xrouter.application.turn_input import TurnInput
from xrouter.domain import ingest
from xrouter.domain.keys import ANONYMOUS
from xrouter.domain.responses import InputItem, InputTokens, ResponseRequest, ToolSpec


class ModelTokenCounter(Protocol):
    """Counts tokens in the encoding of a given model (the engine's `TokenCounter` counts every
    request in one encoding)."""

    async def count_request(
        self,
        model: str,
        instructions: str | None,
        items: Sequence[InputItem],
        tools: Sequence[ToolSpec] = (),
    ) -> int:
        """Tokens of the instructions, items and function tool definitions, as `model` (the
        upstream's model name) tokenizes them."""
        ...


class CountInputTokens:
    def __init__(
        self,
        catalog: ModelCatalog,
        counter: ModelTokenCounter,
        store: ResponseStore,
        access: AccessControl | None = None,
        conversations: Conversations | None = None,
        compaction: CompactionItems | None = None,
    ) -> None:
        self._catalog = catalog
        self._counter = counter
        self._turn_input = TurnInput(store, conversations=conversations, compaction=compaction)
        self._access = access

    async def execute(self, request: ResponseRequest, *, api_key: str | None = None) -> InputTokens:
        """The count, or the GatewayError create would raise for the same body and key."""
        access = self._access
        principal = ANONYMOUS if access is None else await access.authenticate(api_key)
        ingest.validate(request)
        route, provider = await self._catalog.resolve(request.model)
        if access is not None:
            routed = f"{route.provider}/{route.upstream_model}"
            access.check_model(principal, request.model, (request.model, routed))
        items = await self._turn_input.items(
            request, ingest.input_items(request), owner=principal.owner, provider=provider
        )
        tokens = await self._counter.count_request(
            route.upstream_model, request.instructions, items, request.tools
        )
        return InputTokens(input_tokens=tokens)
