"""Advancing a request's lifecycle and reporting each step (formal/trace-schema.md)."""

from __future__ import annotations

from xrouter.application.ports import Clock, LifecycleListener
from xrouter.domain.lifecycle import Action, Lifecycle, LifecycleEvent, Reason, Stage


class LifecycleTracer:
    """Steps a `Lifecycle` (which refuses what the model forbids) and hands each step to the
    `LifecycleListener` port. With a disabled listener it builds no event at all."""

    __slots__ = ("_clock", "_listener")

    def __init__(self, listener: LifecycleListener, clock: Clock) -> None:
        self._listener = listener if listener.enabled else None
        self._clock = clock

    def step(self, lifecycle: Lifecycle, action: Action, reason: Reason) -> None:
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

    def chunk(self, lifecycle: Lifecycle) -> None:
        """The EmitChunk step, on the per-chunk fast path (`Lifecycle.emit_chunk`)."""
        lifecycle.emit_chunk()
        if self._listener is not None:
            self._listener.on_event(
                LifecycleEvent(
                    request_id=lifecycle.request_id,
                    action=Action.EMIT_CHUNK,
                    from_stage=Stage.GENERATE,
                    to_stage=Stage.GENERATE,
                    reason=Reason.CHUNK,
                    at_ns=self._clock.monotonic_ns(),
                )
            )
