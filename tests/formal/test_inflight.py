"""formal/xrouter_inflight.tla (N requests, an in-flight limit per pool, a FIFO waiting queue,
leases that expire when their worker dies) checked exhaustively through its transcription
(tests/formal/inflight_model.py); and the runtime's engine limit (EngineSettings.max_inflight)
held to it through the use case layer. The queue and the leases at runtime (LocalInflight,
RedisInflight) are pinned by tests/test_inflight_queue.py and tests/test_shared_inflight.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import make_container
from xrouter.adapters.telemetry.lifecycle import RecordingLifecycleListener
from xrouter.domain.errors import Overloaded
from xrouter.domain.responses import ResponseRequest

from . import inflight_model as m
from .explore import ModelCheckFailure, StateGraph, check_leads_to, explore
from .specs import recorded_state_count
from .trace_check import check_listener


def _explore(config: m.Config) -> StateGraph[m.State]:
    return explore(
        m.init(config),
        lambda s: m.successors(s, config),
        m.invariants(config),
        m.action_properties(config),
    )


def _leads_to_problems(
    graph: StateGraph[m.State], config: m.Config, fairness: list[frozenset[str]] | None = None
) -> dict[str, list[str]]:
    groups = m.fairness(config) if fairness is None else fairness
    return {
        name: problems
        for name, pairs in m.leads_to(config).items()
        for p, q in pairs
        if (problems := check_leads_to(graph, p, q, groups))
    }


def _steps(graph: StateGraph[m.State]) -> list[tuple[m.State, str, m.State]]:
    return [(s, label, t) for s, edges in graph.edges.items() for label, t in edges]


@pytest.fixture(scope="module")
def graph() -> StateGraph[m.State]:
    return _explore(m.Config())


def test_distinct_state_count_is_the_one_formal_readme_records(graph: StateGraph[m.State]) -> None:
    assert len(graph) == recorded_state_count("xrouter_inflight")


def test_the_limit_is_reached_and_refusals_happen(graph: StateGraph[m.State]) -> None:
    """Not vacuous: some state fills a pool, some request is refused, some state has two
    requests generating at once on different providers."""
    assert any(m.in_flight(s, p) == m.LIMIT for s in graph.states for p in m.PROVIDERS)
    assert any("overloaded" in s.outcome for s in graph.states)
    assert any(s.stage.count("generate") == 2 for s in graph.states)


def test_the_queue_and_the_leases_are_exercised(graph: StateGraph[m.State]) -> None:
    """Not vacuous either: two requests wait behind a holder, a waiter is admitted, waits end
    in both explicit failures, a crashed holder's and a crashed waiter's leases expire, and a
    dead head of the queue blocks a live waiter behind it while a slot is free."""
    config = m.Config()
    assert any(len(q) == 2 for s in graph.states for q in s.queue)
    labels = {label.split("(")[0] for _, label, _ in _steps(graph)}
    assert {"Admit", "QueueTimeout", "LeaveQueue", "Crash", "Expire"} <= labels
    assert any("queue_timeout" in s.outcome for s in graph.states)
    assert any("client_disconnect" in s.outcome for s in graph.states)
    expired = [(s, t) for s, label, t in _steps(graph) if label.startswith("Expire")]
    assert any(s.holds != t.holds for s, t in expired)
    assert any(s.queue != t.queue for s, t in expired)
    assert any(
        q and s.crashed[q[0]] and len(q) > 1 and m.in_flight(s, "p1") < m.LIMIT
        for s in graph.states
        for q in [m.queue_of(s, "p1", config)]
    )


def test_the_key_limit_is_reached_and_refuses_only_its_own_key(
    graph: StateGraph[m.State],
) -> None:
    """Not vacuous: a key reaches its limit, a request is refused with rate_limited, and one
    key at its limit does not stop the other key's requests; a refused request never held a
    slot, a place in a queue or a key lease."""

    def some_key_full(s: m.State) -> bool:
        return any(m.key_leases(s, k) == m.KEY_LIMIT for k in m.KEYS)

    assert any(some_key_full(s) for s in graph.states)
    assert any("rate_limited" in s.outcome for s in graph.states)
    steps = _steps(graph)
    refused = [(s, label) for s, label, _ in steps if label.startswith("RejectRateLimited")]
    assert refused
    for s, label in refused:
        r = int(label.removeprefix("RejectRateLimited(r").removesuffix(")")) - 1
        assert not (s.holds[r] or s.key_lease[r] or m.queued(s, r, m.Config()))
    # A lease granted while a key is full: the other key's (the full one has none to give).
    assert any(
        label.startswith("Receive") and t.key_lease != s.key_lease and some_key_full(s)
        for s, label, t in steps
    )


def test_a_key_admission_that_ignores_its_limit_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A limiter that checks the count and takes the lease in two steps lets a third request
    of a key in: modelled as taking the lease whatever the count."""

    def unlimited(s: m.State, r: int, config: m.Config) -> m.State | None:
        wide = m.Config(
            config.requests,
            config.providers,
            config.queueing_pools,
            config.limit,
            config.keys,
            config.requests,
        )
        return m.receive(s, r, wide)

    monkeypatch.setitem(m.ACTIONS, "Receive", unlimited)
    with pytest.raises(ModelCheckFailure, match="KeyLimitRespected"):
        _explore(m.Config())


