"""Python transcription of formal/xrouter.tla: the lifecycle of one request.

Same state variables (snake_case here, camelCase in the spec; `TLA_VARIABLES` maps them), one
function per TLA+ action with the same name, the same invariants and properties. The test
suite explores it exhaustively (tests/formal/test_lifecycle_model.py) and replays runtime
traces against it (tests/formal/trace_check.py). A change to one side changes the other.

`max_chunks=None` lifts the spec's bounds, MaxChunks and MaxAttempts: runtime traces have as many
chunks as the provider produced and as many attempts as the fallback chain allowed; the bounds
only keep the state space finite for exhaustive checking (with a bound given, MaxAttempts is
MAX_ATTEMPTS).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

STAGES = frozenset({"idle", "ingest", "tokenize", "generate", "done", "failed", "cancelled"})
TERMINAL = frozenset({"done", "failed", "cancelled"})
BEFORE_GENERATE = frozenset({"idle", "ingest", "tokenize"})
ACCESS_REFUSALS = frozenset({"unauthenticated", "model_not_allowed", "rate_limited"})
"""AccessRefusals: the refusals of access control, checks of ingest."""
REJECT_OUTCOMES = frozenset({"invalid_request"}) | ACCESS_REFUSALS
"""RejectOutcomes: the values of Reject's `\\E reason`."""
FAILURE_OUTCOMES = REJECT_OUTCOMES | {"provider_error", "timeout", "client_disconnect"}
OUTCOMES = frozenset({"none", "completed", "cancelled"}) | FAILURE_OUTCOMES

MAX_CHUNKS = 3
"""MaxChunks in formal/xrouter.cfg."""
MAX_ATTEMPTS = 3
"""MaxAttempts in formal/xrouter.cfg."""


@dataclass(frozen=True, slots=True)
class State:
    stage: str
    chunks: int
    delivered: int
    client_connected: bool
    entered_generate: bool
    outcome: str
    usage_records: int
    background: bool = False
    attempts: int = 0


TLA_VARIABLES = {
    "stage": "stage",
    "chunks": "chunks",
    "delivered": "delivered",
    "clientConnected": "client_connected",
    "enteredGenerate": "entered_generate",
    "outcome": "outcome",
    "usageRecords": "usage_records",
    "background": "background",
    "attempts": "attempts",
}

INIT = State(
    stage="idle",
    chunks=0,
    delivered=0,
    client_connected=True,
    entered_generate=False,
    outcome="none",
    usage_records=0,
    background=False,
    attempts=0,
)

Bound = int | None
"""MaxChunks (MaxAttempts is then MAX_ATTEMPTS), or None: both bounds lifted."""
ActionFn = Callable[[State, Bound], State | None]


# --- actions: each returns the next state, or None when the action is not enabled -------------


def receive_as(background: bool) -> ActionFn:
    """Receive with one value of its `\\E isBackground \\in BOOLEAN`."""

    def receive_for(s: State, max_chunks: Bound) -> State | None:
        if s.stage != "idle":
            return None
        return replace(s, stage="ingest", background=background)

    return receive_for


RECEIVES: dict[bool, ActionFn] = {False: receive_as(False), True: receive_as(True)}
"""Receive, one function per choice of `background`."""

receive = RECEIVES[False]
"""Receive as the runtime's state machine sees it (the lifecycle is built background or not
before its first step): one choice stands for both."""


def ingest(s: State, max_chunks: Bound) -> State | None:
    if s.stage != "ingest":
        return None
    return replace(s, stage="tokenize")


def reject_as(reason: str) -> ActionFn:
    """Reject with one value of its `\\E reason \\in RejectOutcomes`."""
    if reason not in REJECT_OUTCOMES:
        raise ValueError(f"{reason} is not an outcome of Reject")

    def reject_for(s: State, max_chunks: Bound) -> State | None:
        if s.stage not in ("ingest", "tokenize"):
            return None
        if reason in ACCESS_REFUSALS and s.stage != "ingest":
            return None
        return replace(s, stage="failed", outcome=reason)

    return reject_for


REJECTS: dict[str, ActionFn] = {reason: reject_as(reason) for reason in sorted(REJECT_OUTCOMES)}
"""Reject, one function per outcome it may carry."""

reject = REJECTS["invalid_request"]
"""Reject as the runtime's state machine sees it (`Lifecycle.step` is not told the reason):
the choice enabled wherever any choice is, in ingest and tokenize."""


def tokenize(s: State, max_chunks: Bound) -> State | None:
    if s.stage != "tokenize":
        return None
    return replace(s, stage="generate", entered_generate=True, attempts=1)


