"""formal/xrouter.tla, checked exhaustively through its Python transcription (tests/formal/
model.py), the way TLC would with formal/xrouter.cfg; and the runtime's state machine
(xrouter.domain.lifecycle) held to the same transition relation."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import replace

import pytest

from xrouter.domain.lifecycle import TRANSITIONS, Action, IllegalTransition, Lifecycle, Stage

from . import model
from .explore import (
    ModelCheckFailure,
    StateGraph,
    Successors,
    check_leads_to,
    explore,
    reachable,
)
from .specs import recorded_state_count


@pytest.fixture(scope="module")
def graph() -> StateGraph[model.State]:
    return explore([model.INIT], model.successors, model.invariants(), model.ACTION_PROPERTIES)


def test_distinct_state_count_is_the_one_formal_readme_records(
    graph: StateGraph[model.State],
) -> None:
    assert len(graph) == recorded_state_count("xrouter")
    # The same count by hand: idle; then, for a request that is background or not, ingest,
    # tokenize, five early failures (invalid_request, client_disconnect and the three access
    # refusals) and 42 generate states (chunks 0..3, delivered <= chunks once the client is
    # gone: 14, times attempts 1..3, all started before the first chunk); each generate state
    # x 3 terminal outcomes (4 for a background request: cancelled) x usage recorded or not.
    generating = 14 * model.MAX_ATTEMPTS
    assert len(graph) == 1 + 2 * (1 + 1 + 5 + generating) + generating * 3 * 2 + generating * 4 * 2


def test_every_invariant_holds_in_every_reachable_state(graph: StateGraph[model.State]) -> None:
    for name, invariant in model.invariants().items():
        failing = [s for s in graph.states if not invariant(s)]
        assert failing == [], f"{name} fails in {failing[:3]}"


def test_every_action_is_taken_somewhere(graph: StateGraph[model.State]) -> None:
    taken = {action for steps in graph.edges.values() for action, _ in steps}
    assert taken == set(model.NEXT)


def test_every_stage_and_outcome_is_reachable(graph: StateGraph[model.State]) -> None:
    assert {s.stage for s in graph.states} == model.STAGES
    assert {s.outcome for s in graph.states} == model.OUTCOMES


@pytest.mark.parametrize("name", sorted(model.LEADS_TO))
def test_leads_to_property_holds_under_weak_fairness(
    graph: StateGraph[model.State], name: str
) -> None:
    p, q = model.LEADS_TO[name]
    assert any(p(s) for s in graph.states), f"{name} is vacuous: no state satisfies P"
    assert check_leads_to(graph, p, q, model.FAIRNESS.values()) == []


def test_from_every_generate_state_a_terminal_state_is_reachable(
    graph: StateGraph[model.State],
) -> None:
    generating = [s for s in graph.states if s.stage == "generate"]
    assert len(generating) == 2 * 14 * model.MAX_ATTEMPTS
    for state in generating:
        assert reachable(graph, state, lambda s: s.stage in model.TERMINAL)
        assert reachable(graph, state, lambda s: s.stage in model.TERMINAL and s.usage_records == 1)
        # A disconnect does not take completion away: done stays reachable.
        assert reachable(graph, state, lambda s: s.stage == "done")


def test_no_cycle_stays_in_generate(graph: StateGraph[model.State]) -> None:
    """Every step in generate changes the state for good (chunks grow, attempts grow, the
    client leaves once): apart from stuttering, generate cannot be occupied forever."""
    for state in graph.states:
        if state.stage != "generate":
            continue
        for action, after in graph.edges[state]:
            assert after != state, f"{action} stutters in generate"
            if after.stage == "generate":
                rank = (after.chunks, after.attempts, not after.client_connected)
                assert rank > (state.chunks, state.attempts, not state.client_connected), action


def test_a_disconnect_in_generate_never_fails_the_request(
    graph: StateGraph[model.State],
) -> None:
    gone = [s for s in graph.states if s.entered_generate and not s.client_connected]
    assert gone
    assert all(s.outcome != "client_disconnect" for s in gone)
    assert any(s.stage == "done" for s in gone)


def test_only_a_background_request_is_cancelled_only_from_generate_and_its_usage_counted(
    graph: StateGraph[model.State],
) -> None:
    """Cancel leaves generate for `cancelled`, for a background request only; from every
    cancelled state the usage record is still reachable, and then nothing changes."""
    cancelled_from = {
        (state.stage, state.background)
        for state, steps in graph.edges.items()
        for action, after in steps
        if action == "Cancel"
    }
    assert cancelled_from == {("generate", True)}
    cancelled = [s for s in graph.states if s.stage == "cancelled"]
    assert cancelled and all(s.background and s.outcome == "cancelled" for s in cancelled)
    for state in cancelled:
        assert reachable(graph, state, lambda s: s.usage_records == 1)
    # A request that is not background reaches done or failed, never cancelled.
    assert all(s.background for s in graph.states if s.outcome == "cancelled")


def test_a_model_that_cancels_a_foreground_request_is_rejected() -> None:
    def cancel_anything(s: model.State, bound: model.Bound) -> model.State | None:
        if s.stage != "generate":
            return None
        return replace(s, stage="cancelled", outcome="cancelled")

    with pytest.raises(ModelCheckFailure, match="CancelOnlyBackground"):
        explore(
            [model.INIT],
            _successors_with("Cancel", cancel_anything),
            model.invariants(),
            model.ACTION_PROPERTIES,
        )


def test_access_refusals_are_steps_from_ingest_and_end_the_request(
    graph: StateGraph[model.State],
) -> None:
    """Each access refusal is reachable, only by a Reject from ingest, and nothing but stuttering
    follows it: no tokenize, no provider call, no usage record."""
    refused_from: dict[str, set[str]] = {}
    for state, steps in graph.edges.items():
        for action, after in steps:
            if after.outcome in model.ACCESS_REFUSALS and after != state:
                assert action == "Reject", action
                refused_from.setdefault(after.outcome, set()).add(state.stage)
    assert refused_from == {outcome: {"ingest"} for outcome in model.ACCESS_REFUSALS}
    for state in graph.states:
        if state.outcome in model.ACCESS_REFUSALS:
            assert [after for _, after in graph.edges[state]] == [state]


def test_no_attempt_starts_after_a_chunk(graph: StateGraph[model.State]) -> None:
    """NextAttempt (a fallback to the next model) is taken only from generate states with no
    chunk produced and none delivered; it is taken there whether the client is still connected
    or not and for background requests too; and no step out of a state with a chunk adds an
    attempt. The bound is reached, so the property is not vacuous."""
    attempted_from = [
        state
        for state, steps in graph.edges.items()
        for action, _ in steps
        if action == "NextAttempt"
    ]
    assert attempted_from
    assert all(s.stage == "generate" and s.chunks == 0 and s.delivered == 0 for s in attempted_from)
    assert {(s.client_connected, s.background) for s in attempted_from} == {
        (True, False),
        (True, True),
        (False, False),
        (False, True),
    }
    for state in graph.states:
        if state.chunks > 0:
            assert all(after.attempts == state.attempts for _, after in graph.edges[state])
    assert max(s.attempts for s in graph.states) == model.MAX_ATTEMPTS
    # Output after a fallback is reachable: the model that served answers in full.
    assert any(
        s.attempts == model.MAX_ATTEMPTS and s.stage == "done" and s.chunks for s in graph.states
    )


def test_the_runtime_lifecycle_refuses_another_attempt_once_a_chunk_was_produced() -> None:
    """`Lifecycle.step(NextAttempt)` is allowed in generate before any EmitChunk, as often as
    the chain asks; after an EmitChunk it raises IllegalTransition and leaves the lifecycle as
    it was, so the request still finishes with the output it has."""
    lifecycle = Lifecycle("req_attempts")
    for action in (Action.RECEIVE, Action.INGEST, Action.TOKENIZE):
        lifecycle.step(action)
    assert lifecycle.step(Action.NEXT_ATTEMPT) == (Stage.GENERATE, Stage.GENERATE)
    assert lifecycle.step(Action.NEXT_ATTEMPT) == (Stage.GENERATE, Stage.GENERATE)
    lifecycle.step(Action.EMIT_CHUNK)
    with pytest.raises(IllegalTransition, match="no other attempt"):
        lifecycle.step(Action.NEXT_ATTEMPT)
    assert (lifecycle.stage, lifecycle.chunks) == (Stage.GENERATE, 1)
    assert lifecycle.step(Action.FINISH) == (Stage.GENERATE, Stage.DONE)
    # Not before generate either, nor after the terminal stage.
    early = Lifecycle("req_early")
    early.step(Action.RECEIVE)
    with pytest.raises(IllegalTransition):
        early.step(Action.NEXT_ATTEMPT)
    with pytest.raises(IllegalTransition):
        lifecycle.step(Action.NEXT_ATTEMPT)


# --- the checker can fail: broken variants of the model are caught ---------------------------


def _successors_with(action: str, fn: model.ActionFn) -> Successors[model.State]:
    """The model's Next with `action` replaced by `fn`."""
    table = {**model.NEXT, action: fn}

    def successors(s: model.State) -> Iterator[tuple[str, model.State]]:
        for name, act in table.items():
            for choice in model.choices(act):
                after = choice(s, model.MAX_CHUNKS)
                if after is not None:
                    yield name, after

    return successors


