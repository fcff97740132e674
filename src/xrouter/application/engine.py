"""The execution engine: runs `ingest -> tokenize -> generate(stream) -> done | failed`.

Disconnect semantics (DESIGN.md section 1, formal/xrouter.tla):
- a client that goes away during ingest or tokenize fails the request at once;
- a client that goes away during generate does not stop generation: it runs in its own task
  to its terminal state, usage is recorded and a stored response is completed; only the
  writes to the client stop (the execution is "detached").

The engine composes small parts: `Admission` (who may start), `TurnInput` (what the model reads
before the request's input), `Pump` (the generation task) and `Recorder` (store and usage), with
`RunningGenerations` as the registry of what is generating now. It knows nothing of HTTP: the
caller hands it a `DisconnectSignal` that the transport sets when the client leaves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

from xrouter.application.access import AccessControl
from xrouter.application.admission import Admission
from xrouter.application.background import Background
from xrouter.application.compaction_items import CompactionItems
from xrouter.application.conversations import Conversations
from xrouter.application.execution import DisconnectSignal, Execution
from xrouter.application.fallbacks import FallbackChains, FallbackPlan
from xrouter.application.generation import Generation
from xrouter.application.history import LocalTurns
from xrouter.application.lifecycle_trace import LifecycleTracer
from xrouter.application.ports import (
    CallContext,
    Clock,
    GenerationRequest,
    IdGenerator,
    KeyAdmission,
    LifecycleListener,
    ModelCatalog,
    OutcomeSink,
    Provider,
    ResponseStore,
    TokenCounter,
)
from xrouter.application.pump import Pump
from xrouter.application.recording import Recorder
from xrouter.application.request_facts import CURRENT_REQUEST, RequestFacts
from xrouter.application.running import RunningGenerations
from xrouter.application.turn_input import TurnInput
from xrouter.domain import ingest
from xrouter.domain.builder import ResponseBuilder
from xrouter.domain.errors import (
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    ModelNotAllowed,
    RateLimited,
    ServerShuttingDown,
    Unauthorized,
)
from xrouter.domain.keys import Principal
from xrouter.domain.lifecycle import Action, Lifecycle, Reason
from xrouter.domain.responses import InputItem, ResponseRequest
from xrouter.domain.secrets import SecretMasker

log = logging.getLogger("xrouter.engine")

STOP_GRACE_S = 2.0
"""After the shutdown grace, how long stopped generations get to record their failure and
hand it to their clients before they are cancelled outright."""


def _field_name(name: str) -> str:
    return name


@dataclass(frozen=True, slots=True)
class EngineSettings:
    max_inflight: int = 256
    """Requests admitted at once (ingest to terminal); more get 429 with Retry-After."""
    overload_retry_after_s: float = 1.0
    generation_timeout_s: float = 900.0
    """Total deadline of one generation, streamed or not, client present or gone (504)."""
    stream_buffer: int = 64
    """Batches of events queued between generation and a slow client: backpressure bound."""
    setting_names: Callable[[str], str] = _field_name
    """The operator's name of a gateway setting, from its field ("max_inflight"), for the
    messages that say which setting to change. How settings are spelled is the
    configuration's business: the composition root gives its names; unset, a field is named
    as it is."""


_NO_CONTEXT = CallContext()


class _Prepared(NamedTuple):
    provider: Provider
    call: GenerationRequest
    own_items: list[InputItem]
    input_tokens: int
    principal: Principal
    admission: KeyAdmission | None
    fallbacks: FallbackPlan


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
        outcome_sink: OutcomeSink,
        settings: EngineSettings,
        masker: SecretMasker | None = None,
        access: AccessControl | None = None,
        compaction: CompactionItems | None = None,
        conversations: Conversations | None = None,
        background: Background | None = None,
        fallbacks: FallbackChains | None = None,
    ) -> None:
        """`access`: gateway keys, model permissions and per-key limits (gateway keys on);
        None: auth off. `compaction`: opens the gateway's sealed compaction items (None: no
        key, every compaction item is refused unless the upstream compacts natively).
        `fallbacks`: the configured fallback chains (None: only a request's own `models`)."""
        # What the model reads before the request's input: history, a conversation's items
        # (`conversations` None refuses `conversation`, 400), sealed compaction items opened.
        self._turn_input = TurnInput(store, conversations=conversations, compaction=compaction)
        self._background = background
        """`background: true` responses (stored at once, events logged, cancel): None refuses
        them (400)."""
        self._catalog = catalog
        self._counter = counter
        self._clock = clock
        self._ids = ids
        self._settings = settings
        self._access = access or AccessControl.off(clock)
        self._fallbacks = fallbacks or FallbackChains(catalog, self._access)
        self._tracer = LifecycleTracer(lifecycle_listener, clock)
        self._admission = Admission(
            settings.max_inflight,
            settings.overload_retry_after_s,
            max_inflight_setting=settings.setting_names("max_inflight"),
        )
        self._recorder = Recorder(
            store, outcome_sink, ids, clock, self._tracer, conversations=conversations
        )
        self._pump = Pump(
            counter=counter,
            clock=clock,
            tracer=self._tracer,
            recorder=self._recorder,
            masker=masker or SecretMasker.empty(),
            generation_timeout_s=settings.generation_timeout_s,
            generation_timeout_setting=settings.setting_names("generation_timeout_s"),
            background=background,
        )
        self.running = RunningGenerations()
        """The generations running now; `GetResponse.delete` marks deleted ones here."""

    @property
    def inflight(self) -> int:
        return self._admission.inflight

    # --- the stages ------------------------------------------------------------------------------

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
        """Ingest and tokenize `request`, then start generation in its own task.

        `passthrough` carries client options the canonical request cannot express;
        `context` the client's token (BYOK) and trace context, for providers; `api` names
        the API the client spoke (`responses`, `chat`) in the request's outcome; `api_key`
        is the gateway key the client presented (checked when access control is on);
        `local_turns` the responses the transport keeps itself (a WebSocket connection's),
        found before the store's when `previous_response_id` is followed.

        Raises GatewayError (bad input, unknown model, overload, shutting down, client gone)
        before any generation starts; the caller answers with a JSON error.
        """
        received_ns = self._clock.monotonic_ns()
        lifecycle = Lifecycle(request_id or self._ids.new_id("req"), background=request.background)
        # The host's facts when there is a host; outside one (tests, embedding) our own.
        facts = CURRENT_REQUEST.get() or RequestFacts(lifecycle.request_id)
        facts.api = api
        self._tracer.step(
            lifecycle, Action.RECEIVE, Reason.BACKGROUND if request.background else Reason.RECEIVED
        )
        try:
            self._admission.admit()
        except GatewayError as refused:
            # Over the limit (429), or shutting down (503): refused before ingest either way.
            reason = (
                Reason.SHUTTING_DOWN
                if isinstance(refused, ServerShuttingDown)
                else Reason.OVERLOADED
            )
            self._refuse(lifecycle, Action.REJECT, reason, request, facts, received_ns, refused)
            raise
        try:
            work = self._ingest_and_tokenize(
                request,
                lifecycle,
                passthrough or {},
                context or _NO_CONTEXT,
                facts,
                received_ns,
                api_key,
                local_turns,
            )
            prepared = await self._race_disconnect(work, lifecycle, disconnect)
        except ClientDisconnected as gone:
            self._admission.release()
            self._recorder.refused(lifecycle, request, facts, received_ns, gone)
            raise
        except BaseException:
            self._admission.release()
            raise
        execution = self._launch(request, lifecycle, disconnect, prepared, facts, received_ns)
        if request.background:
            # Answered once stored as in progress (a poll finds it); without `stream` the
            # generation has detached its client by then (Pump._generate).
            await execution.accepted()
        return execution

    def _refuse(
        self,
        lifecycle: Lifecycle,
        action: Action,
        reason: Reason,
        request: ResponseRequest,
        facts: RequestFacts,
        received_ns: int,
        error: GatewayError,
    ) -> None:
        """A request that ends before generate: its lifecycle step, then its outcome."""
        self._tracer.step(lifecycle, action, reason)
        self._recorder.refused(lifecycle, request, facts, received_ns, error)

    async def _race_disconnect(
        self,
        work: Coroutine[Any, Any, _Prepared],
        lifecycle: Lifecycle,
        disconnect: DisconnectSignal | None,
    ) -> _Prepared:
        """Run ingest + tokenize in the caller's task, failed at once if the client leaves.

        No extra task: a disconnect cancels the current task, and the cancellation is turned
        into the model's DisconnectEarly here. A cancellation from elsewhere passes through.
        """
        if disconnect is None:
            return await work
        if disconnect.is_set():
            work.close()
            self._disconnected_early(lifecycle)
        task = asyncio.current_task()
        assert task is not None
        cancel = task.cancel
        disconnect.on_set(cancel)
        try:
            return await work
        except asyncio.CancelledError:
            if not disconnect.is_set() or task.uncancel() > 0:
                raise
            self._disconnected_early(lifecycle)
        finally:
            disconnect.remove(cancel)

    def _disconnected_early(self, lifecycle: Lifecycle) -> NoReturn:
        # The stage in progress fails at once: the model's DisconnectEarly.
        self._tracer.step(lifecycle, Action.DISCONNECT_EARLY, Reason.CLIENT_DISCONNECT)
        log.info("client left %s during %s; request failed", lifecycle.request_id, lifecycle.stage)
        raise ClientDisconnected("The client disconnected before generation started.")

    async def _ingest_and_tokenize(
        self,
        request: ResponseRequest,
        lifecycle: Lifecycle,
        passthrough: dict[str, Any],
        context: CallContext,
        facts: RequestFacts,
        received_ns: int,
        api_key: str | None,
        local_turns: LocalTurns | None = None,
    ) -> _Prepared:
        def refuse(reason: Reason, refused: GatewayError) -> None:
            self._refuse(lifecycle, Action.REJECT, reason, request, facts, received_ns, refused)

        access = self._access
        try:
            principal = await access.authenticate(api_key)
        except GatewayError as refused:  # a 401, or the key store unavailable (503)
            wrong_key = isinstance(refused, Unauthorized)
            refuse(Reason.UNAUTHENTICATED if wrong_key else Reason.INVALID_REQUEST, refused)
            raise
        facts.key_id, facts.key_name = principal.owner, principal.key_name
        try:
            ingest.validate(request)
            if request.background and self._background is None:
                raise InvalidRequest(
                    "This gateway does not run background responses; drop `background`.",
                    param="background",
                    code="invalid_value",
                )
            route, provider = await self._catalog.resolve(request.model)
            facts.model = f"{route.provider}/{route.upstream_model}"
            facts.provider = route.provider
            facts.upstream_model = route.upstream_model
        except GatewayError as refused:
            refuse(Reason.INVALID_REQUEST, refused)
            raise
        try:
            access.check_model(principal, request.model, (request.model, facts.model))
            fallbacks = await self._fallbacks.plan(request, route, principal)
        except GatewayError as refused:
            denied = isinstance(refused, ModelNotAllowed)
            refuse(Reason.MODEL_NOT_ALLOWED if denied else Reason.INVALID_REQUEST, refused)
            raise
        try:
            own_items = ingest.input_items(request)
            items = await self._turn_input.items(
                request, own_items, owner=principal.owner, provider=provider, local=local_turns
            )
        except GatewayError as refused:
            refuse(Reason.INVALID_REQUEST, refused)
            raise
        try:
            admission = await access.admit(principal, facts.note_rate)
        except GatewayError as refused:
            limited = isinstance(refused, RateLimited)
            refuse(Reason.RATE_LIMITED if limited else Reason.INVALID_REQUEST, refused)
            raise
        try:
            self._tracer.step(lifecycle, Action.INGEST, Reason.ROUTED)
            try:
                input_tokens = await self._counter.count_input(request.instructions, items)
            except GatewayError as refused:
                refuse(Reason.INVALID_REQUEST, refused)
                raise
            await access.charge(principal, input_tokens)
        except BaseException:  # refused or cancelled after admission: its lease goes back
            access.finish(principal, admission)
            raise
        self._tracer.step(lifecycle, Action.TOKENIZE, Reason.TOKENIZED)
        call = GenerationRequest(
            route=route,
            request=request,
            items=items,
            instructions=request.instructions,
            passthrough=passthrough,
            context=context,
        )
        return _Prepared(provider, call, own_items, input_tokens, principal, admission, fallbacks)

    def _launch(
        self,
        request: ResponseRequest,
        lifecycle: Lifecycle,
        disconnect: DisconnectSignal | None,
        prepared: _Prepared,
        facts: RequestFacts,
        received_ns: int,
    ) -> Execution:
        response_id = self._ids.new_id("resp")
        execution = Execution(
            lifecycle.request_id, response_id, request.stream, self._settings.stream_buffer
        )
        generation = Generation(
            execution=execution,
            lifecycle=lifecycle,
            builder=ResponseBuilder(
                ingest.initial_response(request, response_id, int(self._clock.now())),
                self._ids.new_id,
            ),
            provider=prepared.provider,
            call=prepared.call,
            own_items=prepared.own_items,
            input_tokens=prepared.input_tokens,
            principal=prepared.principal,
            admission=prepared.admission,
            facts=facts,
            received_ns=received_ns,
            started_ns=self._clock.monotonic_ns(),
            fallbacks=prepared.fallbacks,
        )
        generation.attempt_started_ns = generation.started_ns
        facts.hold()  # the request is not over until generation is, client or no client
        execution.on_detach = lambda: self._pump.client_left(generation)
        self.running.add(generation)
        generation.task = asyncio.create_task(self._run(generation))
        if disconnect is not None:
            disconnect.on_set(execution.detach)
        return execution

    async def _run(self, generation: Generation) -> None:
        # This task's own copy of the context: the transport finds the facts here (attempts).
        CURRENT_REQUEST.set(generation.facts)
        try:
            await self._pump.run(generation)
            usage = generation.builder.response.usage
            if usage is not None:  # the output's share of the key's tokens per minute
                await self._access.charge(generation.principal, usage.output_tokens)
        finally:
            self._access.finish(generation.principal, generation.admission)
            generation.facts.release()
            # on_detach closes over the generation, which holds the execution: a cycle that
            # kept every finished request (its builder, request and call) alive until a GC
            # pass. Past this point a late detach has no generation to report anyway.
            generation.execution.on_detach = None
            self.running.discard(generation)
            self._admission.release()

    # --- shutdown --------------------------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Graceful shutdown, for the server's SIGTERM / lifespan-shutdown path.

        1. At once: no more admissions; `start` raises `ServerShuttingDown` (HTTP 503, code
           `server_shutting_down`).
        2. Running generations may finish on their own for up to `grace_s` seconds.
        3. Those still running are failed with `ServerShuttingDown`: a streaming client gets
           `error` + `response.failed` (a client still waiting for its first output, a JSON
           503), the response is stored as failed and usage is recorded (lifecycle
           `ProviderFail`). They get `STOP_GRACE_S` to do so, then whatever is left is
           cancelled.

        Returns when no generation task is left. The failure events are then queued for
        their clients: let open responses drain (e.g. stop the HTTP server after this
        returns, with its own short grace) so they reach the sockets. Idempotent.
        """
        self._admission.close()
        tasks = {g.task for g in self.running if g.task is not None}
        if not tasks:
            return
        log.info("shutting down: %d generations running, %g s grace", len(tasks), grace_s)
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        if not pending:
            return
        for generation in self.running:
            generation.stop(
                ServerShuttingDown(
                    f"The gateway shut down during generation, after waiting {grace_s:g} s "
                    f"for it ({self._settings.setting_names('shutdown_grace_s')}). "
                    "Retry the request."
                )
            )
        _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
