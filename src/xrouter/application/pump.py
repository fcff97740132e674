"""The generation task: provider deltas -> `ResponseBuilder` -> the client, to done | failed.

Runs in its own task (a client that leaves during generate does not stop it), under one total
deadline (`generation_timeout_s`, named in messages as the operator sets it). Timeouts of one
upstream call (connect, first byte, idle, total) are the transport's: a `ProviderTimeout` a
provider raises keeps its own message, and no other exception of a provider is turned into a
timeout.
"""

from __future__ import annotations

import asyncio
import logging

from msgspec import structs

from xrouter.application.background import Background
from xrouter.application.fallbacks import Candidate
from xrouter.application.generation import Generation
from xrouter.application.lifecycle_trace import LifecycleTracer
from xrouter.application.ports import Clock, TokenCounter
from xrouter.application.recording import Recorder
from xrouter.domain.errors import GatewayError, ProviderError, ProviderTimeout, ServerShuttingDown
from xrouter.domain.events import StreamEvent
from xrouter.domain.fallbacks import FallbackReason, SkippedAttempt
from xrouter.domain.lifecycle import Action, Reason
from xrouter.domain.responses import Usage
from xrouter.domain.secrets import SecretMasker

log = logging.getLogger("xrouter.engine")


class _CancelAsked(Exception):
    """A background response was cancelled before its provider stream began."""


