"""formal/xrouter_billing.tla (REFERENCE ONLY, not wired into the runtime) checked exhaustively
through its transcription (tests/formal/billing_model.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from . import billing_model as b
from .explore import ModelCheckFailure, StateGraph, check_leads_to, explore
from .specs import recorded_state_count


@pytest.fixture(scope="module")
def graph() -> StateGraph[b.State]:
    return explore([b.INIT], b.successors, b.INVARIANTS, b.ACTION_PROPERTIES)


def test_distinct_state_count_is_the_one_formal_readme_records(graph: StateGraph[b.State]) -> None:
    assert len(graph) == recorded_state_count("xrouter_billing")


def test_the_interesting_cases_are_reachable(graph: StateGraph[b.State]) -> None:
    assert any(s.charged[0] == b.MAX_TOKENS for s in graph.states)  # a full charge
    assert any(s.stage[0] == "failed" and s.settlements[0] == 1 for s in graph.states)  # release
    assert any(s.balance < b.HOLD and "ingest" in s.stage for s in graph.states)  # no funds


@pytest.mark.parametrize("name", sorted(b.LEADS_TO))
def test_leads_to_property_holds_under_weak_fairness(graph: StateGraph[b.State], name: str) -> None:
    for p, q in b.LEADS_TO[name]:
        assert any(p(s) for s in graph.states)
        assert check_leads_to(graph, p, q, b.FAIRNESS) == []


def test_settling_twice_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def settle_again(s: b.State, r: int) -> b.State | None:
        if s.stage[r] != "done" or s.settlements[r] > 1:
            return None
        after = b._at(s, r, charged=s.used[r], reserved=0, settlements=s.settlements[r] + 1)
        return replace(after, balance=s.balance + s.reserved[r] - s.used[r])

    monkeypatch.setitem(b.ACTIONS, "Settle", settle_again)
    with pytest.raises(ModelCheckFailure, match=r"SettledOnceAtTerminal|CreditConserved"):
        explore([b.INIT], b.successors, b.INVARIANTS, b.ACTION_PROPERTIES)


def test_reserving_without_funds_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def overdraw(s: b.State, r: int) -> b.State | None:
        if s.stage[r] != "ingest" or s.reserved[r] != 0:
            return None
        return replace(b._at(s, r, reserved=b.HOLD), balance=s.balance - b.HOLD)

    monkeypatch.setitem(b.ACTIONS, "Reserve", overdraw)
    with pytest.raises(ModelCheckFailure, match=r"TypeOK|BalanceNeverNegative"):
        explore([b.INIT], b.successors, b.INVARIANTS, b.ACTION_PROPERTIES)