def test_a_model_where_a_late_disconnect_cancels_generation_is_rejected() -> None:
    def cancelling(s: model.State, bound: model.Bound) -> model.State | None:
        if s.stage != "generate" or not s.client_connected:
            return None
        return replace(s, stage="failed", client_connected=False, outcome="client_disconnect")

    with pytest.raises(ModelCheckFailure, match="DisconnectSafety"):
        explore(
            [model.INIT],
            _successors_with("DisconnectLate", cancelling),
            model.invariants(),
            model.ACTION_PROPERTIES,
        )


def test_a_model_that_records_usage_twice_is_rejected() -> None:
    def twice(s: model.State, bound: model.Bound) -> model.State | None:
        if s.stage not in model.TERMINAL or not s.entered_generate or s.usage_records > 1:
            return None
        return replace(s, usage_records=s.usage_records + 1)

    with pytest.raises(ModelCheckFailure, match="UsageOnceAtTerminal"):
        explore(
            [model.INIT],
            _successors_with("RecordUsage", twice),
            model.invariants(),
            model.ACTION_PROPERTIES,
        )


def test_a_model_that_emits_before_generate_is_rejected() -> None:
    def early(s: model.State, bound: model.Bound) -> model.State | None:
        if s.stage not in ("tokenize", "generate") or s.chunks >= model.MAX_CHUNKS:
            return None
        return replace(s, chunks=s.chunks + 1, delivered=s.delivered + s.client_connected)

    with pytest.raises(ModelCheckFailure, match="NoOutputBeforeGenerate"):
        explore(
            [model.INIT],
            _successors_with("EmitChunk", early),
            model.invariants(),
            model.ACTION_PROPERTIES,
        )