class Pump:
    """Drives each `Generation` from its first provider delta to its terminal state."""

    def __init__(
        self,
        *,
        counter: TokenCounter,
        clock: Clock,
        tracer: LifecycleTracer,
        recorder: Recorder,
        masker: SecretMasker,
        generation_timeout_s: float,
        generation_timeout_setting: str,
        background: Background | None = None,
    ) -> None:
        """`generation_timeout_setting`: the operator's name of the deadline, for the messages
        and log lines that mention it. `background`: what `background: true` responses need
        (stored at once, events logged, cancels watched)."""
        self._background = background
        self._counter = counter
        self._clock = clock
        self._tracer = tracer
        self._recorder = recorder
        self._masker = masker
        self._timeout_s = generation_timeout_s
        self._timeout_setting = generation_timeout_setting

    async def run(self, generation: Generation) -> None:
        """The whole of generate. Never raises but for a cancellation it did not ask for."""
        lifecycle = generation.lifecycle
        try:
            await self._generate(generation)
            await self._finish(generation)
        except asyncio.CancelledError:
            if lifecycle.terminal:  # cancelled while recording: usage still counts, once
                self._recorder.record_usage(generation)
                raise
            stop = generation.stop_reason
            if stop is None and generation.cancel_requested:  # the client's cancel: handled
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()
                await self._cancel(generation)
                return
            if stop is not None:  # the engine's own stop (shutdown): handled here
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()
            await self._fail(generation, stop or _shut_down())
            if stop is None:
                raise
        except _CancelAsked:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()
            await self._cancel(generation)
        except Exception as exc:
            if lifecycle.terminal:  # failed after the terminal step: only the log can tell
                log.exception("response %s failed after it was terminal", generation.response_id)
                self._recorder.record_usage(generation)
                return
            error = exc if isinstance(exc, GatewayError) else self._unexpected(generation, exc)
            await self._fail(generation, error)
        finally:
            self._end(generation)

    async def _generate(self, generation: Generation) -> None:
        """The provider stream under the total deadline (a background response is stored as
        in progress first, its opening events logged and sent at once)."""
        if generation.background and self._background is not None:
            opening = generation.builder.start()
            await self._background.begin(generation, opening)
            generation.output_sent = True
            if not generation.call.request.stream:
                # Answered already (the in-progress snapshot): detached from the start.
                self.client_left(generation, Reason.BACKGROUND)
                generation.execution.detach()
            await generation.execution.send(opening)
        generation.started_pump = True
        generation.pumping = True
        try:
            if generation.cancel_requested:
                raise _CancelAsked
            async with asyncio.timeout(self._timeout_s) as deadline:
                await self._pump(generation)
        except TimeoutError:
            if not deadline.expired():
                raise  # a provider's own TimeoutError: unexpected, not the deadline
            raise ProviderTimeout(
                f"The generation ran for {self._timeout_s:g} s, the longest this gateway "
                f"allows ({self._timeout_setting}), and was stopped. Ask for a shorter answer "
                "(max_output_tokens) or raise the limit."
            ) from None
        finally:
            generation.pumping = False

    async def _pump(self, generation: Generation) -> None:
        """The attempts: the first model, then each fallback, as long as an attempt fails
        in a way another model can fix before any of its output went out."""
        while True:
            try:
                await self._attempt(generation)
                return
            except GatewayError as error:
                if generation.answer_sent:
                    raise
                following = generation.fallbacks.next_for(error)
                if following is None:
                    raise
                self._next_attempt(generation, error, *following)

    def _next_attempt(
        self,
        generation: Generation,
        error: GatewayError,
        candidate: Candidate,
        reason: FallbackReason,
    ) -> None:
        """Give up the current model (the model's NextAttempt) and make `candidate` the one
        the next attempt calls; the response then names it."""
        now_ns = self._clock.monotonic_ns()
        route = generation.call.route
        failed_model = generation.builder.response.model
        generation.fallbacks.skipped.append(
            SkippedAttempt(
                model=failed_model,
                provider=route.provider,
                status=error.upstream_status or error.status,
                code=error.code,
                reason=reason,
                duration_s=(now_ns - generation.attempt_started_ns) / 1e9,
            )
        )
        masked = self._masker.including(generation.call.context.client_token).mask_error(error)
        log.warning(
            "response %s: %s failed before any output (%s, %s: %s); trying %s",
            generation.response_id,
            failed_model,
            reason,
            error.status,
            masked.message,
            candidate.model,
        )
        self._tracer.step(generation.lifecycle, Action.NEXT_ATTEMPT, Reason.FALLBACK)
        generation.provider = candidate.provider
        generation.call = structs.replace(generation.call, route=candidate.route)
        generation.builder = generation.builder.next_attempt(
            candidate.model, keep_sequence=generation.output_sent
        )
        generation.attempt_started_ns = now_ns
        facts = generation.facts
        facts.model = f"{candidate.route.provider}/{candidate.route.upstream_model}"
        facts.provider = candidate.route.provider
        facts.upstream_model = candidate.route.upstream_model
        facts.skipped_attempts = generation.fallbacks.skipped

    async def _attempt(self, generation: Generation) -> None:
        """One model's attempt: its stream relayed, until it finishes or fails."""
        builder = generation.builder
        # The opening events wait for the first output: until then a failure is still a
        # plain JSON error with its own status.
        pending: list[StreamEvent] | None = None if generation.output_sent else builder.start()
        stream = generation.provider.stream(generation.call)
        try:
            async for deltas in stream:
                if generation.cancel_requested:
                    # The task was cancelled too; this catches a cancellation some library
                    # on the way swallowed (then the task is still marked cancelling).
                    raise _CancelAsked
                # The events of one batch (one upstream read) are queued together: one offer
                # per read, not per delta (issue 16); the reader takes what is ready anyway.
                ready: list[StreamEvent] = []
                try:
                    for delta in deltas:
                        chunks_before = builder.chunks
                        events = builder.feed(delta)
                        if builder.chunks != chunks_before:
                            if generation.first_chunk_ns is None:
                                generation.first_chunk_ns = self._clock.monotonic_ns()
                            self._tracer.chunk(generation.lifecycle)
                        if pending is None:
                            ready += events
                        elif builder.chunks:
                            # The first output, with the opening events, goes out now and the
                            # reader sends the head and the first frame before the rest of
                            # this read (a whole stream, from a fast upstream) is built.
                            first = pending + events
                            pending = None
                            if not self._offered(generation, first):
                                await self._emit(generation, first)
                            await asyncio.sleep(0)
                        else:
                            pending.extend(events)
                except Exception:
                    if ready and not self._offered(generation, ready):
                        await self._emit(generation, ready)  # what came before the failure
                    raise
                if ready and not self._offered(generation, ready):
                    await self._emit(generation, ready)
        finally:
            await _aclose(stream)
        if builder.finish_reason is None:
            # No silent success: a stream that stops without saying it finished was cut.
            raise ProviderError(
                f"The provider '{generation.call.route.provider}' ended its answer without "
                "saying it had finished; the answer may be cut short, so it is not reported "
                "as complete."
            )
        if pending is not None:
            # Finished without output: still a valid stream (created ... completed).
            generation.output_sent = generation.answer_sent = True
            await self._emit(generation, pending)

    def _offered(self, generation: Generation, events: list[StreamEvent]) -> bool:
        """Output for the client, marked sent, and queued without a coroutine when the
        channel has room (`Execution.offer`). False: the caller awaits `_emit` (a full
        channel, backpressure; or a background response, logged first)."""
        generation.output_sent = generation.answer_sent = True
        return not generation.background and generation.execution.offer(events)

    async def _emit(self, generation: Generation, events: list[StreamEvent]) -> None:
        """Events to the client, and first to the event log of a background response."""
        if generation.background and self._background is not None:
            await self._background.publish(generation, events)
        await generation.execution.send(events)

    async def _finish(self, generation: Generation) -> None:
        builder = generation.builder
        closing = builder.close_items()
        usage = await self._usage(generation)
        terminal = builder.complete(usage, int(self._clock.now()))
        self._tracer.step(generation.lifecycle, Action.FINISH, Reason.DONE)
        await self._recorder.record(generation)
        await self._publish(generation, [*closing, terminal])
        generation.execution.end_with([*closing, terminal])
        generation.execution.settle(builder.response, None)

    async def _publish(self, generation: Generation, events: list[StreamEvent]) -> None:
        """The closing events of a background response to its event log (after the store
        write, as for the client: a follower that sees the end finds the final response)."""
        if generation.background and self._background is not None:
            await self._background.publish(generation, events)

    async def _cancel(self, generation: Generation) -> None:
        """A background response cancelled by its client: the model's Cancel, then the
        usage of what was generated, recorded once, and the response stored `cancelled`."""
        self._tracer.step(generation.lifecycle, Action.CANCEL, Reason.CANCELLED)
        log.info("background response %s cancelled by its client", generation.response_id)
        try:
            usage: Usage | None = await self._usage(generation)
        except Exception:  # counting must not keep the cancel from being recorded
            usage = None
        events = generation.builder.cancel(usage)
        await self._recorder.record(generation)
        await self._publish(generation, events)
        execution = generation.execution
        execution.end_with(events)
        execution.settle(generation.builder.response, None)

    async def _fail(self, generation: Generation, error: GatewayError) -> None:
        # Masked before anything logs, stores or sends it (the client's own BYOK token too).
        error = self._masker.including(generation.call.context.client_token).mask_error(error)
        generation.error = error
        timed_out = isinstance(error, ProviderTimeout)
        self._tracer.step(
            generation.lifecycle,
            Action.TIME_OUT if timed_out else Action.PROVIDER_FAIL,
            Reason.TIMEOUT if timed_out else Reason.PROVIDER_ERROR,
        )
        log.warning("response %s failed in generate: %s", generation.response_id, error.message)
        try:
            usage: Usage | None = await self._usage(generation)
        except Exception:  # counting must not hide the original failure
            usage = None
        events = generation.builder.fail(error, usage)
        await self._recorder.record(generation)
        execution = generation.execution
        if generation.output_sent:
            await self._publish(generation, events)
            execution.end_with(events)
        else:
            # Nothing was sent yet: the client gets a plain JSON error with the right status.
            execution.fail_before_output(error)
        execution.settle(None, error)

    def _end(self, generation: Generation) -> None:
        """Whatever happened, the reader is never left waiting; a detached generation says
        how it ended."""
        execution = generation.execution
        execution.close()
        if self._background is not None:
            self._background.end(generation)
        if not execution.settled:  # cancelled hard, mid-way through its failure
            execution.settle(None, generation.error or _shut_down())
        if generation.detached_ns is not None:
            now = self._clock.monotonic_ns()
            error = generation.error
            log.info(
                "response %s (client gone) ended %s%s after %.3f s (%.3f s after the client left)",
                generation.response_id,
                generation.builder.response.status,
                f" ({error.code}: {error.message})" if error is not None else "",
                (now - generation.started_ns) / 1e9,
                (now - generation.detached_ns) / 1e9,
            )

    def client_left(
        self, generation: Generation, reason: Reason = Reason.CLIENT_DISCONNECT
    ) -> None:
        """The client went away during generate: the model's DisconnectLate; generation
        goes on to its terminal state, which the log then reports. `reason` BACKGROUND: a
        background response, answered at once, has no client from the start."""
        lifecycle = generation.lifecycle
        if lifecycle.terminal or not lifecycle.client_connected:
            return
        self._tracer.step(lifecycle, Action.DISCONNECT_LATE, reason)
        generation.detached_ns = self._clock.monotonic_ns()
        log.info(
            "response %s: %s; generation continues (at most %g s in all, %s)",
            generation.response_id,
            "background, answered at once"
            if reason is Reason.BACKGROUND
            else "client left during generate",
            self._timeout_s,
            self._timeout_setting,
        )

    async def _usage(self, generation: Generation) -> Usage:
        builder = generation.builder
        if builder.provider_usage is not None:
            return builder.provider_usage
        output_tokens = await self._counter.count_text(builder.generated_text())
        input_tokens = generation.input_tokens
        return Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )

    def _unexpected(self, generation: Generation, exc: Exception) -> GatewayError:
        provider = generation.call.route.provider
        log.error("provider %s raised unexpectedly", provider, exc_info=exc)
        return ProviderError(f"The provider '{provider}' failed unexpectedly; see the gateway log.")


def _shut_down() -> ServerShuttingDown:
    return ServerShuttingDown("The gateway shut down during generation.")


async def _aclose(stream: object) -> None:
    # Provider streams are async generators; closing one runs its cleanup (the upstream
    # connection goes back to the pool or is dropped) even when we stop early.
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
