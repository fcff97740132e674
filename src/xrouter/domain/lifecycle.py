"""The request lifecycle `ingest -> tokenize -> generate(stream) -> done | failed | cancelled`.

Each runtime step is named after the action of the TLA+ model in `formal/xrouter.tla` that it
implements, so a recorded trace can be replayed against the model (formal/trace-schema.md).
`Lifecycle` is the per-request state machine: it refuses a step the model does not allow, which
turns a lifecycle bug into a loud error instead of a wrong answer on the wire.
"""

from __future__ import annotations

import enum

from msgspec import Struct


class Stage(enum.StrEnum):
    IDLE = "idle"
    INGEST = "ingest"
    TOKENIZE = "tokenize"
    GENERATE = "generate"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """A background response the client cancelled during generate (only there)."""


TERMINAL_STAGES = frozenset({Stage.DONE, Stage.FAILED, Stage.CANCELLED})


class Action(enum.StrEnum):
    """Runtime steps, spelled as the TLA+ actions they correspond to."""

    RECEIVE = "Receive"  # idle -> ingest: a request arrived
    INGEST = "Ingest"  # ingest -> tokenize: validated and routed
    REJECT = "Reject"  # ingest|tokenize -> failed: bad input, unknown model, overload
    TOKENIZE = "Tokenize"  # tokenize -> generate: input counted
    EMIT_CHUNK = "EmitChunk"  # generate -> generate: the provider produced output
    FINISH = "Finish"  # generate -> done
    PROVIDER_FAIL = "ProviderFail"  # generate -> failed, before or after the first chunk
    TIME_OUT = "TimeOut"  # generate -> failed
    DISCONNECT_EARLY = "DisconnectEarly"  # ingest|tokenize -> failed: the client went away
    DISCONNECT_LATE = "DisconnectLate"  # generate -> generate: writes stop, generation goes on
    RECORD_USAGE = "RecordUsage"  # done|failed|cancelled -> same: usage recorded, exactly once
    CANCEL = "Cancel"  # generate -> cancelled: a background response cancelled by its client
    NEXT_ATTEMPT = "NextAttempt"  # generate -> generate: the next model, before any chunk


class Reason(enum.StrEnum):
    RECEIVED = "received"
    BACKGROUND = "background"  # Receive of a background request; its detach at launch
    ROUTED = "routed"
    INVALID_REQUEST = "invalid_request"
    UNAUTHENTICATED = "unauthenticated"  # Reject: no, unknown, revoked or expired gateway key
    MODEL_NOT_ALLOWED = "model_not_allowed"  # Reject: the key may not use the model
    RATE_LIMITED = "rate_limited"  # Reject: the key is over one of its limits
    OVERLOADED = "overloaded"
    SHUTTING_DOWN = "shutting_down"
    TOKENIZED = "tokenized"
    CHUNK = "chunk"
    DONE = "done"
    PROVIDER_ERROR = "provider_error"
    TIMEOUT = "timeout"
    CLIENT_DISCONNECT = "client_disconnect"
    USAGE_RECORDED = "usage_recorded"
    CANCELLED = "cancelled"
    FALLBACK = "fallback"  # NextAttempt: an attempt failed before any output; next model


# action -> (stages it may start from, stage it leads to; None keeps the stage)
TRANSITIONS: dict[Action, tuple[frozenset[Stage], Stage | None]] = {
    Action.RECEIVE: (frozenset({Stage.IDLE}), Stage.INGEST),
    Action.INGEST: (frozenset({Stage.INGEST}), Stage.TOKENIZE),
    Action.REJECT: (frozenset({Stage.INGEST, Stage.TOKENIZE}), Stage.FAILED),
    Action.TOKENIZE: (frozenset({Stage.TOKENIZE}), Stage.GENERATE),
    Action.EMIT_CHUNK: (frozenset({Stage.GENERATE}), None),
    Action.FINISH: (frozenset({Stage.GENERATE}), Stage.DONE),
    Action.PROVIDER_FAIL: (frozenset({Stage.GENERATE}), Stage.FAILED),
    Action.TIME_OUT: (frozenset({Stage.GENERATE}), Stage.FAILED),
    Action.DISCONNECT_EARLY: (frozenset({Stage.INGEST, Stage.TOKENIZE}), Stage.FAILED),
    Action.DISCONNECT_LATE: (frozenset({Stage.GENERATE}), None),
    Action.RECORD_USAGE: (TERMINAL_STAGES, None),
    Action.CANCEL: (frozenset({Stage.GENERATE}), Stage.CANCELLED),
    Action.NEXT_ATTEMPT: (frozenset({Stage.GENERATE}), None),
}


