"""Recording a terminal request: the stored response, then its outcome (usage), exactly once."""

from __future__ import annotations

import logging

import msgspec

from xrouter.application.conversations import Conversations
from xrouter.application.generation import Generation
from xrouter.application.lifecycle_trace import LifecycleTracer
from xrouter.application.outcome import RequestOutcome
from xrouter.application.ports import Clock, IdGenerator, OutcomeSink, ResponseStore
from xrouter.application.request_facts import RequestFacts
from xrouter.domain.errors import GatewayError, StorageUnavailable
from xrouter.domain.lifecycle import Action, Lifecycle, Reason
from xrouter.domain.responses import InputItem, ResponseRequest, StoredResponse

log = logging.getLogger("xrouter.engine")

_ITEM_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}


class Recorder:
    __slots__ = ("_clock", "_conversations", "_ids", "_outcomes", "_store", "_tracer")

    def __init__(
        self,
        store: ResponseStore,
        outcomes: OutcomeSink,
        ids: IdGenerator,
        clock: Clock,
        tracer: LifecycleTracer,
        *,
        conversations: Conversations | None = None,
    ) -> None:
        self._conversations = conversations
        self._store = store
        self._outcomes = outcomes
        self._ids = ids
        self._clock = clock
        self._tracer = tracer

    async def record(self, generation: Generation) -> None:
        """Store the terminal response (before the client sees the terminal event, so a
        follow-up `previous_response_id` always finds it) and record its outcome."""
        await self._save(generation)
        await self._append_turn(generation)
        self.record_usage(generation)

    async def _append_turn(self, generation: Generation) -> None:
        """A completed or incomplete turn goes to its `conversation`, before the terminal
        event as its stored response does (application/conversations.py says why not a
        failed one)."""
        response = generation.builder.response
        if (
            self._conversations is None
            or response.conversation is None
            or response.status not in ("completed", "incomplete")
        ):
            return
        await self._conversations.append_turn(
            response.conversation.id,
            generation.own_items,
            response.output,
            owner=generation.principal.owner,
        )

    async def _save(self, generation: Generation) -> None:
        if _not_to_store(generation):
            return
        response = generation.builder.response
        items = with_ids(generation.own_items, self._ids)
        try:
            owner = generation.principal.owner
            await self._store.save(
                StoredResponse(response=response, input_items=items, owner=owner)
            )
            if _not_to_store(generation):  # a DELETE came while the store was writing
                await self._store.delete(response.id)
        except StorageUnavailable as exc:
            # The client still gets its response; only a later previous_response_id or
            # retrieve will miss it.
            log.error("response %s is delivered but not stored: %s", response.id, exc.message)
        except Exception:
            log.exception("could not store response %s", response.id)

    def record_usage(self, generation: Generation) -> None:
        """The lifecycle's RecordUsage and the request's outcome. Synchronous, so it also runs
        when the generation task is being cancelled. Once only: later calls do nothing."""
        lifecycle = generation.lifecycle
        if lifecycle.usage_recorded or not lifecycle.terminal:
            return
        self._tracer.step(lifecycle, Action.RECORD_USAGE, Reason.USAGE_RECORDED)
        facts = generation.facts
        if facts.capture_content:  # the operator's opt-in; references, no copy
            call = generation.call
            facts.content = (call.instructions, call.items, generation.builder.response.output)
        self._report(self._generation_outcome(generation), facts)

    def refused(
        self,
        lifecycle: Lifecycle,
        request: ResponseRequest,
        facts: RequestFacts,
        received_ns: int,
        error: GatewayError,
    ) -> None:
        """The outcome of a request that failed before generate (refused, bad input, client
        gone): no response, no usage, but it counts."""
        self._report(
            RequestOutcome(
                request_id=lifecycle.request_id,
                finished_at=self._clock.now(),
                api=facts.api,
                route=facts.route,
                stream=request.stream,
                model_requested=request.model,
                model=facts.model,
                upstream_model=None,
                provider=facts.provider,
                response_id=None,
                upstream_response_id=None,
                status="failed",
                failed_stage=_stage(lifecycle),
                error_type=error.code or error.type,
                finish_reason=None,
                duration_s=(self._clock.monotonic_ns() - received_ns) / 1e9,
                generate_s=None,
                ttft_s=None,
                temperature=request.temperature,
                top_p=request.top_p,
                max_output_tokens=request.max_output_tokens,
                key_id=facts.key_id,
                key_name=facts.key_name,
            ),
            facts,
        )

    def _generation_outcome(self, generation: Generation) -> RequestOutcome:
        builder = generation.builder
        response = builder.response
        request = generation.call.request
        usage = response.usage
        error = generation.error
        now_ns = self._clock.monotonic_ns()
        first = generation.first_chunk_ns
        return RequestOutcome(
            request_id=generation.request_id,
            finished_at=self._clock.now(),
            api=generation.facts.api,
            route=generation.facts.route,
            stream=request.stream,
            model_requested=request.model,
            model=generation.facts.model,
            upstream_model=builder.upstream_model,
            provider=generation.call.route.provider,
            response_id=response.id,
            upstream_response_id=builder.upstream_response_id,
            status=response.status,
            failed_stage=_stage(generation.lifecycle),
            error_type=(error.code or error.type) if error is not None else None,
            finish_reason=builder.finish_reason,
            duration_s=(now_ns - generation.received_ns) / 1e9,
            generate_s=(now_ns - generation.started_ns) / 1e9,
            ttft_s=(first - generation.received_ns) / 1e9 if first is not None else None,
            input_tokens=usage.input_tokens if usage is not None else None,
            output_tokens=usage.output_tokens if usage is not None else None,
            cached_tokens=usage.input_tokens_details.cached_tokens if usage is not None else None,
            reasoning_tokens=(
                usage.output_tokens_details.reasoning_tokens if usage is not None else None
            ),
            attempts=generation.facts.upstream_attempts,
            fallbacks=tuple(generation.fallbacks.skipped),
            cost=builder.provider_cost,
            temperature=request.temperature,
            top_p=request.top_p,
            max_output_tokens=request.max_output_tokens,
            key_id=generation.facts.key_id,
            key_name=generation.facts.key_name,
        )

    def _report(self, outcome: RequestOutcome, facts: RequestFacts) -> None:
        facts.outcome = outcome
        if outcome.input_tokens is not None:  # for the host's access line
            facts.input_tokens = outcome.input_tokens
            facts.output_tokens = outcome.output_tokens
        try:
            self._outcomes.record(outcome)
        except Exception:  # a sink must not fail the request; the port says it never raises
            log.exception("the outcome sink failed for request %s", outcome.request_id)
        log.debug(
            "%s model=%s status=%s input_tokens=%s output_tokens=%s",
            f"response {outcome.response_id}"
            if outcome.response_id is not None
            else f"request {outcome.request_id}",
            outcome.model or outcome.model_requested,
            outcome.status,
            "-" if outcome.input_tokens is None else outcome.input_tokens,
            "-" if outcome.output_tokens is None else outcome.output_tokens,
        )


def with_ids(items: list[InputItem], ids: IdGenerator) -> list[InputItem]:
    """The input items as stored: each with an id (`input_items` pages by id)."""
    return [
        item
        if item.id is not None
        else msgspec.structs.replace(item, id=ids.new_id(_ITEM_ID_PREFIX.get(item.type, "item")))
        for item in items
    ]


def _not_to_store(generation: Generation) -> bool:
    """store=false, or a DELETE came while it ran: the delete wins."""
    return not generation.call.request.store or generation.deleted


def _stage(lifecycle: Lifecycle) -> str | None:
    """The stage a failure happened in, as a plain string (outcomes hold no enums)."""
    return None if lifecycle.failed_in is None else lifecycle.failed_in.value
