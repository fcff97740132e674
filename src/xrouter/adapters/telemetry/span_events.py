"""The lifecycle as span events: each step of `ingest -> tokenize -> generate -> done | failed`
becomes an event on the request's server span, named after the stage it enters
(formal/trace-schema.md), so a trace shows the formal lifecycle.

| step (TLA+ action) | event(s) |
|---|---|
| Receive | `ingest` |
| Ingest | `tokenize` |
| Tokenize | `generate` |
| Finish | `done` |
| Reject, ProviderFail, TimeOut | `failed` |
| DisconnectEarly | `disconnect`, then `failed` |
| DisconnectLate | `disconnect` (generation goes on) |
| RecordUsage | `record_usage` |
| NextAttempt | `fallback` (a model failed before any output; the next one is tried) |

Every event carries the action and reason (`xrouter.lifecycle.action`, `.reason`). EmitChunk
is not an event (one per output chunk would swamp the span); the time to the first chunk is
an attribute (`gen_ai.response.time_to_first_chunk`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xrouter.adapters.telemetry.tracing import CURRENT_SPAN
from xrouter.application.ports import LifecycleListener
from xrouter.domain.lifecycle import Action, LifecycleEvent, Reason

_EVENTS: dict[Action, tuple[str, ...]] = {
    Action.RECEIVE: ("ingest",),
    Action.INGEST: ("tokenize",),
    Action.TOKENIZE: ("generate",),
    Action.FINISH: ("done",),
    Action.REJECT: ("failed",),
    Action.PROVIDER_FAIL: ("failed",),
    Action.TIME_OUT: ("failed",),
    Action.DISCONNECT_EARLY: ("disconnect", "failed"),
    Action.DISCONNECT_LATE: ("disconnect",),
    Action.RECORD_USAGE: ("record_usage",),
    Action.CANCEL: ("cancelled",),
    Action.NEXT_ATTEMPT: ("fallback",),
}


class SpanEventsListener:
    """Adds the lifecycle's steps to the current request's server span (a context key the
    generation task inherits). No span, or one not sampled: nothing to do."""

    enabled = True

    def __init__(self) -> None:
        # One attribute dict per (action, reason), shared by every event that has them: they
        # are never changed once built, and a dict per event is most of an event's cost.
        self._attributes: dict[tuple[Action, Reason], dict[str, Any]] = {
            (action, reason): {
                "xrouter.lifecycle.action": action.value,
                "xrouter.lifecycle.reason": reason.value,
            }
            for action in _EVENTS
            for reason in Reason
        }

    def on_event(self, event: LifecycleEvent) -> None:
        names = _EVENTS.get(event.action)
        if names is None:
            return
        span = CURRENT_SPAN.get()
        if span is None or not span.recording:
            return
        attributes = self._attributes[event.action, event.reason]
        for name in names:
            span.add_event(name, attributes)


class FanOutListener:
    """Several listeners as one (the recording listener of tests and the span events)."""

    enabled = True

    def __init__(self, listeners: Sequence[LifecycleListener]) -> None:
        self._listeners = tuple(listeners)

    def on_event(self, event: LifecycleEvent) -> None:
        for listener in self._listeners:
            listener.on_event(event)


def combine_listeners(*listeners: LifecycleListener) -> LifecycleListener:
    """The enabled listeners as one: the only one as it is, several fanned out, none: the
    first (disabled) one, so the engine builds no event at all."""
    enabled = [listener for listener in listeners if listener.enabled]
    if len(enabled) == 1:
        return enabled[0]
    if enabled:
        return FanOutListener(enabled)
    return listeners[0]
