"""Recording a terminal generation: the stored response, then usage, exactly once."""

from __future__ import annotations

import logging

import msgspec

from xrouter.application.generation import Generation
from xrouter.application.lifecycle_trace import LifecycleTracer
from xrouter.application.ports import IdGenerator, ResponseStore, UsageSink
from xrouter.application.request_facts import CURRENT_REQUEST
from xrouter.domain.errors import StorageUnavailable
from xrouter.domain.lifecycle import Action, Reason
from xrouter.domain.responses import StoredResponse

log = logging.getLogger("xrouter.engine")

_ITEM_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}


class Recorder:
    __slots__ = ("_ids", "_store", "_tracer", "_usage_sink")

    def __init__(
        self,
        store: ResponseStore,
        usage_sink: UsageSink,
        ids: IdGenerator,
        tracer: LifecycleTracer,
    ) -> None:
        self._store = store
        self._usage_sink = usage_sink
        self._ids = ids
        self._tracer = tracer

    async def record(self, generation: Generation) -> None:
        """Store the terminal response (before the client sees the terminal event, so a
        follow-up `previous_response_id` always finds it) and record usage."""
        await self._save(generation)
        self.record_usage(generation)

    async def _save(self, generation: Generation) -> None:
        if _not_to_store(generation):
            return
        response = generation.builder.response
        items = [
            item
            if item.id is not None
            else msgspec.structs.replace(
                item, id=self._ids.new_id(_ITEM_ID_PREFIX.get(item.type, "item"))
            )
            for item in generation.own_items
        ]
        try:
            await self._store.save(StoredResponse(response=response, input_items=items))
            if _not_to_store(generation):  # a DELETE came while the store was writing
                await self._store.delete(response.id)
        except StorageUnavailable as exc:
            # The client still gets its response; only a later previous_response_id or
            # retrieve will miss it.
            log.error("response %s is delivered but not stored: %s", response.id, exc.message)
        except Exception:
            log.exception("could not store response %s", response.id)

    def record_usage(self, generation: Generation) -> None:
        """The lifecycle's RecordUsage and the usage sink. Synchronous, so it also runs when
        the generation task is being cancelled. Once only: later calls do nothing."""
        lifecycle = generation.lifecycle
        if lifecycle.usage_recorded or not lifecycle.terminal:
            return
        self._tracer.step(lifecycle, Action.RECORD_USAGE, Reason.USAGE_RECORDED)
        response = generation.builder.response
        if response.usage is not None:
            self._usage_sink.record(
                generation.request_id,
                response.model,
                response.usage,
                response.status,
                generation.builder.provider_cost,
            )
        facts = CURRENT_REQUEST.get()
        if facts is not None:  # for the host's access line
            facts.model = response.model
            facts.provider = generation.call.route.provider
            if response.usage is not None:
                facts.input_tokens = response.usage.input_tokens
                facts.output_tokens = response.usage.output_tokens
        log.debug(
            "response %s model=%s status=%s input_tokens=%s output_tokens=%s",
            response.id,
            response.model,
            response.status,
            response.usage.input_tokens if response.usage else "-",
            response.usage.output_tokens if response.usage else "-",
        )


def _not_to_store(generation: Generation) -> bool:
    """store=false, or a DELETE came while it ran: the delete wins."""
    return not generation.call.request.store or generation.deleted
