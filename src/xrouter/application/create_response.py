"""Use case: create a response (`POST /v1/responses`), streamed or not."""

from __future__ import annotations

from typing import Any

from xrouter.application.engine import ExecutionEngine
from xrouter.application.execution import DisconnectSignal, Execution
from xrouter.application.history import LocalTurns
from xrouter.application.ports import CallContext
from xrouter.domain.responses import Response, ResponseRequest


class CreateResponse:
    def __init__(self, engine: ExecutionEngine) -> None:
        self._engine = engine

    async def start(
        self,
        request: ResponseRequest,
        *,
        request_id: str | None = None,
        disconnect: DisconnectSignal | None = None,
        passthrough: dict[str, Any] | None = None,
        context: CallContext | None = None,
        api: str = "responses",
        api_key: str | None = None,
        local_turns: LocalTurns | None = None,
    ) -> Execution:
        """Admit the request and start generating. Read the execution's `events()` (stream)
        or its `result()` (non-stream). Raises GatewayError before generation starts.

        The request's own extension options (`provider`, `models`...) ride along as
        passthrough, under the caller's `passthrough` (Chat Completions options).
        `local_turns`: responses a transport keeps itself (a WebSocket connection's)."""
        return await self._engine.start(
            request,
            request_id=request_id,
            disconnect=disconnect,
            passthrough={**request.passthrough(), **(passthrough or {})},
            context=context,
            api=api,
            api_key=api_key,
            local_turns=local_turns,
        )

    async def run(self, request: ResponseRequest, *, request_id: str | None = None) -> Response:
        """The non-stream answer: the same event stream, folded into the final response."""
        execution = await self.start(request, request_id=request_id)
        return await execution.result()
