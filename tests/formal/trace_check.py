"""Trace conformance: replay recorded runtime lifecycle traces against the model.

Every event (formal/trace-schema.md) must be a step of formal/xrouter.tla, as transcribed in
tests/formal/model.py: its action enabled in the model's current state, its from/to stages
the model's, its reason the one the action carries, its clock not going back; and every
invariant and action property must hold after it. The chunk and attempt bounds are lifted
(MaxChunks and MaxAttempts only keep the exhaustive check finite). A NextAttempt after an
EmitChunk is refused: the model's NextAttempt needs `chunks = 0` (NoAttemptAfterChunk).

`check_all_traces(conftest.ALL_TRACES)` is meant for the end of the test session (see
formal/README.md); it returns the problems found, one line each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from xrouter.adapters.telemetry.lifecycle import RecordingLifecycleListener
from xrouter.domain.lifecycle import Action, LifecycleEvent, Reason, Stage

from . import model

REASONS: dict[Action, frozenset[Reason]] = {
    Action.RECEIVE: frozenset({Reason.RECEIVED, Reason.BACKGROUND}),
    Action.INGEST: frozenset({Reason.ROUTED}),
    Action.REJECT: frozenset(
        {
            Reason.INVALID_REQUEST,
            Reason.OVERLOADED,
            Reason.SHUTTING_DOWN,
            Reason.UNAUTHENTICATED,
            Reason.MODEL_NOT_ALLOWED,
            Reason.RATE_LIMITED,
        }
    ),
    Action.TOKENIZE: frozenset({Reason.TOKENIZED}),
    Action.EMIT_CHUNK: frozenset({Reason.CHUNK}),
    Action.NEXT_ATTEMPT: frozenset({Reason.FALLBACK}),
    Action.FINISH: frozenset({Reason.DONE}),
    Action.PROVIDER_FAIL: frozenset({Reason.PROVIDER_ERROR}),
    Action.TIME_OUT: frozenset({Reason.TIMEOUT}),
    Action.DISCONNECT_EARLY: frozenset({Reason.CLIENT_DISCONNECT}),
    Action.DISCONNECT_LATE: frozenset({Reason.CLIENT_DISCONNECT, Reason.BACKGROUND}),
    Action.RECORD_USAGE: frozenset({Reason.USAGE_RECORDED}),
    Action.CANCEL: frozenset({Reason.CANCELLED}),
}
"""The reasons each action may carry (formal/trace-schema.md)."""

REJECT_OUTCOMES: dict[Reason, str] = {
    Reason.INVALID_REQUEST: "invalid_request",
    Reason.OVERLOADED: "invalid_request",
    Reason.SHUTTING_DOWN: "invalid_request",
    Reason.UNAUTHENTICATED: "unauthenticated",
    Reason.MODEL_NOT_ALLOWED: "model_not_allowed",
    Reason.RATE_LIMITED: "rate_limited",
}
"""The model's outcome of a Reject with each runtime reason: the access refusals are their own
outcomes (enabled in ingest only); every other refusal is the model's "invalid_request"."""

_INVARIANTS = model.invariants(max_chunks=None)


def _model_action(event: LifecycleEvent) -> model.ActionFn:
    """The model's action for `event`: a Reject is the choice its reason names."""
    if event.action == Action.REJECT and event.reason in REJECT_OUTCOMES:
        return model.REJECTS[REJECT_OUTCOMES[event.reason]]
    if event.action == Action.RECEIVE:  # the reason says which choice of `background`
        return model.RECEIVES[event.reason == Reason.BACKGROUND]
    return model.ACTIONS[str(event.action)]


@dataclass
class _Replay:
    """One lifecycle being replayed: the model state it reached and its events so far."""

    request_id: str
    state: model.State = model.INIT
    events: list[LifecycleEvent] = field(default_factory=list)
    broken: bool = False