def test_a_model_that_checks_access_after_ingest_is_rejected() -> None:
    """A key limit checked once tokenize has begun (the input counted, say) is caught."""

    def late_limit(s: model.State, bound: model.Bound) -> model.State | None:
        if s.stage not in ("ingest", "tokenize"):
            return None
        return replace(s, stage="failed", outcome="rate_limited")

    with pytest.raises(ModelCheckFailure, match="AccessCheckedInIngest"):
        explore(
            [model.INIT],
            _successors_with("Reject", late_limit),
            model.invariants(),
            model.ACTION_PROPERTIES,
        )


def test_a_model_that_bills_a_refused_request_is_rejected() -> None:
    """Usage recorded for a request refused by access control is caught."""

    def billing_everyone(s: model.State, bound: model.Bound) -> model.State | None:
        if s.stage not in model.TERMINAL or s.usage_records != 0:
            return None
        return replace(s, usage_records=1)

    with pytest.raises(ModelCheckFailure, match="AccessRefusedBeforeTokenize"):
        explore(
            [model.INIT],
            _successors_with("RecordUsage", billing_everyone),
            {"AccessRefusedBeforeTokenize": model.access_refused_before_tokenize},
            model.ACTION_PROPERTIES,
        )


def test_a_model_that_falls_back_after_a_chunk_is_rejected() -> None:
    """A fallback started once output exists (the client would see two models' answers) is
    caught by NoAttemptAfterChunk."""

    def late_fallback(s: model.State, bound: model.Bound) -> model.State | None:
        if s.stage != "generate" or s.attempts >= model.MAX_ATTEMPTS:
            return None
        return replace(s, attempts=s.attempts + 1)

    with pytest.raises(ModelCheckFailure, match="NoAttemptAfterChunk"):
        explore(
            [model.INIT],
            _successors_with("NextAttempt", late_fallback),
            model.invariants(),
            model.ACTION_PROPERTIES,
        )


def test_a_model_that_leaves_a_terminal_stage_is_rejected() -> None:
    def revive(s: model.State, bound: model.Bound) -> model.State | None:
        if s.stage not in ("tokenize", "failed"):
            return None
        return replace(s, stage="generate", entered_generate=True)

    with pytest.raises(ModelCheckFailure, match="TerminalIsFinal"):
        explore(
            [model.INIT],
            _successors_with("Tokenize", revive),
            {"TypeOK": model.type_ok},
            model.ACTION_PROPERTIES,
        )


