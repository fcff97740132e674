"""formal/xrouter_inflight.tla (N requests, an in-flight limit) checked exhaustively through its
transcription (tests/formal/inflight_model.py); and the runtime's limit
(EngineSettings.max_inflight) held to it through the use case layer."""

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


@pytest.mark.parametrize("name", ["RefusalAnswered", "EveryRequestFinishes"])
def test_leads_to_property_holds_under_weak_fairness(graph: StateGraph[m.State], name: str) -> None:
    for p, q in m.leads_to()[name]:
        assert any(p(s) for s in graph.states)
        assert check_leads_to(graph, p, q, m.fairness()) == []


def test_the_runtime_shape_one_pool_holds_too() -> None:
    """The runtime has one pool for every provider: the spec with a single provider."""
    config = m.Config(providers=("p1",), limit=2)
    graph = _explore(config)
    assert any(m.in_flight(s, "p1") == 2 for s in graph.states)
    for pairs in m.leads_to(config).values():
        for p, q in pairs:
            assert check_leads_to(graph, p, q, m.fairness(config)) == []


def test_an_admission_that_ignores_the_limit_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def greedy(s: m.State, r: int, config: m.Config) -> m.State | None:
        return m._at(s, r, stage="ingest", holds=True) if s.stage[r] == "idle" else None

    monkeypatch.setitem(m.ACTIONS, "Receive", greedy)
    with pytest.raises(ModelCheckFailure, match="LimitRespected"):
        _explore(m.Config())


def test_a_silently_dropped_refusal_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused request that just goes back to idle (dropped) never gets its answer."""

    def drop(s: m.State, r: int, config: m.Config) -> m.State | None:
        if s.stage[r] != "ingest" or s.holds[r]:
            return None
        return m._at(s, r, stage="idle")

    monkeypatch.setitem(m.ACTIONS, "RejectOverloaded", drop)
    graph = _explore(m.Config())
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
