"""What the model reads on a turn: the earlier turns, then the request's own input.

One place for it, because creating a response (application/engine.py) and counting its input
tokens (application/count_input_tokens.py) must agree on it: the history of
`previous_response_id` (a connection's own turns first, on a WebSocket) or of `conversation`,
the check that every tool output answers a call, and sealed compaction items opened into
their summaries.
"""

from __future__ import annotations

from xrouter.application.compaction_items import CompactionItems
from xrouter.application.conversations import Conversations, conversation_history
from xrouter.application.history import ConversationHistory, LocalTurns
from xrouter.application.ports import Provider, ResponseStore
from xrouter.domain import ingest
from xrouter.domain.responses import InputItem, ResponseRequest


class TurnInput:
    __slots__ = ("_compaction", "_conversations", "_history")

    def __init__(
        self,
        store: ResponseStore,
        *,
        conversations: Conversations | None = None,
        compaction: CompactionItems | None = None,
    ) -> None:
        """`conversations` None refuses `conversation` (400); `compaction` None opens no
        sealed item (each is refused unless the upstream compacts natively)."""
        self._history = ConversationHistory(store)
        self._conversations = conversations
        self._compaction = compaction or CompactionItems.without_key()

    async def items(
        self,
        request: ResponseRequest,
        own_items: list[InputItem],
        *,
        owner: str | None,
        provider: Provider,
        local: LocalTurns | None = None,
    ) -> list[InputItem]:
        """Every item the model reads, oldest first. `local`: the turns a WebSocket
        connection keeps itself, looked up before the store. Raises InvalidRequest (a
        missing earlier turn, a tool output with no call, an item that does not open)."""
        history = await self._history.load(request.previous_response_id, owner=owner, local=local)
        if request.conversation is not None:  # never with previous_response_id
            history = await conversation_history(
                self._conversations, request, incoming=own_items, owner=owner
            )
        ingest.check_tool_outputs(history, own_items)
        items = history + own_items if history else own_items
        # Sealed compaction items become their summaries: no upstream reads them.
        return self._compaction.expand(items, own_from=len(history), owner=owner, provider=provider)