def test_the_liveness_check_finds_a_generation_that_can_loop() -> None:
    def looping(s: model.State, bound: model.Bound) -> model.State | None:
        if s.stage != "generate":
            return None
        return replace(s, chunks=(s.chunks + 1) % (model.MAX_CHUNKS + 1), delivered=0)

    graph = explore([model.INIT], _successors_with("EmitChunk", looping), {})
    p, q = model.LEADS_TO["GenerateTerminates"]
    problems = check_leads_to(graph, p, q, model.FAIRNESS.values())
    assert any("loop" in problem for problem in problems)


def test_the_liveness_check_finds_a_generation_with_no_fair_way_out() -> None:
    def stuck(s: model.State, bound: model.Bound) -> model.State | None:
        return None

    graph = explore(
        [model.INIT],
        _successors_with("Finish", stuck),
        {},
    )
    unfair = {**model.FAIRNESS, "Generation": frozenset({"EmitChunk", "Finish"})}
    p, q = model.LEADS_TO["GenerateTerminates"]
    problems = check_leads_to(graph, p, q, unfair.values())
    assert any("no fair action" in problem for problem in problems)


# --- the runtime's state machine against the model --------------------------------------------


def test_transitions_table_matches_the_model(graph: StateGraph[model.State]) -> None:
    """lifecycle.TRANSITIONS (source stages, target stage) is what the model's actions do."""
    for action, (sources, target) in TRANSITIONS.items():
        enabled_in: set[str] = set()
        for state in graph.states:
            after = model.ACTIONS[str(action)](state, None)
            if after is None:
                continue
            enabled_in.add(state.stage)
            assert after.stage == (target or state.stage), action
        assert enabled_in == {str(stage) for stage in sources}, action
    assert {str(a) for a in Action} == set(model.ACTIONS)


def _lifecycle(
    stage: str, connected: bool, entered: bool, recorded: bool, background: bool, chunks: int
) -> Lifecycle:
    lifecycle = Lifecycle("req_model", background=background)
    lifecycle.stage = Stage(stage)
    lifecycle.client_connected = connected
    lifecycle.entered_generate = entered
    lifecycle.usage_recorded = recorded
    lifecycle.chunks = chunks
    return lifecycle


def test_lifecycle_refuses_exactly_the_steps_the_model_forbids() -> None:
    """Explore the runtime `Lifecycle` and the model side by side: from every pair of states,
    every action is accepted by both or refused by both, and they land on the same stage."""
    starts = [
        (model.INIT, ("idle", True, False, False, False, 0)),
        (replace(model.INIT, background=True), ("idle", True, False, False, True, 0)),
    ]
    seen = set(starts)
    queue = deque(starts)
    checked = 0
    while queue:
        state, snapshot = queue.popleft()
        for action in Action:
            # A runtime lifecycle is background or not from its start: Receive keeps it.
            receive = model.RECEIVES[state.background]
            act = receive if action == Action.RECEIVE else model.ACTIONS[str(action)]
            expected = act(state, None)
            lifecycle = _lifecycle(*snapshot)
            try:
                before, after = lifecycle.step(action)
            except IllegalTransition:
                assert expected is None, f"Lifecycle refuses {action} in {state}"
                continue
            assert expected is not None, f"Lifecycle allows {action} in {state}"
            assert (before, after) == (state.stage, expected.stage)
            assert lifecycle.client_connected == expected.client_connected
            assert lifecycle.usage_recorded == (expected.usage_records == 1)
            assert lifecycle.terminal == (expected.stage in model.TERMINAL)
            assert lifecycle.chunks == expected.chunks
            checked += 1
            following = (
                expected,
                (
                    str(lifecycle.stage),
                    lifecycle.client_connected,
                    lifecycle.entered_generate,
                    lifecycle.usage_recorded,
                    lifecycle.background,
                    lifecycle.chunks,
                ),
            )
            # The runtime has no MaxChunks or MaxAttempts (the model's are lifted here): the
            # exploration stops at the .cfg's bounds.
            bounded = (
                expected.chunks <= model.MAX_CHUNKS and expected.attempts <= model.MAX_ATTEMPTS
            )
            if bounded and following not in seen:
                seen.add(following)
                queue.append(following)
    assert checked > 100
