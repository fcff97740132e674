"""Python transcription of formal/xrouter_billing.tla (REFERENCE ONLY: XRouter has no billing
yet; nothing in the runtime maps onto this model). Functions of the spec are tuples indexed
like REQUESTS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

REQUESTS = ("r1", "r2")
BUDGET = 3
HOLD = 2
MAX_TOKENS = 2
"""The constants of formal/xrouter_billing.cfg."""

STAGES = frozenset({"idle", "ingest", "generate", "done", "failed"})
TERMINAL = frozenset({"done", "failed"})

TLA_VARIABLES = {
    "stage": "stage",
    "balance": "balance",
    "reserved": "reserved",
    "used": "used",
    "charged": "charged",
    "settlements": "settlements",
}


@dataclass(frozen=True, slots=True)
class State:
    stage: tuple[str, ...]
    balance: int
    reserved: tuple[int, ...]
    used: tuple[int, ...]
    charged: tuple[int, ...]
    settlements: tuple[int, ...]


def _set(values: tuple[object, ...], index: int, value: object) -> tuple[object, ...]:
    return (*values[:index], value, *values[index + 1 :])


def _at(s: State, r: int, **changes: object) -> State:
    updated: dict[str, Any] = {n: _set(getattr(s, n), r, v) for n, v in changes.items()}
    return replace(s, **updated)


INIT = State(
    stage=("idle",) * len(REQUESTS),
    balance=BUDGET,
    reserved=(0,) * len(REQUESTS),
    used=(0,) * len(REQUESTS),
    charged=(0,) * len(REQUESTS),
    settlements=(0,) * len(REQUESTS),
)

ActionFn = Callable[[State, int], State | None]


def receive(s: State, r: int) -> State | None:
    return _at(s, r, stage="ingest") if s.stage[r] == "idle" else None


def reserve(s: State, r: int) -> State | None:
    if s.stage[r] != "ingest" or s.reserved[r] != 0 or s.balance < HOLD:
        return None
    return replace(_at(s, r, reserved=HOLD), balance=s.balance - HOLD)


def reject_no_funds(s: State, r: int) -> State | None:
    if s.stage[r] != "ingest" or s.reserved[r] != 0 or s.balance >= HOLD:
        return None
    return _at(s, r, stage="failed")


def reject(s: State, r: int) -> State | None:
    return _at(s, r, stage="failed") if s.stage[r] == "ingest" else None


def tokenize(s: State, r: int) -> State | None:
    if s.stage[r] != "ingest" or s.reserved[r] != HOLD:
        return None
    return _at(s, r, stage="generate")


def emit_chunk(s: State, r: int) -> State | None:
    if s.stage[r] != "generate" or s.used[r] >= MAX_TOKENS:
        return None
    return _at(s, r, used=s.used[r] + 1)


def finish(s: State, r: int) -> State | None:
    return _at(s, r, stage="done") if s.stage[r] == "generate" else None


def provider_fail(s: State, r: int) -> State | None:
    return _at(s, r, stage="failed") if s.stage[r] == "generate" else None


def settle(s: State, r: int) -> State | None:
    if s.stage[r] != "done" or s.settlements[r] != 0:
        return None
    after = _at(s, r, charged=s.used[r], reserved=0, settlements=1)
    return replace(after, balance=s.balance + s.reserved[r] - s.used[r])


def release(s: State, r: int) -> State | None:
    if s.stage[r] != "failed" or s.settlements[r] != 0 or s.reserved[r] <= 0:
        return None
    return replace(_at(s, r, reserved=0, settlements=1), balance=s.balance + s.reserved[r])


SERVE: dict[str, ActionFn] = {
    "Reserve": reserve,
    "RejectNoFunds": reject_no_funds,
    "Reject": reject,
    "Tokenize": tokenize,
    "EmitChunk": emit_chunk,
    "Finish": finish,
    "ProviderFail": provider_fail,
    "Settle": settle,
    "Release": release,
}
ACTIONS: dict[str, ActionFn] = {"Receive": receive, **SERVE}


def successors(s: State) -> Iterator[tuple[str, State]]:
    for r in range(len(REQUESTS)):
        for name, action in ACTIONS.items():
            after = action(s, r)
            if after is not None:
                yield f"{name}(r{r + 1})", after
    if all(st in TERMINAL and held == 0 for st, held in zip(s.stage, s.reserved, strict=True)):
        yield "Terminating", s


FAIRNESS = [frozenset(f"{name}(r{r + 1})" for name in SERVE) for r in range(len(REQUESTS))]


def type_ok(s: State) -> bool:
    return (
        all(st in STAGES for st in s.stage)
        and s.balance >= 0
        and all(0 <= v <= HOLD for v in s.reserved)
        and all(0 <= v <= MAX_TOKENS for v in s.used)
        and all(0 <= v <= MAX_TOKENS for v in s.charged)
        and all(v >= 0 for v in s.settlements)
    )


def credit_conserved(s: State) -> bool:
    return s.balance + sum(s.reserved) + sum(s.charged) == BUDGET


def reserved_before_generate(s: State) -> bool:
    return all(
        st != "generate" or held == HOLD for st, held in zip(s.stage, s.reserved, strict=True)
    )


def settled_once_at_terminal(s: State) -> bool:
    return all(
        s.settlements[r] <= 1
        and (s.settlements[r] != 1 or (s.stage[r] in TERMINAL and s.reserved[r] == 0))
        for r in range(len(REQUESTS))
    )


def charge_is_usage(s: State) -> bool:
    return all(
        (not (s.stage[r] == "done" and s.settlements[r] == 1) or s.charged[r] == s.used[r])
        and (not (s.stage[r] == "failed" or s.settlements[r] == 0) or s.charged[r] == 0)
        for r in range(len(REQUESTS))
    )


INVARIANTS: dict[str, Callable[[State], bool]] = {
    "TypeOK": type_ok,
    "BalanceNeverNegative": lambda s: s.balance >= 0,
    "CreditConserved": credit_conserved,
    "ReservedBeforeGenerate": reserved_before_generate,
    "SettledOnceAtTerminal": settled_once_at_terminal,
    "ChargeIsUsage": charge_is_usage,
}


def settlement_final(s: State, t: State) -> bool:
    return all(
        s.settlements[r] != 1 or (t.charged[r] == s.charged[r] and t.reserved[r] == 0)
        for r in range(len(REQUESTS))
    )


ACTION_PROPERTIES: dict[str, Callable[[State, State], bool]] = {
    "SettlementFinal": settlement_final,
}

LeadsTo = tuple[Callable[[State], bool], Callable[[State], bool]]


def _reservation_settled(r: int) -> LeadsTo:
    return (lambda s: s.reserved[r] > 0, lambda s: s.reserved[r] == 0)


def _terminal_settled(r: int) -> LeadsTo:
    return (
        lambda s: s.stage[r] in TERMINAL and s.reserved[r] > 0,
        lambda s: s.settlements[r] == 1,
    )


LEADS_TO: dict[str, list[LeadsTo]] = {
    "ReservationSettled": [_reservation_settled(r) for r in range(len(REQUESTS))],
    "TerminalSettled": [_terminal_settled(r) for r in range(len(REQUESTS))],
}