def test_a_key_lease_kept_after_the_request_finished_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A terminal stage that forgets to give the key's lease back (a leak) is caught."""

    def leaking(s: m.State, r: int, config: m.Config) -> m.State | None:
        if s.stage[r] != "generate" or s.crashed[r]:
            return None
        return m._at(s, r, stage="done", holds=False, outcome="completed")

    monkeypatch.setitem(m.ACTIONS, "Finish", leaking)
    with pytest.raises(ModelCheckFailure, match="KeyLeasesMatchWork"):
        _explore(m.Config())


@pytest.mark.parametrize(
    "name",
    [
        "RefusalAnswered",
        "RateLimitAnswered",
        "WaiterAnswered",
        "EveryRequestFinishes",
        "CrashedLeaseFreed",
        "KeyLeaseReleased",
    ],
)
def test_leads_to_property_holds_under_weak_fairness(graph: StateGraph[m.State], name: str) -> None:
    for p, q in m.leads_to()[name]:
        assert any(p(s) for s in graph.states)
        assert check_leads_to(graph, p, q, m.fairness()) == []


@pytest.mark.parametrize(
    "config",
    [
        # The pools alone (one key, whose limit never binds: XR_AUTH=none, or a key without a
        # concurrency limit). The engine's limit: one pool for every provider, fail fast.
        m.Config(providers=("p1",), queueing_pools=(), limit=2, keys=("k1",), key_limit=3),
        # A shared provider pool of two slots with a queue.
        m.Config(providers=("p1",), queueing_pools=("p1",), limit=2, keys=("k1",), key_limit=3),
        # A GigaChat PERS account: one stream at a time, three clients waiting in turn.
        m.Config(
            requests=4,
            providers=("p1",),
            queueing_pools=("p1",),
            limit=1,
            keys=("k1",),
            key_limit=4,
        ),
    ],
    ids=["engine-fail-fast", "pool-of-two-with-queue", "one-slot-three-waiters"],
)
def test_the_runtime_shapes_hold_too(config: m.Config) -> None:
    graph = _explore(config)
    assert any(m.in_flight(s, "p1") == config.limit for s in graph.states)
    waiting = max(len(q) for s in graph.states for q in s.queue)
    assert waiting == (config.requests - config.limit if config.queueing_pools else 0)
    assert _leads_to_problems(graph, config) == {}


def test_an_admission_that_ignores_the_limit_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def greedy(s: m.State, r: int, config: m.Config) -> m.State | None:
        return (
            m._at(s, r, stage="ingest", holds=True, key_lease=True)
            if s.stage[r] == "idle"
            else None
        )

    monkeypatch.setitem(m.ACTIONS, "Receive", greedy)
    with pytest.raises(ModelCheckFailure, match="invariant LimitRespected"):
        _explore(m.Config())


