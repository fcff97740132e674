"""The execution engine: runs `ingest -> tokenize -> generate(stream) -> done | failed`.

Disconnect semantics (DESIGN.md section 1, formal/xrouter.tla):
- a client that goes away during ingest or tokenize fails the request at once;
- a client that goes away during generate does not stop generation: it runs in its own task
  to its terminal state, usage is recorded and a stored response is completed; only the
  writes to the client stop (the execution is "detached").

The engine knows nothing of HTTP. The caller hands it a `DisconnectSignal` that the transport
sets when the client leaves.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import msgspec

from xrouter.application.execution import DisconnectSignal, Execution
from xrouter.application.idle_timeout import IdleTimeout
from xrouter.application.ports import (
    CallContext,
    Clock,
    GenerationRequest,
    IdGenerator,
    LifecycleListener,
    ModelCatalog,
    Provider,
    ResponseStore,
    TokenCounter,
    UsageSink,
)
from xrouter.domain import ingest
from xrouter.domain.builder import ResponseBuilder
from xrouter.domain.errors import (
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    Overloaded,
    ProviderError,
    ProviderTimeout,
)
from xrouter.domain.events import StreamEvent
from xrouter.domain.lifecycle import Action, Lifecycle, LifecycleEvent, Reason
from xrouter.domain.responses import (
    InputItem,
    ResponseRequest,
    StoredResponse,
    Usage,
)

log = logging.getLogger("xrouter.engine")

MAX_HISTORY_DEPTH = 1_000


@dataclass(frozen=True, slots=True)
class EngineSettings:
    max_inflight: int = 256
    """Requests admitted at once (ingest to terminal); more get 429 with Retry-After."""
    overload_retry_after_s: float = 1.0
    provider_idle_timeout_s: float = 120.0
    """Longest wait for the provider's next event (first or later) before failing 504."""
    stream_buffer: int = 64
    """Batches of events queued between generation and a slow client: backpressure bound."""


_NO_CONTEXT = CallContext()


class _Extras(NamedTuple):
    passthrough: dict[str, Any]
    context: CallContext


