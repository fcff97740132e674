"""One request in generate: everything its generation task works with, in one object."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from xrouter.application.execution import Execution
from xrouter.application.fallbacks import FallbackPlan
from xrouter.application.ports import GenerationRequest, KeyAdmission, Provider
from xrouter.application.request_facts import RequestFacts
from xrouter.domain.builder import ResponseBuilder
from xrouter.domain.errors import GatewayError
from xrouter.domain.keys import Principal
from xrouter.domain.lifecycle import Lifecycle
from xrouter.domain.responses import InputItem


@dataclass(slots=True, eq=False, repr=False)
class Generation:
    """The per-request state of a generation. `execution` is what the reader holds; the rest
    is the engine's. `own_items` is this turn's input (stored with the response), `call`
    what the provider is asked (with the history before it)."""

    execution: Execution
    lifecycle: Lifecycle
    builder: ResponseBuilder
    provider: Provider
    call: GenerationRequest
    own_items: list[InputItem]
    input_tokens: int
    principal: Principal
    """Who the request is for (the gateway key, when access control is on)."""
    admission: KeyAdmission | None
    """The key's admission (its concurrency lease goes back when the generation ends)."""
    facts: RequestFacts
    """The request's shared facts (attempts counted by the transport, the outcome)."""
    received_ns: int
    """When the request arrived (monotonic), for durations and time to first token."""
    started_ns: int
    """When generate began (monotonic)."""
    fallbacks: FallbackPlan
    """The models left to try when an attempt fails before any output, and those given up.
    `provider`, `call.route` and `builder` are the current attempt's."""
    attempt_started_ns: int = 0
    """When the current attempt began (monotonic)."""
    answer_sent: bool = False
    """Some of the provider's answer went out (beyond a background response's opening
    events): from then on no other model may be tried."""
    first_chunk_ns: int | None = None
    task: asyncio.Task[None] | None = None
    output_sent: bool = False
    """Whether the client has been sent anything (then a failure is in-band)."""
    pumping: bool = False
    """In the provider-stream phase, where a shutdown stop may interrupt it."""
    started_pump: bool = False
    """The provider-stream phase has begun (it may be over)."""
    deleted: bool = False
    """`DELETE /v1/responses/{id}` came first: the response must not be stored."""
    stop_reason: GatewayError | None = None
    """Why the engine stopped this generation (shutdown), for the failure it records."""
    detached_ns: int | None = None
    """When the client left during generate, if it did."""
    error: GatewayError | None = None
    """The (masked) failure it ended with, if it failed."""
    cancel_requested: bool = False
    """`POST /v1/responses/{id}/cancel` came (background only): it ends `cancelled`."""
    cancel_watch: asyncio.Task[None] | None = None
    """The background watch for a cancel asked of another worker (`CancelRequests`)."""

    def __repr__(self) -> str:
        # Never the call: it carries the client's token (BYOK).
        return f"<Generation {self.response_id} {self.lifecycle.stage}>"

    @property
    def response_id(self) -> str:
        return self.execution.response_id

    @property
    def request_id(self) -> str:
        return self.execution.request_id

    @property
    def background(self) -> bool:
        return self.lifecycle.background

    def cancel(self) -> bool:
        """Cancel a background generation: it ends with status `cancelled` (the model's
        Cancel), its usage still recorded. Interrupts the provider stream when it is in it;
        before it, the stream is never started. False when it is not background, already
        asked, or past the provider stream (it is finishing on its own)."""
        if not self.background or self.cancel_requested or self.lifecycle.terminal:
            return False
        if self.started_pump and not self.pumping:
            return False  # past the stream: finishing
        self.cancel_requested = True
        if self.pumping and self.task is not None and self.stop_reason is None:
            self.task.cancel()
        return True

    def stop(self, reason: GatewayError) -> bool:
        """Interrupt the provider stream; the generation then fails with `reason`. False
        when it is past that point (it is finishing on its own)."""
        if not self.pumping or self.task is None or self.stop_reason is not None:
            return False
        self.stop_reason = reason
        self.task.cancel()
        return True
