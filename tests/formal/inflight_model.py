"""Python transcription of formal/xrouter_inflight.tla: N requests, an in-flight limit per
provider pool, a FIFO waiting queue in the pools that let requests wait, a concurrency limit per
gateway key, and leases (slots, places in the queue, key leases) that expire when their worker
dies. Functions of the spec over Requests (stage[r], ...) are tuples indexed like the requests;
functions over Providers (queue[p]) are tuples indexed like `Config.providers`; a queue holds
request indices, oldest first."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

REQUESTS = ("r1", "r2", "r3")
PROVIDERS = ("p1", "p2")
QUEUEING_POOLS = ("p1",)
LIMIT = 1
KEYS = ("k1", "k2")
KEY_LIMIT = 2
"""The constants of formal/xrouter_inflight.cfg."""

STAGES = frozenset({"idle", "ingest", "waiting", "generate", "done", "failed"})
TERMINAL = frozenset({"done", "failed"})
FAILURE_OUTCOMES = frozenset(
    {
        "rate_limited",
        "overloaded",
        "queue_timeout",
        "client_disconnect",
        "invalid_request",
        "provider_error",
    }
)
OUTCOMES = frozenset({"none", "completed"}) | FAILURE_OUTCOMES
WAIT_OUTCOMES = frozenset({"queue_timeout", "client_disconnect"})
"""The ways out of the queue other than a slot."""

TLA_VARIABLES = {
    "stage": "stage",
    "route": "route",
    "holds": "holds",
    "queue": "queue",
    "crashed": "crashed",
    "outcome": "outcome",
    "key": "key",
    "keyLease": "key_lease",
}


@dataclass(frozen=True, slots=True)
class Config:
    requests: int = len(REQUESTS)
    providers: tuple[str, ...] = PROVIDERS
    queueing_pools: tuple[str, ...] = QUEUEING_POOLS
    limit: int = LIMIT
    keys: tuple[str, ...] = KEYS
    key_limit: int = KEY_LIMIT


@dataclass(frozen=True, slots=True)
class State:
    stage: tuple[str, ...]
    route: tuple[str, ...]
    holds: tuple[bool, ...]
    queue: tuple[tuple[int, ...], ...]
    crashed: tuple[bool, ...]
    outcome: tuple[str, ...]
    key: tuple[str, ...]
    key_lease: tuple[bool, ...]


def _set(values: tuple[Any, ...], index: int, value: object) -> tuple[Any, ...]:
    return (*values[:index], value, *values[index + 1 :])


def _at(s: State, r: int, **changes: object) -> State:
    """[f EXCEPT ![r] = v] for each variable f over Requests named in `changes`."""
    updated: dict[str, Any] = {n: _set(getattr(s, n), r, v) for n, v in changes.items()}
    return replace(s, **updated)


def _pool(config: Config, provider: str) -> int:
    return config.providers.index(provider)


def queue_of(s: State, provider: str, config: Config) -> tuple[int, ...]:
    """queue[p]."""
    return s.queue[_pool(config, provider)]


def _with_queue(s: State, provider: str, config: Config, queue: tuple[int, ...]) -> State:
    """[queue EXCEPT ![p] = ...]."""
    return replace(s, queue=_set(s.queue, _pool(config, provider), queue))


def init(config: Config = Config()) -> list[State]:
    n = config.requests
    return [
        State(
            stage=("idle",) * n,
            route=route,
            holds=(False,) * n,
            queue=((),) * len(config.providers),
            crashed=(False,) * n,
            outcome=("none",) * n,
            key=key,
            key_lease=(False,) * n,
        )
        for route in itertools.product(config.providers, repeat=n)
        for key in itertools.product(config.keys, repeat=n)
    ]


def in_flight(s: State, provider: str) -> int:
    return sum(1 for held, p in zip(s.holds, s.route, strict=True) if held and p == provider)


def key_leases(s: State, key: str) -> int:
    """KeyLeases(k): the leases held on key k's concurrency limit."""
    return sum(1 for held, k in zip(s.key_lease, s.key, strict=True) if held and k == key)


def key_free(s: State, key: str, config: Config) -> bool:
    """KeyFree(k)."""
    return key_leases(s, key) < config.key_limit


