"""The conversation before a turn, from `previous_response_id` through the response store."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from xrouter.application.ports import ResponseStore
from xrouter.domain.errors import InvalidRequest
from xrouter.domain.responses import InputItem, StoredResponse

MAX_HISTORY_DEPTH = 1_000

LocalTurns = Callable[[str], StoredResponse | None]
"""Turns a transport keeps itself (a WebSocket connection's own responses, `store: false`
ones included), consulted before the store: the response by id, or None."""


class ConversationHistory:
    __slots__ = ("_store",)

    def __init__(self, store: ResponseStore) -> None:
        self._store = store

    async def load(
        self,
        previous_response_id: str | None,
        *,
        owner: str | None = None,
        local: LocalTurns | None = None,
    ) -> list[InputItem]:
        """Every earlier turn's input and output, oldest first. Instructions are not
        inherited (Responses API semantics). Raises InvalidRequest for a missing turn or a
        chain longer than MAX_HISTORY_DEPTH. With an `owner`, another key's turn is missing
        like one that does not exist. `local` turns are found before the store's."""
        turns: list[list[InputItem]] = []
        next_id = previous_response_id
        while next_id is not None:
            if len(turns) >= MAX_HISTORY_DEPTH:
                raise InvalidRequest(
                    f"The conversation is longer than {MAX_HISTORY_DEPTH} turns; "
                    "start a new one or send the history in `input`.",
                    param="previous_response_id",
                )
            stored = local(next_id) if local is not None else None
            if stored is None:
                stored = await self._store.get(next_id, owner=owner)
            if stored is None:
                raise InvalidRequest(
                    f"Previous response with id '{next_id}' not found. It may have expired, "
                    "been deleted, or been created with store=false.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            output = msgspec.convert(msgspec.to_builtins(stored.response.output), list[InputItem])
            turns.append(stored.input_items + output)
            next_id = stored.response.previous_response_id
        return [item for turn in reversed(turns) for item in turn]