def emit_chunk(s: State, max_chunks: Bound) -> State | None:
    if s.stage != "generate" or (max_chunks is not None and s.chunks >= max_chunks):
        return None
    delivered = s.delivered + 1 if s.client_connected else s.delivered
    return replace(s, chunks=s.chunks + 1, delivered=delivered)


def next_attempt(s: State, max_chunks: Bound) -> State | None:
    """The next model of the fallback chain, only while no chunk exists."""
    if s.stage != "generate" or s.chunks != 0:
        return None
    if max_chunks is not None and s.attempts >= MAX_ATTEMPTS:
        return None
    return replace(s, attempts=s.attempts + 1)


def finish(s: State, max_chunks: Bound) -> State | None:
    if s.stage != "generate":
        return None
    return replace(s, stage="done", outcome="completed")


def provider_fail(s: State, max_chunks: Bound) -> State | None:
    if s.stage != "generate":
        return None
    return replace(s, stage="failed", outcome="provider_error")


def time_out(s: State, max_chunks: Bound) -> State | None:
    if s.stage != "generate":
        return None
    return replace(s, stage="failed", outcome="timeout")


def disconnect_early(s: State, max_chunks: Bound) -> State | None:
    if s.stage not in ("ingest", "tokenize") or not s.client_connected:
        return None
    return replace(s, stage="failed", client_connected=False, outcome="client_disconnect")


def disconnect_late(s: State, max_chunks: Bound) -> State | None:
    if s.stage != "generate" or not s.client_connected:
        return None
    return replace(s, client_connected=False)


def record_usage(s: State, max_chunks: Bound) -> State | None:
    if s.stage not in TERMINAL or not s.entered_generate or s.usage_records != 0:
        return None
    return replace(s, usage_records=s.usage_records + 1)


def cancel(s: State, max_chunks: Bound) -> State | None:
    if s.stage != "generate" or not s.background:
        return None
    return replace(s, stage="cancelled", outcome="cancelled")


def terminating(s: State, max_chunks: Bound) -> State | None:
    """Not a runtime step: the finished request stutters."""
    if s.stage not in TERMINAL or (s.entered_generate and s.usage_records != 1):
        return None
    return s


ACTIONS: dict[str, ActionFn] = {
    "Receive": receive,
    "Ingest": ingest,
    "Reject": reject,
    "Tokenize": tokenize,
    "EmitChunk": emit_chunk,
    "NextAttempt": next_attempt,
    "Finish": finish,
    "ProviderFail": provider_fail,
    "TimeOut": time_out,
    "DisconnectEarly": disconnect_early,
    "DisconnectLate": disconnect_late,
    "RecordUsage": record_usage,
    "Cancel": cancel,
}
"""The runtime actions, by their TLA+ (and Action enum) names."""

NEXT: dict[str, ActionFn] = {**ACTIONS, "Terminating": terminating}
"""The disjuncts of Next."""

FAIRNESS: dict[str, frozenset[str]] = {
    "Admission": frozenset({"Ingest", "Reject", "Tokenize", "DisconnectEarly"}),
    "Generation": frozenset(
        {"EmitChunk", "NextAttempt", "Finish", "ProviderFail", "TimeOut", "DisconnectLate"}
    ),
    "RecordUsage": frozenset({"RecordUsage"}),
}
"""Each group is weakly fair: WF_vars(group)."""


def choices(action: ActionFn) -> list[ActionFn]:
    """The steps `action` stands for: every outcome of Reject when it is the model's own Reject,
    both choices of Receive when it is the model's own Receive, else `action` alone (a test's
    replacement of an action stays one step)."""
    if action is reject:
        return list(REJECTS.values())
    if action is receive:
        return list(RECEIVES.values())
    return [action]


def successors(s: State, max_chunks: Bound = MAX_CHUNKS) -> Iterator[tuple[str, State]]:
    for name, action in NEXT.items():
        for choice in choices(action):
            after = choice(s, max_chunks)
            if after is not None:
                yield name, after


# --- invariants --------------------------------------------------------------------------------


def type_ok(s: State, max_chunks: Bound = MAX_CHUNKS) -> bool:
    limit = max_chunks if max_chunks is not None else s.chunks
    return (
        s.stage in STAGES
        and 0 <= s.chunks <= limit
        and 0 <= s.delivered <= limit
        and isinstance(s.client_connected, bool)
        and isinstance(s.entered_generate, bool)
        and s.outcome in OUTCOMES
        and s.usage_records >= 0
        and isinstance(s.background, bool)
        and 0 <= s.attempts <= (MAX_ATTEMPTS if max_chunks is not None else s.attempts)
    )