def queued(s: State, r: int, config: Config) -> bool:
    """Queued(r): r is in its pool's queue."""
    return r in queue_of(s, s.route[r], config)


def free_for(s: State, provider: str, config: Config) -> bool:
    """FreeFor(p): a slot is free and nobody waits for it."""
    return in_flight(s, provider) < config.limit and not queue_of(s, provider, config)


ActionFn = Callable[[State, int, Config], State | None]


def receive(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "idle":
        return None
    if not key_free(s, s.key[r], config):
        return _at(s, r, stage="ingest")
    p = s.route[r]
    if free_for(s, p, config) or p not in config.queueing_pools:
        return _at(s, r, stage="ingest", key_lease=True, holds=free_for(s, p, config))
    waiting = _at(s, r, stage="waiting", key_lease=True)
    return _with_queue(waiting, p, config, (*queue_of(s, p, config), r))


def reject_rate_limited(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "ingest" or s.key_lease[r] or s.crashed[r]:
        return None
    return _at(s, r, stage="failed", outcome="rate_limited")


def reject_overloaded(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "ingest" or not s.key_lease[r] or s.holds[r] or s.crashed[r]:
        return None
    return _at(s, r, stage="failed", key_lease=False, outcome="overloaded")


def admit(s: State, r: int, config: Config) -> State | None:
    p = s.route[r]
    queue = queue_of(s, p, config)
    if (
        s.stage[r] != "waiting"
        or s.crashed[r]
        or not queue
        or queue[0] != r
        or in_flight(s, p) >= config.limit
    ):
        return None
    return _with_queue(_at(s, r, stage="ingest", holds=True), p, config, queue[1:])


def _without(s: State, r: int, config: Config) -> State:
    """[queue EXCEPT ![route[r]] = Without(@, r)]."""
    p = s.route[r]
    return _with_queue(s, p, config, tuple(x for x in queue_of(s, p, config) if x != r))


def queue_timeout(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "waiting" or s.crashed[r]:
        return None
    return _without(_at(s, r, stage="failed", key_lease=False, outcome="queue_timeout"), r, config)


def leave_queue(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "waiting" or s.crashed[r]:
        return None
    failed = _at(s, r, stage="failed", key_lease=False, outcome="client_disconnect")
    return _without(failed, r, config)


def reject(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "ingest" or not s.holds[r] or s.crashed[r]:
        return None
    return _at(s, r, stage="failed", holds=False, key_lease=False, outcome="invalid_request")


def tokenize(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "ingest" or not s.holds[r] or s.crashed[r]:
        return None
    return _at(s, r, stage="generate")


def finish(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "generate" or s.crashed[r]:
        return None
    return _at(s, r, stage="done", holds=False, key_lease=False, outcome="completed")


def provider_fail(s: State, r: int, config: Config) -> State | None:
    if s.stage[r] != "generate" or s.crashed[r]:
        return None
    return _at(s, r, stage="failed", holds=False, key_lease=False, outcome="provider_error")


def crash(s: State, r: int, config: Config) -> State | None:
    if s.crashed[r] or s.stage[r] not in ("waiting", "generate"):
        return None
    return _at(s, r, crashed=True)


def leased(s: State, r: int, config: Config) -> bool:
    """Leased(r): r holds a lease of any kind: a slot, a place in a queue, a key lease."""
    return s.holds[r] or queued(s, r, config) or s.key_lease[r]


def expire(s: State, r: int, config: Config) -> State | None:
    if not s.crashed[r] or not leased(s, r, config):
        return None
    return _without(_at(s, r, holds=False, key_lease=False), r, config)


SERVE: dict[str, ActionFn] = {
    "RejectRateLimited": reject_rate_limited,
    "RejectOverloaded": reject_overloaded,
    "Admit": admit,
    "QueueTimeout": queue_timeout,
    "Reject": reject,
    "Tokenize": tokenize,
    "Finish": finish,
    "ProviderFail": provider_fail,
    "Expire": expire,
}
"""Serve(r): what the gateway does for r on its own, weakly fair."""
ACTIONS: dict[str, ActionFn] = {
    "Receive": receive,
    "LeaveQueue": leave_queue,
    "Crash": crash,
    **SERVE,
}


def _stopped(s: State, r: int, config: Config) -> bool:
    """Terminating's condition for r: finished, or crashed with its lease gone."""
    return s.stage[r] in TERMINAL or (s.crashed[r] and not leased(s, r, config))


def successors(s: State, config: Config = Config()) -> Iterator[tuple[str, State]]:
    for r in range(len(s.stage)):
        for name, action in ACTIONS.items():
            after = action(s, r, config)
            if after is not None:
                yield f"{name}(r{r + 1})", after
    if all(_stopped(s, r, config) for r in range(len(s.stage))):
        yield "Terminating", s


def fairness(config: Config = Config()) -> list[frozenset[str]]:
    """WF_vars(Serve(r)) for each r, as groups of successor labels."""
    return [frozenset(f"{name}(r{r + 1})" for name in SERVE) for r in range(config.requests)]


# --- invariants --------------------------------------------------------------------------------


def type_ok(s: State, config: Config = Config()) -> bool:
    n = config.requests
    lengths = {len(s.stage), len(s.route), len(s.holds), len(s.crashed), len(s.outcome)}
    return (
        lengths | {len(s.key), len(s.key_lease)} == {n}
        and len(s.queue) == len(config.providers)
        and all(stage in STAGES for stage in s.stage)
        and all(p in config.providers for p in s.route)
        and all(isinstance(h, bool) for h in s.holds)
        and all(isinstance(r, int) and 0 <= r < n for queue in s.queue for r in queue)
        and all(isinstance(c, bool) for c in s.crashed)
        and all(o in OUTCOMES for o in s.outcome)
        and all(k in config.keys for k in s.key)
        and all(isinstance(lease, bool) for lease in s.key_lease)
    )


def limit_respected(s: State, config: Config = Config()) -> bool:
    return all(in_flight(s, p) <= config.limit for p in config.providers)


def key_limit_respected(s: State, config: Config = Config()) -> bool:
    return all(key_leases(s, k) <= config.key_limit for k in config.keys)


def key_leases_match_work(s: State) -> bool:
    return all(
        (not lease or stage in ("ingest", "waiting", "generate"))
        and (stage not in ("waiting", "generate") or crashed or lease)
        and (not held or lease)
        for stage, lease, held, crashed in zip(
            s.stage, s.key_lease, s.holds, s.crashed, strict=True
        )
    )


def slots_match_work(s: State) -> bool:
    return all(
        (stage != "generate" or crashed or held) and (not held or stage in ("ingest", "generate"))
        for stage, held, crashed in zip(s.stage, s.holds, s.crashed, strict=True)
    )


def queue_matches_waiters(s: State, config: Config = Config()) -> bool:
    pools_ok = all(
        len(set(queue)) == len(queue) and (not queue or p in config.queueing_pools)
        for p, queue in zip(config.providers, s.queue, strict=True)
    )
    return pools_ok and all(
        (not queued(s, r, config) or s.stage[r] == "waiting")
        and (s.stage[r] != "waiting" or s.crashed[r] or queued(s, r, config))
        for r in range(len(s.stage))
    )


def no_silent_drop(s: State, config: Config = Config()) -> bool:
    return all(
        (stage == "done") == (outcome == "completed")
        and (stage == "failed") == (outcome in FAILURE_OUTCOMES)
        and (outcome != "overloaded" or p not in config.queueing_pools)
        and (outcome not in WAIT_OUTCOMES or p in config.queueing_pools)
        for stage, outcome, p in zip(s.stage, s.outcome, s.route, strict=True)
    )


def invariants(config: Config = Config()) -> dict[str, Callable[[State], bool]]:
    return {
        "TypeOK": lambda s: type_ok(s, config),
        "LimitRespected": lambda s: limit_respected(s, config),
        "SlotsMatchWork": slots_match_work,
        "QueueMatchesWaiters": lambda s: queue_matches_waiters(s, config),
        "NoSilentDrop": lambda s: no_silent_drop(s, config),
        "KeyLimitRespected": lambda s: key_limit_respected(s, config),
        "KeyLeasesMatchWork": key_leases_match_work,
    }


# --- temporal properties -----------------------------------------------------------------------


def refused_only_when_full(config: Config = Config()) -> Callable[[State, State], bool]:
    def prop(s: State, t: State) -> bool:
        return all(
            not (s.stage[r] == "idle" and t.stage[r] != "idle" and t.key_lease[r])
            or t.holds[r]
            or not free_for(s, s.route[r], config)
            for r in range(len(s.stage))
        )

    return prop


def key_refused_only_when_full(config: Config = Config()) -> Callable[[State, State], bool]:
    def prop(s: State, t: State) -> bool:
        return all(
            not (s.stage[r] == "idle" and t.stage[r] != "idle" and not t.key_lease[r])
            or not key_free(s, s.key[r], config)
            for r in range(len(s.stage))
        )

    return prop


def fifo_admission(config: Config = Config()) -> Callable[[State, State], bool]:
    def prop(s: State, t: State) -> bool:
        def ahead_is_clear(r: int) -> bool:
            queue = queue_of(s, s.route[r], config)
            return not queue or queue[0] == r

        return all(s.holds[r] or not t.holds[r] or ahead_is_clear(r) for r in range(len(s.stage)))

    return prop


def live_lease_kept(config: Config = Config()) -> Callable[[State, State], bool]:
    def prop(s: State, t: State) -> bool:
        return all(
            s.crashed[r]
            or (
                (not (s.holds[r] and not t.holds[r]) or t.stage[r] in TERMINAL)
                and (not (s.key_lease[r] and not t.key_lease[r]) or t.stage[r] in TERMINAL)
                and (
                    not (queued(s, r, config) and not queued(t, r, config))
                    or t.holds[r]
                    or t.stage[r] == "failed"
                )
            )
            for r in range(len(s.stage))
        )

    return prop


def action_properties(config: Config = Config()) -> dict[str, Callable[[State, State], bool]]:
    return {
        "RefusedOnlyWhenFull": refused_only_when_full(config),
        "KeyRefusedOnlyWhenFull": key_refused_only_when_full(config),
        "FifoAdmission": fifo_admission(config),
        "LiveLeaseKept": live_lease_kept(config),
    }


LeadsTo = tuple[Callable[[State], bool], Callable[[State], bool]]


def leads_to(config: Config = Config()) -> dict[str, list[LeadsTo]]:
    """Each \\A r : P(r) ~> Q(r) property, as one (P, Q) pair per request."""

    def refusal(r: int) -> LeadsTo:
        return (
            lambda s: (
                s.stage[r] == "ingest" and s.key_lease[r] and not s.holds[r] and not s.crashed[r]
            ),
            lambda s: s.outcome[r] == "overloaded",
        )

    def rate_limit(r: int) -> LeadsTo:
        return (
            lambda s: s.stage[r] == "ingest" and not s.key_lease[r] and not s.crashed[r],
            lambda s: s.outcome[r] == "rate_limited",
        )

    def key_lease_released(r: int) -> LeadsTo:
        return (lambda s: s.key_lease[r], lambda s: not s.key_lease[r])

    def waiter(r: int) -> LeadsTo:
        return (
            lambda s: s.stage[r] == "waiting",
            lambda s: s.holds[r] or s.stage[r] == "failed" or s.crashed[r],
        )

    def finishes(r: int) -> LeadsTo:
        return (
            lambda s: s.stage[r] in ("ingest", "waiting"),
            lambda s: s.stage[r] in TERMINAL or s.crashed[r],
        )

    def lease_freed(r: int) -> LeadsTo:
        return (
            lambda s: s.crashed[r] and leased(s, r, config),
            lambda s: not leased(s, r, config),
        )

    n = config.requests
    return {
        "RefusalAnswered": [refusal(r) for r in range(n)],
        "RateLimitAnswered": [rate_limit(r) for r in range(n)],
        "WaiterAnswered": [waiter(r) for r in range(n)],
        "EveryRequestFinishes": [finishes(r) for r in range(n)],
        "CrashedLeaseFreed": [lease_freed(r) for r in range(n)],
        "KeyLeaseReleased": [key_lease_released(r) for r in range(n)],
    }
