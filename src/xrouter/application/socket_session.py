"""Use case: the responses of one WebSocket connection (WebSocket mode of `/v1/responses`).

A connection runs its turns one at a time (the transport queues them) and remembers its own
responses, so that `previous_response_id` continues a chain on the same socket even when
nothing was stored (`store: false`). What it remembers, by the Open Responses rules:

- the most recent response of the connection and the earlier turns of its chain that this
  connection made, and nothing else: a long-lived socket holds one conversation, not all of
  them (older ids are still found in the response store when they were stored);
- a continuation turn that fails, before or during generation, evicts the response it
  continued from: continuing from it again on this connection then finds only the store,
  so a `store: false` response is `previous_response_not_found`.

Generation follows the HTTP lifecycle: the transport sets the turn's `DisconnectSignal` when
the socket closes, so a close during ingest fails the turn and a close during generate
detaches it (it still completes and is stored).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from msgspec import structs

from xrouter.application.create_response import CreateResponse
from xrouter.application.execution import DisconnectSignal
from xrouter.application.ports import CallContext
from xrouter.domain import ingest
from xrouter.domain.errors import GatewayError
from xrouter.domain.events import (
    ErrorEvent,
    ResponseCompleted,
    ResponseFailed,
    ResponseIncomplete,
    StreamEvent,
)
from xrouter.domain.responses import Response, ResponseRequest, StoredResponse


class SocketSession:
    """One connection's turns and the responses it remembers. Not shared between
    connections; turns must not overlap (the transport runs them in order)."""

    __slots__ = ("_create", "_turns")

    def __init__(self, create: CreateResponse) -> None:
        self._create = create
        self._turns: dict[str, StoredResponse] = {}

    def remembered(self, response_id: str) -> StoredResponse | None:
        """A response this connection made and still remembers, or None."""
        return self._turns.get(response_id)

    async def run(
        self,
        request: ResponseRequest,
        *,
        disconnect: DisconnectSignal,
        context: CallContext | None = None,
        api_key: str | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The turn's events, as a WebSocket client reads them. Raises GatewayError when the
        turn fails before any output (the transport sends it as an error message).

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
                local_turns=self._turns.get,
            )
            failure: ErrorEvent | None = None
            async for event in execution.events():
                if isinstance(event, ErrorEvent):
                    failure = event
                    continue
                if isinstance(event, (ResponseCompleted, ResponseIncomplete)):
                    self._remember(event.response, request)
                    finished = True
                elif isinstance(event, ResponseFailed):
                    self._forget(previous)
                    finished = True
                    if failure is not None:
                        event = structs.replace(event, sequence_number=failure.sequence_number)
                yield event
        except GatewayError:
            self._forget(previous)
            raise
        finally:
            if not finished and execution is not None:
                execution.detach()  # the reader is gone: generation goes on without it

    def _remember(self, response: Response, request: ResponseRequest) -> None:
        """Keep `response` and the chain behind it that this connection remembers; drop the
        rest (another branch, an earlier conversation)."""
        kept = {
            response.id: StoredResponse(response=response, input_items=ingest.input_items(request))
        }
        previous = response.previous_response_id
        while previous is not None and previous in self._turns and previous not in kept:
            turn = self._turns[previous]
            kept[previous] = turn
            previous = turn.response.previous_response_id
        self._turns = kept

    def _forget(self, response_id: str | None) -> None:
        if response_id is not None:
            self._turns.pop(response_id, None)
