"""Python transcription of formal/xrouter_inflight.tla: N requests, an in-flight limit per
provider pool. Functions of the spec (stage[r], ...) are tuples indexed like REQUESTS."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

REQUESTS = ("r1", "r2", "r3")
PROVIDERS = ("p1", "p2")
LIMIT = 1
"""The constants of formal/xrouter_inflight.cfg."""

STAGES = frozenset({"idle", "ingest", "generate", "done", "failed"})
TERMINAL = frozenset({"done", "failed"})
FAILURE_OUTCOMES = frozenset({"overloaded", "invalid_request", "provider_error"})
OUTCOMES = frozenset({"none", "completed"}) | FAILURE_OUTCOMES

TLA_VARIABLES = {"stage": "stage", "route": "route", "holds": "holds", "outcome": "outcome"}


@dataclass(frozen=True, slots=True)
class Config:
    requests: int = len(REQUESTS)
    providers: tuple[str, ...] = PROVIDERS
    limit: int = LIMIT


@dataclass(frozen=True, slots=True)
class State:
    stage: tuple[str, ...]
    route: tuple[str, ...]
    holds: tuple[bool, ...]
    outcome: tuple[str, ...]


def _set(values: tuple[object, ...], index: int, value: object) -> tuple[object, ...]:
    return (*values[:index], value, *values[index + 1 :])


def _at(s: State, r: int, **changes: object) -> State:
    """[f EXCEPT ![r] = v] for each variable f named in `changes`."""
    updated: dict[str, Any] = {n: _set(getattr(s, n), r, v) for n, v in changes.items()}
    return replace(s, **updated)


def init(config: Config = Config()) -> list[State]:
    n = config.requests
    return [
        State(stage=("idle",) * n, route=route, holds=(False,) * n, outcome=("none",) * n)
        for route in itertools.product(config.providers, repeat=n)
    ]


def in_flight(s: State, provider: str) -> int:
    return sum(1 for held, p in zip(s.holds, s.route, strict=True) if held and p == provider)


ActionFn = Callable[[State, int, Config], State | None]


def receive(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "idle":
        return None
    return _at(s, r, stage="ingest", holds=in_flight(s, s.route[r]) < config.limit)


def reject_overloaded(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "ingest" or s.holds[r]:
        return None
    return _at(s, r, stage="failed", outcome="overloaded")


def reject(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "ingest" or not s.holds[r]:
        return None
    return _at(s, r, stage="failed", holds=False, outcome="invalid_request")


def tokenize(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "ingest" or not s.holds[r]:
        return None
    return _at(s, r, stage="generate")


def finish(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "generate":
        return None
    return _at(s, r, stage="done", holds=False, outcome="completed")


def provider_fail(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "generate":
        return None
    return _at(s, r, stage="failed", holds=False, outcome="provider_error")


SERVE: dict[str, ActionFn] = {
    "RejectOverloaded": reject_overloaded,
    "Reject": reject,
    "Tokenize": tokenize,
    "Finish": finish,
    "ProviderFail": provider_fail,
}
ACTIONS: dict[str, ActionFn] = {"Receive": receive, **SERVE}


def successors(s: State, config: Config = Config()) -> Iterator[tuple[str, State]]:
    for r in range(len(s.stage)):
        for name, action in ACTIONS.items():
            after = action(s, r, config)
            if after is not None:
                yield f"{name}(r{r + 1})", after
    if all(stage in TERMINAL for stage in s.stage):
        yield "Terminating", s


def fairness(config: Config = Config()) -> list[frozenset[str]]:
    """WF_vars(Serve(r)) for each r, as groups of successor labels."""
    return [frozenset(f"{name}(r{r + 1})" for name in SERVE) for r in range(config.requests)]


# --- invariants --------------------------------------------------------------------------------


def type_ok(s: State, config: Config = Config()) -> bool:
    n = config.requests
    return (
        len(s.stage) == len(s.route) == len(s.holds) == len(s.outcome) == n
        and all(stage in STAGES for stage in s.stage)
        and all(p in config.providers for p in s.route)
        and all(isinstance(h, bool) for h in s.holds)
        and all(o in OUTCOMES for o in s.outcome)
    )


def limit_respected(s: State, config: Config = Config()) -> bool:
    return all(in_flight(s, p) <= config.limit for p in config.providers)


def slots_match_work(s: State) -> bool:
    return all(
        (stage != "generate" or held) and (not held or stage in ("ingest", "generate"))
        for stage, held in zip(s.stage, s.holds, strict=True)
    )


def no_silent_drop(s: State) -> bool:
    return all(
        (stage == "done") == (outcome == "completed")
        and (stage == "failed") == (outcome in FAILURE_OUTCOMES)
        for stage, outcome in zip(s.stage, s.outcome, strict=True)
    )


def invariants(config: Config = Config()) -> dict[str, Callable[[State], bool]]:
    return {
        "TypeOK": lambda s: type_ok(s, config),
        "LimitRespected": lambda s: limit_respected(s, config),
        "SlotsMatchWork": slots_match_work,
        "NoSilentDrop": no_silent_drop,
    }


# --- temporal properties -----------------------------------------------------------------------


def refused_only_when_full(config: Config = Config()) -> Callable[[State, State], bool]:
    def prop(s: State, t: State) -> bool:
        return all(
            not (s.stage[r] == "idle" and t.stage[r] == "ingest" and not t.holds[r])
            or in_flight(s, s.route[r]) >= config.limit
            for r in range(len(s.stage))
        )

    return prop


def action_properties(config: Config = Config()) -> dict[str, Callable[[State, State], bool]]:
    return {"RefusedOnlyWhenFull": refused_only_when_full(config)}


LeadsTo = tuple[Callable[[State], bool], Callable[[State], bool]]


def leads_to(config: Config = Config()) -> dict[str, list[LeadsTo]]:
    """Each \\A r : P(r) ~> Q(r) property, as one (P, Q) pair per request."""

    def refusal(r: int) -> LeadsTo:
        return (
            lambda s: s.stage[r] == "ingest" and not s.holds[r],
            lambda s: s.outcome[r] == "overloaded",
        )

    def finishes(r: int) -> LeadsTo:
        return (lambda s: s.stage[r] == "ingest", lambda s: s.stage[r] in TERMINAL)

    return {
        "RefusalAnswered": [refusal(r) for r in range(config.requests)],
        "EveryRequestFinishes": [finishes(r) for r in range(config.requests)],
    }