def _step_problems(replay: _Replay, event: LifecycleEvent) -> tuple[model.State | None, list[str]]:
    """The model state after `event`, and what is wrong with the step."""
    where = f"request {event.request_id} step {len(replay.events) + 1} ({event.action})"
    problems: list[str] = []
    state = replay.state
    if event.reason not in REASONS[event.action]:
        problems.append(f"{where}: reason {event.reason!s} does not belong to {event.action}")
    if (
        event.action == Action.DISCONNECT_LATE
        and event.reason == Reason.BACKGROUND
        and not state.background
    ):
        problems.append(f"{where}: a detach for `background` of a request that is not one")
    if event.from_stage != state.stage:
        problems.append(f"{where}: from_stage {event.from_stage} but the model is in {state.stage}")
    after = _model_action(event)(state, None)
    if after is None:
        problems.append(f"{where}: {event.action} is not enabled in model state {state}")
        return None, problems
    if event.to_stage != after.stage:
        problems.append(f"{where}: to_stage {event.to_stage} but the model goes to {after.stage}")
    if replay.events and event.at_ns < replay.events[-1].at_ns:
        problems.append(f"{where}: at_ns {event.at_ns} is before the previous step's")
    for name, invariant in _INVARIANTS.items():
        if not invariant(after):
            problems.append(f"{where}: invariant {name} fails in {after}")
    for name, prop in model.ACTION_PROPERTIES.items():
        if not prop(state, after):
            problems.append(f"{where}: property {name} fails from {state} to {after}")
    return after, problems


def _pending(state: model.State) -> str | None:
    """Why a lifecycle that stopped in `state` is unfinished (the liveness properties), or
    None when it is complete."""
    if state.stage not in model.TERMINAL:
        return f"it stopped in {state.stage} (RequestTerminates, GenerateTerminates)"
    if state.entered_generate and state.usage_records != 1:
        return "its usage was never recorded (UsageEventuallyRecorded)"
    return None


def check_trace(events: Sequence[LifecycleEvent], *, require_complete: bool = False) -> list[str]:
    """Problems with the events of one request id, in order. A new `Receive` under the same id
    starts another lifecycle (clients may reuse `x-request-id`); any other step goes to the
    open lifecycle that can take it."""
    problems: list[str] = []
    replays: list[_Replay] = []
    for event in events:
        if event.action == Action.RECEIVE and event.from_stage == Stage.IDLE:
            replays.append(_Replay(event.request_id))
            candidates = [replays[-1]]
        else:
            candidates = [
                r
                for r in replays
                if not r.broken
                and r.state.stage == event.from_stage
                and _model_action(event)(r.state, None) is not None
            ] or [r for r in reversed(replays) if not r.broken][:1]
        if not candidates:
            if not replays:
                problems.append(
                    f"request {event.request_id}: {event.action} from {event.from_stage} "
                    "before any Receive"
                )
                replays.append(_Replay(event.request_id, broken=True))
            continue  # else: the rest of a lifecycle already reported as broken
        replay = candidates[0]
        after, step_problems = _step_problems(replay, event)
        replay.events.append(event)
        if step_problems:
            problems.extend(step_problems)
            replay.broken = True
        elif after is not None:
            replay.state = after
    if require_complete:
        for replay in replays:
            why = None if replay.broken else _pending(replay.state)
            if why is not None:
                problems.append(f"request {replay.request_id} is unfinished: {why}")
    return problems


def check_listener(
    listener: RecordingLifecycleListener, *, require_complete: bool = False
) -> list[str]:
    """Problems with every trace a listener recorded. When its bounded buffer overflowed, a
    trace whose beginning was dropped is skipped rather than reported."""
    overflowed = listener.events.maxlen is not None and len(listener.events) >= (
        listener.events.maxlen
    )
    problems: list[str] = []
    for events in listener.traces().values():
        if overflowed and events[0].action != Action.RECEIVE:
            continue
        problems.extend(check_trace(events, require_complete=require_complete))
    return problems


def check_all_traces(
    listeners: Iterable[RecordingLifecycleListener], *, require_complete: bool = False
) -> list[str]:
    """Problems with every trace recorded by `listeners` (conftest.ALL_TRACES); [] when every
    recorded behaviour is one the model allows. With `require_complete`, a lifecycle that
    stopped before its terminal stage and usage record is a problem too."""
    problems: list[str] = []
    for listener in listeners:
        problems.extend(check_listener(listener, require_complete=require_complete))
    return problems


def count_events(listeners: Iterable[RecordingLifecycleListener]) -> int:
    """How many events `listeners` hold: for a report line next to the problems."""
    return sum(len(listener.events) for listener in listeners)
