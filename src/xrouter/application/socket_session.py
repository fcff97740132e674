"""Use case: the responses of one WebSocket connection (WebSocket mode of `/v1/responses`).

A connection runs its turns one at a time (the transport queues them) and remembers its own
responses, so that `previous_response_id` continues a chain on the same socket even when
nothing was stored (`store: false`). What it remembers, by the Open Responses rules:

- the most recent response of the connection and the earlier turns of its chain that this
  connection made, and nothing else: a long-lived socket holds one conversation, not all of
  them (older ids are still found in the response store when they were stored), and no
  more than `max_remembered_bytes` of it;
- a continuation turn that fails, before or during generation, evicts the response it
  continued from: continuing from it again on this connection then finds only the store,
  so a `store: false` response is `previous_response_not_found`.

Generation follows the HTTP lifecycle: the transport sets the turn's `DisconnectSignal` when
the socket closes, so a close during ingest fails the turn and a close during generate
detaches it (it still completes and is stored).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import msgspec
from msgspec import structs

from xrouter.application.create_response import CreateResponse
from xrouter.application.execution import DisconnectSignal
from xrouter.application.ports import CallContext
from xrouter.domain import ingest
from xrouter.domain.errors import GatewayError, InvalidRequest
from xrouter.domain.events import (
    ErrorEvent,
    ResponseCompleted,
    ResponseFailed,
    ResponseIncomplete,
    StreamEvent,
)
from xrouter.domain.responses import Response, ResponseRequest, StoredResponse

MAX_REMEMBERED_BYTES = 32 * 1024 * 1024


class SocketSession:
    """One connection's turns and the responses it remembers. Not shared between
    connections; turns must not overlap (the transport runs them in order).

    What it remembers is bounded by `max_remembered_bytes` (the turns' messages and outputs,
    as sent): a chain that outgrows it is forgotten whole, and continuing it is then
    `previous_response_not_found` naming `limit_setting`, unless the store has it."""

    __slots__ = ("_create", "_dropped", "_limit", "_setting", "_turns")

    def __init__(
        self,
        create: CreateResponse,
        *,
        max_remembered_bytes: int = MAX_REMEMBERED_BYTES,
        limit_setting: str = "max_remembered_bytes",
    ) -> None:
        self._create = create
        self._limit = max_remembered_bytes
        self._setting = limit_setting
        self._turns: dict[str, tuple[StoredResponse, int]] = {}
        self._dropped: str | None = None  # the last response forgotten for the limit

    def _local(self, response_id: str) -> StoredResponse | None:
        turn = self._turns.get(response_id)
        return turn[0] if turn is not None else None

    async def run(
        self,
        request: ResponseRequest,
        *,
        size: int,
        disconnect: DisconnectSignal,
        context: CallContext | None = None,
        api_key: str | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The turn's events, as a WebSocket client reads them (`size`: the message's bytes).
        Raises GatewayError when the turn fails before any output (the transport sends it as
        an error message).

        A failure during generation ends with `response.failed` alone: the SSE stream's
        `error` event before it is left out (its sequence number goes to `response.failed`),
        because a WebSocket client ends a turn at the first error or terminal event and would
        read the second as the next turn's."""
        previous = request.previous_response_id
        finished = False
        execution = None
        try:
            execution = await self._create.start(
                structs.replace(request, stream=True),
                disconnect=disconnect,
                context=context,
                api_key=api_key,
                local_turns=self._local,
            )
            failure: ErrorEvent | None = None
            async for event in execution.events():
                if isinstance(event, ErrorEvent):
                    failure = event
                    continue
                if isinstance(event, (ResponseCompleted, ResponseIncomplete)):
                    self._remember(event.response, request, size)
                    finished = True
                elif isinstance(event, ResponseFailed):
                    self._forget(previous)
                    finished = True
                    if failure is not None:
                        event = structs.replace(event, sequence_number=failure.sequence_number)
                yield event
        except GatewayError as error:
            self._forget(previous)
            if (
                previous is not None
                and previous == self._dropped
                and error.code == "previous_response_not_found"
            ):
                raise self._outgrown(previous) from None
            raise
        finally:
            if not finished and execution is not None:
                execution.detach()  # the reader is gone: generation goes on without it

    def _remember(self, response: Response, request: ResponseRequest, size: int) -> None:
        """Keep `response` and the chain behind it that this connection remembers; drop the
        rest (another branch, an earlier conversation), and all of it past the limit."""
        size += len(msgspec.json.encode(response.output))
        stored = StoredResponse(response=response, input_items=ingest.input_items(request))
        kept = {response.id: (stored, size)}
        total = size
        previous = response.previous_response_id
        while previous is not None and previous in self._turns and previous not in kept:
            turn = self._turns[previous]
            kept[previous] = turn
            total += turn[1]
            previous = turn[0].response.previous_response_id
        if total > self._limit:
            self._turns = {}
            self._dropped = response.id
            return
        self._turns = kept

    def _forget(self, response_id: str | None) -> None:
        if response_id is not None:
            self._turns.pop(response_id, None)

    def _outgrown(self, response_id: str) -> InvalidRequest:
        return InvalidRequest(
            f"Previous response with id '{response_id}' not found: this connection's "
            f"conversation outgrew what a connection keeps ({self._limit} bytes, "
            f"{self._setting}) and was not stored. Start a new response with the full input "
            "(or a compacted window), or use store: true.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