class LifecycleEvent(Struct, frozen=True):
    """One step of one request, as the formal trace schema describes it."""

    request_id: str
    action: Action
    from_stage: Stage
    to_stage: Stage
    reason: Reason
    at_ns: int


class IllegalTransition(RuntimeError):
    """A step the lifecycle model forbids: always a bug in the gateway, never the client's."""


class Lifecycle:
    """The stage of one request, advanced only along the model's transitions."""

    __slots__ = (
        "background",
        "chunks",
        "client_connected",
        "entered_generate",
        "failed_in",
        "request_id",
        "stage",
        "usage_recorded",
    )

    def __init__(self, request_id: str, *, background: bool = False) -> None:
        self.request_id = request_id
        self.background = background
        """`background: true`: generation is detached from the request, and may be cancelled
        (the model's `background`, chosen at Receive)."""
        self.stage = Stage.IDLE
        self.client_connected = True
        self.usage_recorded = False
        self.entered_generate = False
        self.failed_in: Stage | None = None
        """The stage a failed request was in when it failed (ingest, tokenize, generate)."""
        self.chunks = 0
        """Output chunks produced (EmitChunk steps): once there is one, no other attempt."""

    def step(self, action: Action) -> tuple[Stage, Stage]:
        """Apply `action`; return (from, to). Raise IllegalTransition if it is not allowed."""
        sources, target = TRANSITIONS[action]
        if self.stage not in sources:
            raise IllegalTransition(f"{action} is not allowed in stage {self.stage}")
        if action is Action.RECORD_USAGE:
            if self.usage_recorded:
                raise IllegalTransition("usage is recorded exactly once")
            if not self.entered_generate:
                # The model's RecordUsage needs enteredGenerate: nothing was generated.
                raise IllegalTransition("usage is recorded only for a request that generated")
            self.usage_recorded = True
        elif action is Action.CANCEL and not self.background:
            raise IllegalTransition("only a background response can be cancelled")
        elif action is Action.EMIT_CHUNK:
            self.chunks += 1
        elif action is Action.NEXT_ATTEMPT and self.chunks:
            # The model's NextAttempt needs chunks = 0: output of one model already went
            # out, so another model's answer cannot follow it.
            raise IllegalTransition("no other attempt once output was produced")
        elif action is Action.DISCONNECT_LATE or action is Action.DISCONNECT_EARLY:
            if not self.client_connected:
                raise IllegalTransition("the client has already gone")
            self.client_connected = False
        before = self.stage
        if target is not None:
            self.stage = target
            if target is Stage.GENERATE:
                self.entered_generate = True
            elif target is Stage.FAILED:
                self.failed_in = before
        return before, self.stage

    def emit_chunk(self) -> None:
        """`step(Action.EMIT_CHUNK)` without its table lookups: the one step taken per
        output chunk (a hashed Enum lookup per chunk was a measurable share of a relayed
        stream's CPU, issue 16). Same rule: only in generate."""
        if self.stage is not Stage.GENERATE:
            raise IllegalTransition(f"{Action.EMIT_CHUNK} is not allowed in stage {self.stage}")
        self.chunks += 1

    @property
    def terminal(self) -> bool:
        return self.stage in TERMINAL_STAGES