class ExecutionEngine:
    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        counter: TokenCounter,
        store: ResponseStore,
        clock: Clock,
        ids: IdGenerator,
        lifecycle_listener: LifecycleListener,
        usage_sink: UsageSink,
        settings: EngineSettings,
    ) -> None:
        self._catalog = catalog
        self._counter = counter
        self._store = store
        self._clock = clock
        self._ids = ids
        self._listener = lifecycle_listener if lifecycle_listener.enabled else None
        self._usage_sink = usage_sink
        self._settings = settings
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def inflight(self) -> int:
        return self._inflight

    # --- lifecycle bookkeeping -----------------------------------------------------------------

    def _step(self, lifecycle: Lifecycle, action: Action, reason: Reason) -> None:
        before, after = lifecycle.step(action)
        if self._listener is not None:
            self._listener.on_event(
                LifecycleEvent(
                    request_id=lifecycle.request_id,
                    action=action,
                    from_stage=before,
                    to_stage=after,
                    reason=reason,
                    at_ns=self._clock.monotonic_ns(),
                )
            )

    def _client_left(self, execution: Execution) -> None:
        lifecycle = execution.lifecycle
        if lifecycle is not None and not lifecycle.terminal and lifecycle.client_connected:
            self._step(lifecycle, Action.DISCONNECT_LATE, Reason.CLIENT_DISCONNECT)
            log.info("client left %s during generate; generation continues", execution.request_id)

    # --- the stages ------------------------------------------------------------------------------

    async def start(
        self,
        request: ResponseRequest,
        *,
        request_id: str | None = None,
        disconnect: DisconnectSignal | None = None,
        passthrough: dict[str, Any] | None = None,
        context: CallContext | None = None,
    ) -> Execution:
        """Ingest and tokenize `request`, then start generation in its own task.

        `passthrough` carries client options the canonical request cannot express;
        `context` the client's token (BYOK) and trace context, for providers.

        Raises GatewayError (bad input, unknown model, overload, client gone) before any
        generation starts; the caller answers with a JSON error.
        """
        request_id = request_id or self._ids.new_id("req")
        lifecycle = Lifecycle(request_id)
        self._step(lifecycle, Action.RECEIVE, Reason.RECEIVED)
        if self._inflight >= self._settings.max_inflight:
            self._step(lifecycle, Action.REJECT, Reason.OVERLOADED)
            raise Overloaded(
                f"The gateway is handling {self._inflight} requests, its configured limit "
                "(XR_MAX_INFLIGHT). Retry after a short wait.",
                retry_after=self._settings.overload_retry_after_s,
            )
        self._inflight += 1
        try:
            extras = _Extras(passthrough or {}, context or _NO_CONTEXT)
            prepared = await self._prepare(request, lifecycle, disconnect, extras)
        except BaseException:
            self._inflight -= 1
            raise
        return self._launch(request, request_id, lifecycle, disconnect, *prepared)

    async def _prepare(
        self,
        request: ResponseRequest,
        lifecycle: Lifecycle,
        disconnect: DisconnectSignal | None,
        extras: _Extras,
    ) -> tuple[Provider, GenerationRequest, list[InputItem], int]:
        """ingest + tokenize, in the caller's task, failed at once if the client leaves.

        No extra task: a disconnect cancels the current task, and the cancellation is turned
        into the model's DisconnectEarly here. A cancellation from elsewhere passes through.
        """
        work = self._ingest_and_tokenize(request, lifecycle, extras)
        if disconnect is None:
            return await work
        if disconnect.is_set():
            work.close()
            return self._disconnected_early(lifecycle)
        task = asyncio.current_task()
        assert task is not None
        cancel = task.cancel
        disconnect.on_set(cancel)
        try:
            return await work
        except asyncio.CancelledError:
            if not disconnect.is_set() or task.uncancel() > 0:
                raise
            return self._disconnected_early(lifecycle)
        finally:
            disconnect.remove(cancel)

    def _disconnected_early(self, lifecycle: Lifecycle) -> NoReturn:
        # The stage in progress fails at once: the model's DisconnectEarly.
        self._step(lifecycle, Action.DISCONNECT_EARLY, Reason.CLIENT_DISCONNECT)
        log.info("client left %s during %s; request failed", lifecycle.request_id, lifecycle.stage)
        raise ClientDisconnected("The client disconnected before generation started.")

    async def _ingest_and_tokenize(
        self, request: ResponseRequest, lifecycle: Lifecycle, extras: _Extras
    ) -> tuple[Provider, GenerationRequest, list[InputItem], int]:
        try:
            ingest.validate(request)
            route, provider = await self._catalog.resolve(request.model)
            own_items = ingest.input_items(request)
            history = await self._history(request.previous_response_id)
        except GatewayError:
            self._step(lifecycle, Action.REJECT, Reason.INVALID_REQUEST)
            raise
        self._step(lifecycle, Action.INGEST, Reason.ROUTED)
        items = history + own_items if history else own_items
        try:
            input_tokens = await self._counter.count_input(request.instructions, items)
        except GatewayError:
            self._step(lifecycle, Action.REJECT, Reason.INVALID_REQUEST)
            raise
        self._step(lifecycle, Action.TOKENIZE, Reason.TOKENIZED)
        call = GenerationRequest(
            route=route,
            request=request,
            items=items,
            instructions=request.instructions,
            passthrough=extras.passthrough,
            context=extras.context,
        )
        return provider, call, own_items, input_tokens

    async def _history(self, previous_response_id: str | None) -> list[InputItem]:
        """The conversation before this turn: every earlier turn's input and output, oldest
        first. Instructions are not inherited (Responses API semantics)."""
        turns: list[list[InputItem]] = []
        next_id = previous_response_id
        while next_id is not None:
            if len(turns) >= MAX_HISTORY_DEPTH:
                raise InvalidRequest(
                    f"The conversation is longer than {MAX_HISTORY_DEPTH} turns; "
                    "start a new one or send the history in `input`.",
                    param="previous_response_id",
                )
            stored = await self._store.get(next_id)
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

    def _launch(
        self,
        request: ResponseRequest,
        request_id: str,
        lifecycle: Lifecycle,
        disconnect: DisconnectSignal | None,
        provider: Provider,
        call: GenerationRequest,
        own_items: list[InputItem],
        input_tokens: int,
    ) -> Execution:
        response_id = self._ids.new_id("resp")
        execution = Execution(request_id, response_id, request.stream, self._settings.stream_buffer)
        execution.lifecycle = lifecycle
        execution.on_detach = lambda: self._client_left(execution)
        builder = ResponseBuilder(
            ingest.initial_response(request, response_id, int(self._clock.now())),
            self._ids.new_id,
        )
        task = asyncio.create_task(
            self._generate(execution, builder, provider, call, own_items, input_tokens)
        )
        execution.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if disconnect is not None:
            disconnect.on_set(execution.detach)
        return execution

    async def _generate(
        self,
        execution: Execution,
        builder: ResponseBuilder,
        provider: Provider,
        call: GenerationRequest,
        own_items: list[InputItem],
        input_tokens: int,
    ) -> None:
        lifecycle = execution.lifecycle
        assert lifecycle is not None
        started = False
        try:
            try:
                await self._pump(execution, builder, provider, call, lifecycle)
            except TimeoutError:
                raise ProviderTimeout(
                    f"The provider '{call.route.provider}' sent nothing for "
                    f"{self._settings.provider_idle_timeout_s:g} s "
                    "(XR_PROVIDER_IDLE_TIMEOUT_S)."
                ) from None
            started = True
            closing = builder.close_items()
            usage = await self._usage(builder, input_tokens)
            terminal = builder.complete(usage, int(self._clock.now()))
            self._step(lifecycle, Action.FINISH, Reason.DONE)
            await self._record(execution, builder, own_items, call.request, lifecycle)
            await execution.send([*closing, terminal])
            await execution.close()
            execution.settle(builder.response, None)
        except asyncio.CancelledError:
            # Only shutdown cancels generation; leave the lifecycle failed, not dangling.
            if not lifecycle.terminal:
                shutdown: GatewayError = ProviderError("The gateway shut down during generation.")
                await self._fail(
                    execution,
                    builder,
                    lifecycle,
                    call,
                    own_items,
                    input_tokens,
                    shutdown,
                    started or builder.chunks > 0,
                )
            raise
        except Exception as exc:
            if lifecycle.terminal:  # failed after the terminal step: only the log can tell
                log.exception("response %s failed after it was terminal", execution.response_id)
                execution.settle(builder.response, None)
                return
            error = exc if isinstance(exc, GatewayError) else self._unexpected(call, exc)
            await self._fail(
                execution,
                builder,
                lifecycle,
                call,
                own_items,
                input_tokens,
                error,
                started or builder.chunks > 0,
            )
        finally:
            self._inflight -= 1

    async def _pump(
        self,
        execution: Execution,
        builder: ResponseBuilder,
        provider: Provider,
        call: GenerationRequest,
        lifecycle: Lifecycle,
    ) -> None:
        """Provider deltas -> builder -> client, with an idle timeout on the provider only."""
        pending: list[StreamEvent] | None = builder.start()  # sent with the first output
        stream = provider.stream(call)
        try:
            async with IdleTimeout(self._settings.provider_idle_timeout_s) as idle:
                async for delta in stream:
                    idle.touch()
                    chunks_before = builder.chunks
                    events = builder.feed(delta)
                    if builder.chunks != chunks_before:
                        self._step(lifecycle, Action.EMIT_CHUNK, Reason.CHUNK)
                    if pending is not None:
                        if builder.chunks == 0:
                            pending.extend(events)
                            continue
                        events = pending + events
                        pending = None
                    if events:
                        await execution.send(events, idle)
        finally:
            await _aclose(stream)
        if pending is not None:
            # Finished without output: still a valid stream (created ... completed).
            await execution.send(pending)

    async def _usage(self, builder: ResponseBuilder, input_tokens: int) -> Usage:
        if builder.provider_usage is not None:
            return builder.provider_usage
        output_tokens = await self._counter.count_text(builder.generated_text())
        return Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )

    async def _fail(
        self,
        execution: Execution,
        builder: ResponseBuilder,
        lifecycle: Lifecycle,
        call: GenerationRequest,
        own_items: list[InputItem],
        input_tokens: int,
        error: GatewayError,
        output_started: bool,
    ) -> None:
        action = Action.TIME_OUT if isinstance(error, ProviderTimeout) else Action.PROVIDER_FAIL
        reason = Reason.TIMEOUT if action is Action.TIME_OUT else Reason.PROVIDER_ERROR
        self._step(lifecycle, action, reason)
        log.warning("response %s failed in generate: %s", execution.response_id, error.message)
        try:
            usage = await self._usage(builder, input_tokens)
        except Exception:  # counting must not hide the original failure
            usage = None
        events = builder.fail(error, usage)
        await self._record(execution, builder, own_items, call.request, lifecycle)
        if output_started:
            await execution.send(events)
            await execution.close()
        else:
            # Nothing was sent yet: the client gets a plain JSON error with the right status.
            await execution.fail_before_output(error)
        execution.settle(None, error)

    async def _record(
        self,
        execution: Execution,
        builder: ResponseBuilder,
        own_items: list[InputItem],
        request: ResponseRequest,
        lifecycle: Lifecycle,
    ) -> None:
        """Store the terminal response (before the client sees the terminal event, so a
        follow-up `previous_response_id` always finds it) and record usage exactly once."""
        response = builder.response
        if request.store:
            items = [
                item
                if item.id is not None
                else msgspec.structs.replace(
                    item, id=self._ids.new_id(_ITEM_ID_PREFIX.get(item.type, "item"))
                )
                for item in own_items
            ]
            try:
                await self._store.save(StoredResponse(response=response, input_items=items))
            except Exception:
                log.exception("could not store response %s", response.id)
        self._step(lifecycle, Action.RECORD_USAGE, Reason.USAGE_RECORDED)
        if response.usage is not None:
            self._usage_sink.record(
                execution.request_id,
                response.model,
                response.usage,
                response.status,
                builder.provider_cost,
            )
        log.debug(
            "response %s model=%s status=%s input_tokens=%s output_tokens=%s",
            response.id,
            response.model,
            response.status,
            response.usage.input_tokens if response.usage else "-",
            response.usage.output_tokens if response.usage else "-",
        )

    def _unexpected(self, call: GenerationRequest, exc: Exception) -> GatewayError:
        log.error("provider %s raised unexpectedly", call.route.provider, exc_info=exc)
        return ProviderError(
            f"The provider '{call.route.provider}' failed unexpectedly; see the gateway log."
        )

    async def aclose(self, grace_s: float = 10.0) -> None:
        """Let in-flight generations finish (up to `grace_s`), then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


_ITEM_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}


async def _aclose(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