def test_a_new_arrival_that_barges_past_the_queue_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request arriving when a slot was just freed takes it, although someone waits."""
    original = m.receive

    def barging(s: m.State, r: int, config: m.Config) -> m.State | None:
        free = m.in_flight(s, s.route[r]) < config.limit
        if s.stage[r] == "idle" and free and m.key_free(s, s.key[r], config):
            return m._at(s, r, stage="ingest", holds=True, key_lease=True)
        return original(s, r, config)

    monkeypatch.setitem(m.ACTIONS, "Receive", barging)
    with pytest.raises(ModelCheckFailure, match="FifoAdmission"):
        _explore(m.Config())


def test_a_waiter_admitted_out_of_turn_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any waiter, not only the head, may take a freed slot."""

    def any_waiter(s: m.State, r: int, config: m.Config) -> m.State | None:
        if s.stage[r] != "waiting" or s.crashed[r] or not m.queued(s, r, config):
            return None
        if m.in_flight(s, s.route[r]) >= config.limit:
            return None
        admitted = m._at(s, r, stage="ingest", holds=True)
        rest = tuple(x for x in m.queue_of(s, s.route[r], config) if x != r)
        return m._with_queue(admitted, s.route[r], config, rest)

    monkeypatch.setitem(m.ACTIONS, "Admit", any_waiter)
    with pytest.raises(ModelCheckFailure, match="FifoAdmission"):
        _explore(m.Config())


def test_a_live_lease_that_expires_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat too slow for the lease: a live holder's slot is taken back."""

    def expire_any(s: m.State, r: int, config: m.Config) -> m.State | None:
        if not (s.holds[r] or m.queued(s, r, config)):
            return None
        return m._without(m._at(s, r, holds=False), r, config)

    monkeypatch.setitem(m.ACTIONS, "Expire", expire_any)
    with pytest.raises(ModelCheckFailure, match="LiveLeaseKept"):
        _explore(m.Config())


def test_a_queue_timeout_without_an_answer_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter whose wait runs out is dropped from the queue with no failure to show."""

    def silent(s: m.State, r: int, config: m.Config) -> m.State | None:
        if s.stage[r] != "waiting" or s.crashed[r]:
            return None
        return m._without(m._at(s, r, stage="failed"), r, config)

    monkeypatch.setitem(m.ACTIONS, "QueueTimeout", silent)
    with pytest.raises(ModelCheckFailure, match="NoSilentDrop"):
        _explore(m.Config())


def test_a_lease_that_never_expires_is_caught(graph: StateGraph[m.State]) -> None:
    """Without a fair expiry (no TTL on the lease), a dead holder keeps its slot forever."""
    unfair = [frozenset(a for a in group if not a.startswith("Expire")) for group in m.fairness()]
    problems = _leads_to_problems(graph, m.Config(), unfair)
    assert "CrashedLeaseFreed" in problems
    assert "KeyLeaseReleased" in problems


def test_a_silently_dropped_refusal_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused request that just goes back to idle (dropped) never gets its answer."""

    def drop(s: m.State, r: int, config: m.Config) -> m.State | None:
        if s.stage[r] != "ingest" or not s.key_lease[r] or s.holds[r]:
            return None
        return m._at(s, r, stage="idle", key_lease=False)

    monkeypatch.setitem(m.ACTIONS, "RejectOverloaded", drop)
    # Liveness alone: the dropped request's lease goes without a terminal stage, which the
    # safety properties (LiveLeaseKept) would report first.
    graph = explore(m.init(), m.successors, {})
    p, q = m.leads_to()["RefusalAnswered"][0]
    assert check_leads_to(graph, p, q, m.fairness()) != []


async def test_over_the_limit_a_request_is_refused_and_the_one_in_flight_completes() -> None:
    container = make_container(max_inflight=1, local_slow_delay_s=0.02)
    create = container.create_response()
    first = await create.start(ResponseRequest(model="local/slow", input="one two three"))
    with pytest.raises(Overloaded) as refused:
        await create.start(ResponseRequest(model="local/echo", input="hi"))
    assert refused.value.status == 429
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    response = await asyncio.wait_for(first.result(), timeout=5)
    assert response.status == "completed"
    # The slot came back: the next request is admitted.
    again = await asyncio.wait_for(
        create.run(ResponseRequest(model="local/echo", input="hi")), timeout=5
    )
    assert again.status == "completed"

    listener = container.lifecycle_listener()
    assert isinstance(listener, RecordingLifecycleListener)
    traces = list(listener.traces().values())
    assert [[str(e.action) for e in t] for t in traces if len(t) == 2] == [["Receive", "Reject"]]
    assert check_listener(listener, require_complete=True) == []