def completion_only_in_done(s: State) -> bool:
    return (s.outcome == "completed") == (s.stage == "done")


def failure_explicit(s: State) -> bool:
    return (s.stage == "failed") == (s.outcome in FAILURE_OUTCOMES)


def cancel_only_background(s: State) -> bool:
    cancelled = s.stage == "cancelled"
    return cancelled == (s.outcome == "cancelled") and (
        not cancelled or (s.background and s.entered_generate)
    )


def no_output_before_generate(s: State) -> bool:
    return (
        (s.stage not in BEFORE_GENERATE or s.chunks == 0)
        and (s.chunks == 0 or s.entered_generate)
        and s.delivered <= s.chunks
    )


def disconnect_safety(s: State) -> bool:
    early = (
        s.client_connected
        or s.entered_generate
        or (s.stage == "failed" and s.outcome == "client_disconnect")
    )
    late = s.outcome != "client_disconnect" or not s.entered_generate
    return early and late


def usage_once_at_terminal(s: State) -> bool:
    return s.usage_records <= 1 and (
        s.usage_records != 1 or (s.stage in TERMINAL and s.entered_generate)
    )


def attempts_counted(s: State, max_chunks: Bound = MAX_CHUNKS) -> bool:
    limit = MAX_ATTEMPTS if max_chunks is not None else s.attempts
    return (s.attempts >= 1) == s.entered_generate and s.attempts <= limit


def access_refused_before_tokenize(s: State) -> bool:
    return s.outcome not in ACCESS_REFUSALS or (
        s.stage == "failed" and not s.entered_generate and s.chunks == 0 and s.usage_records == 0
    )


def invariants(max_chunks: Bound = MAX_CHUNKS) -> dict[str, Callable[[State], bool]]:
    """The spec's invariants by name, for the given MaxChunks (None: unbounded)."""
    return {
        "TypeOK": lambda s: type_ok(s, max_chunks),
        "CompletionOnlyInDone": completion_only_in_done,
        "FailureExplicit": failure_explicit,
        "NoOutputBeforeGenerate": no_output_before_generate,
        "DisconnectSafety": disconnect_safety,
        "UsageOnceAtTerminal": usage_once_at_terminal,
        "AccessRefusedBeforeTokenize": access_refused_before_tokenize,
        "CancelOnlyBackground": cancel_only_background,
        "AttemptsCounted": lambda s: attempts_counted(s, max_chunks),
    }


# --- temporal properties -----------------------------------------------------------------------


def terminal_is_final(s: State, t: State) -> bool:
    if s.stage not in TERMINAL:
        return True
    return replace(t, usage_records=s.usage_records) == s


def writes_stop_on_disconnect(s: State, t: State) -> bool:
    return s.client_connected or (t.delivered == s.delivered and not t.client_connected)


def access_checked_in_ingest(s: State, t: State) -> bool:
    return t.outcome not in ACCESS_REFUSALS or t.outcome == s.outcome or s.stage == "ingest"


def no_attempt_after_chunk(s: State, t: State) -> bool:
    return t.attempts <= s.attempts or (s.chunks == 0 and s.delivered == 0)


def background_chosen_at_receive(s: State, t: State) -> bool:
    return s.stage == "idle" or t.background == s.background


ACTION_PROPERTIES: dict[str, Callable[[State, State], bool]] = {
    "TerminalIsFinal": terminal_is_final,
    "WritesStopOnDisconnect": writes_stop_on_disconnect,
    "AccessCheckedInIngest": access_checked_in_ingest,
    "BackgroundChosenAtReceive": background_chosen_at_receive,
    "NoAttemptAfterChunk": no_attempt_after_chunk,
}
"""[][A]_vars properties: checked on every step."""

LEADS_TO: dict[str, tuple[Callable[[State], bool], Callable[[State], bool]]] = {
    "GenerateTerminates": (lambda s: s.stage == "generate", lambda s: s.stage in TERMINAL),
    "DisconnectedGenerationTerminates": (
        lambda s: s.stage == "generate" and not s.client_connected,
        lambda s: s.stage in TERMINAL,
    ),
    "UsageEventuallyRecorded": (
        lambda s: s.entered_generate and s.stage in TERMINAL,
        lambda s: s.usage_records == 1,
    ),
    "RequestTerminates": (lambda s: s.stage == "ingest", lambda s: s.stage in TERMINAL),
}
"""P ~> Q properties, checked under FAIRNESS."""
