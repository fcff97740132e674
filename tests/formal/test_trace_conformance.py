"""Runtime lifecycle traces replayed against the model (tests/formal/trace_check.py): real
requests through a live server, checked at once; and wrong traces, which the checker must
reject. The whole session's traces are checked at session finish (formal/README.md)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest

from tests.conftest import ALL_TRACES, LiveServer, make_container
from xrouter.domain.keys import GatewayKey, KeyLimits
from xrouter.domain.lifecycle import Action, LifecycleEvent, Reason, Stage

from .trace_check import REASONS, check_all_traces, check_trace

ServeWith = Callable[..., LiveServer]


def _request_id() -> str:
    return f"formal-{uuid.uuid4().hex[:12]}"


def _post(
    live: LiveServer, body: dict[str, Any], request_id: str
) -> tuple[httpx.Response, list[str]]:
    """POST /v1/responses; return the response and, for a stream, the SSE event names."""
    headers = {"x-request-id": request_id}
    with live.client() as client:
        if not body.get("stream"):
            return client.post("/v1/responses", json=body, headers=headers), []
        with client.stream("POST", "/v1/responses", json=body, headers=headers) as response:
            response.read()
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    return response, names


def _trace(live: LiveServer, request_id: str, *, settled: bool = True) -> list[LifecycleEvent]:
    """The events of `request_id`; with `settled`, wait (bounded) until its lifecycle is over:
    a terminal stage plus the usage record, or a failure before generate."""
    deadline = time.monotonic() + 5
    while True:
        events = live.listener.traces().get(request_id, [])
        over = bool(events) and (
            events[-1].action == Action.RECORD_USAGE
            or (
                events[-1].to_stage == Stage.FAILED
                and all(e.to_stage != Stage.GENERATE for e in events)
            )
        )
        if over or not settled or time.monotonic() > deadline:
            return events
        time.sleep(0.01)


def _actions(events: Sequence[LifecycleEvent]) -> list[str]:
    return [str(e.action) for e in events]


@pytest.mark.parametrize(
    ("body", "status", "actions"),
    [
        (
            {"model": "local/echo", "input": "one two"},
            200,
            ["Receive", "Ingest", "Tokenize", "EmitChunk", "EmitChunk", "Finish", "RecordUsage"],
        ),
        (
            {"model": "local/echo", "input": "one two", "stream": True},
            200,
            ["Receive", "Ingest", "Tokenize", "EmitChunk", "EmitChunk", "Finish", "RecordUsage"],
        ),
        (
            {"model": "local/error", "input": "hi"},
            502,
            ["Receive", "Ingest", "Tokenize", "ProviderFail", "RecordUsage"],
        ),
        (
            {"model": "local/error-mid-stream", "input": "a b c d", "stream": True},
            200,
            [
                "Receive",
                "Ingest",
                "Tokenize",
                "EmitChunk",
                "EmitChunk",
                "ProviderFail",
                "RecordUsage",
            ],
        ),
        ({"model": "nobody/nothing", "input": "hi"}, 404, ["Receive", "Reject"]),
    ],
    ids=["echo", "echo-stream", "error", "error-mid-stream", "unknown-model"],
)
def test_live_request_traces_conform_to_the_model(
    server: LiveServer, body: dict[str, Any], status: int, actions: list[str]
) -> None:
    request_id = _request_id()
    response, _ = _post(server, body, request_id)
    assert response.status_code == status, response.text
    events = _trace(server, request_id)
    assert _actions(events) == actions
    assert check_trace(events, require_complete=True) == []


def test_a_timeout_in_generate_conforms(serve_with: ServeWith) -> None:
    live = serve_with(generation_timeout_s=0.1)
    request_id = _request_id()
    response, _ = _post(live, {"model": "local/slow", "input": "one two three"}, request_id)
    assert response.status_code == 504, response.text
    events = _trace(live, request_id)
    assert _actions(events)[-2:] == ["TimeOut", "RecordUsage"]
    assert check_trace(events, require_complete=True) == []


def test_a_disconnect_in_generate_lets_generation_finish(serve_with: ServeWith) -> None:
    live = serve_with(local_slow_delay_s=0.05)
    request_id = _request_id()
    body = {"model": "local/slow", "input": "one two three four", "stream": True}
    with (
        live.client() as client,
        client.stream(
            "POST", "/v1/responses", json=body, headers={"x-request-id": request_id}
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: response.output_text.delta"):
                break  # leave after the first chunk
    events = _trace(live, request_id)
    actions = _actions(events)
    assert "DisconnectLate" in actions, actions
    assert actions[-2:] == ["Finish", "RecordUsage"], actions
    assert actions.index("DisconnectLate") < actions.index("Finish")
    assert check_trace(events, require_complete=True) == []


def _gateway_key(live: LiveServer, secret: str, **fields: Any) -> None:
    """Put a gateway key for `secret` straight into the live server's key store."""
    hashed = live.container.key_hasher().hash(secret)
    key = GatewayKey(
        id="key_00000000000f0012",
        name="formal",
        hash=hashed,
        display=secret[:8],
        created_at=time.time() - 10,
        **fields,
    )
    asyncio.run(live.container.key_store().save(key))


def test_access_refusals_are_rejects_in_ingest(serve_with: ServeWith) -> None:
    """401, 403 and 429 of access control (XR_AUTH=keys) are `Receive, Reject` with the
    refusal as the reason, complete with no usage record; an admitted request is the usual
    lifecycle."""
    live = serve_with(container=make_container(auth="keys", auth_secret="formal-secret-" * 3))
    secret = "xr-formal-" + "k" * 33
    _gateway_key(live, secret, models=("local/echo",), limits=KeyLimits(requests_per_minute=1))
    attempts = [
        (None, "local/echo", 401, Reason.UNAUTHENTICATED),
        (secret, "local/slow", 403, Reason.MODEL_NOT_ALLOWED),
        (secret, "local/echo", 200, None),
        (secret, "local/echo", 429, Reason.RATE_LIMITED),
    ]
    for key, model, status, reason in attempts:
        request_id = _request_id()
        headers = {"x-request-id": request_id}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        with live.client() as client:
            reply = client.post(
                "/v1/responses", json={"model": model, "input": "hi"}, headers=headers
            )
        assert reply.status_code == status, reply.text
        events = _trace(live, request_id)
        if reason is None:
            assert _actions(events)[-1] == "RecordUsage"
        else:
            assert [(str(e.action), e.reason) for e in events] == [
                ("Receive", Reason.RECEIVED),
                ("Reject", reason),
            ]
        assert check_trace(events, require_complete=True) == []


def test_every_trace_recorded_so_far_conforms(server: LiveServer) -> None:
    """What the session-finish check does, now: every listener made by make_container."""
    request_id = _request_id()
    _post(server, {"model": "local/echo", "input": "hello"}, request_id)
    assert _trace(server, request_id)
    assert server.listener in ALL_TRACES
    assert check_all_traces(ALL_TRACES) == []


# --- the checker rejects wrong traces ---------------------------------------------------------

_TARGET = {
    Action.RECEIVE: Stage.INGEST,
    Action.INGEST: Stage.TOKENIZE,
    Action.TOKENIZE: Stage.GENERATE,
    Action.FINISH: Stage.DONE,
    Action.PROVIDER_FAIL: Stage.FAILED,
    Action.TIME_OUT: Stage.FAILED,
    Action.REJECT: Stage.FAILED,
    Action.DISCONNECT_EARLY: Stage.FAILED,
    Action.CANCEL: Stage.CANCELLED,
}

_REASON = {Action.RECEIVE: Reason.RECEIVED, Action.DISCONNECT_LATE: Reason.CLIENT_DISCONNECT}
"""The default reason of a bare action with several: a request that is not background."""


def _events(*steps: Action | tuple[Action, Stage, Stage, Reason]) -> list[LifecycleEvent]:
    """Events for `steps`; a bare action gets the natural stages and reason."""
    stage = Stage.IDLE
    events = []
    for i, step in enumerate(steps):
        if isinstance(step, tuple):
            action, before, after, reason = step
        else:
            action, before = step, stage
            after = _TARGET.get(action, stage)
            reason = _REASON.get(action) or min(REASONS[action])  # a stable choice
        events.append(LifecycleEvent("req_x", action, before, after, reason, 1_000 + i))
        stage = after
    return events


HAPPY = (Action.RECEIVE, Action.INGEST, Action.TOKENIZE)


def test_the_checker_accepts_a_right_trace() -> None:
    trace = _events(
        *HAPPY,
        Action.EMIT_CHUNK,
        Action.DISCONNECT_LATE,
        Action.EMIT_CHUNK,
        Action.FINISH,
        Action.RECORD_USAGE,
    )
    assert check_trace(trace, require_complete=True) == []


@pytest.mark.parametrize(
    ("trace", "complaint"),
    [
        pytest.param(
            _events(Action.RECEIVE, Action.INGEST, Action.EMIT_CHUNK),
            "EmitChunk is not enabled",
            id="output-before-generate",
        ),
        pytest.param(
            _events(
                *HAPPY,
                Action.DISCONNECT_LATE,
                (Action.DISCONNECT_EARLY, Stage.GENERATE, Stage.FAILED, Reason.CLIENT_DISCONNECT),
            ),
            "DisconnectEarly is not enabled",
            id="late-disconnect-cancels-generation",
        ),
        pytest.param(
            _events(
                *HAPPY,
                Action.DISCONNECT_LATE,
                (Action.PROVIDER_FAIL, Stage.GENERATE, Stage.FAILED, Reason.CLIENT_DISCONNECT),
            ),
            "reason client_disconnect does not belong to ProviderFail",
            id="late-disconnect-fails-the-request",
        ),
        pytest.param(
            _events(*HAPPY, Action.FINISH, Action.RECORD_USAGE, Action.RECORD_USAGE),
            "RecordUsage is not enabled",
            id="usage-recorded-twice",
        ),
        pytest.param(
            _events(*HAPPY, Action.FINISH, Action.EMIT_CHUNK),
            "EmitChunk is not enabled",
            id="chunk-after-done",
        ),
        pytest.param(
            _events(*HAPPY, Action.PROVIDER_FAIL, Action.RECORD_USAGE, Action.FINISH),
            "Finish is not enabled",
            id="finish-after-failed",
        ),
        pytest.param(
            _events(Action.RECEIVE, Action.REJECT, Action.RECORD_USAGE),
            "RecordUsage is not enabled",
            id="usage-without-generation",
        ),
        pytest.param(
            _events(
                Action.RECEIVE,
                Action.INGEST,
                (Action.REJECT, Stage.TOKENIZE, Stage.FAILED, Reason.RATE_LIMITED),
            ),
            "Reject is not enabled",
            id="access-refused-after-ingest",
        ),
        pytest.param(
            _events(
                Action.RECEIVE,
                (Action.REJECT, Stage.INGEST, Stage.FAILED, Reason.UNAUTHENTICATED),
                Action.RECORD_USAGE,
            ),
            "RecordUsage is not enabled",
            id="usage-of-an-unauthenticated-request",
        ),
        pytest.param(
            _events(
                Action.RECEIVE,
                (Action.REJECT, Stage.INGEST, Stage.FAILED, Reason.MODEL_NOT_ALLOWED),
                (Action.TOKENIZE, Stage.FAILED, Stage.GENERATE, Reason.TOKENIZED),
            ),
            "Tokenize is not enabled",
            id="tokenize-after-model-not-allowed",
        ),
        pytest.param(
            _events(*HAPPY, Action.DISCONNECT_LATE, Action.DISCONNECT_LATE),
            "DisconnectLate is not enabled",
            id="client-leaves-twice",
        ),
        pytest.param(
            _events(Action.RECEIVE, (Action.INGEST, Stage.INGEST, Stage.GENERATE, Reason.ROUTED)),
            "to_stage generate but the model goes to tokenize",
            id="wrong-target-stage",
        ),
        pytest.param(
            _events(Action.INGEST),
            "before any Receive",
            id="no-receive",
        ),
        pytest.param(
            _events(*HAPPY, Action.EMIT_CHUNK, Action.CANCEL),
            "Cancel is not enabled",
            id="cancel-of-a-foreground-request",
        ),
        pytest.param(
            _events(
                *HAPPY,
                (Action.DISCONNECT_LATE, Stage.GENERATE, Stage.GENERATE, Reason.BACKGROUND),
            ),
            "a detach for `background` of a request that is not one",
            id="background-detach-of-a-foreground-request",
        ),
        pytest.param(
            _events(
                (Action.RECEIVE, Stage.IDLE, Stage.INGEST, Reason.BACKGROUND),
                Action.INGEST,
                Action.TOKENIZE,
                Action.FINISH,
                Action.CANCEL,
            ),
            "Cancel is not enabled",
            id="cancel-after-done",
        ),
        pytest.param(
            _events(*HAPPY, Action.EMIT_CHUNK, Action.NEXT_ATTEMPT),
            "NextAttempt is not enabled",
            id="fallback-after-a-chunk",
        ),
        pytest.param(
            _events(
                *HAPPY,
                Action.NEXT_ATTEMPT,
                Action.EMIT_CHUNK,
                Action.DISCONNECT_LATE,
                Action.NEXT_ATTEMPT,
            ),
            "NextAttempt is not enabled",
            id="fallback-after-a-chunk-and-a-disconnect",
        ),
        pytest.param(
            _events(Action.RECEIVE, Action.INGEST, Action.NEXT_ATTEMPT),
            "NextAttempt is not enabled",
            id="fallback-before-generate",
        ),
        pytest.param(
            _events(
                *HAPPY,
                (Action.NEXT_ATTEMPT, Stage.GENERATE, Stage.GENERATE, Reason.PROVIDER_ERROR),
            ),
            "reason provider_error does not belong to NextAttempt",
            id="fallback-with-another-reason",
        ),
    ],
)
def test_the_checker_rejects_wrong_traces(trace: list[LifecycleEvent], complaint: str) -> None:
    problems = check_trace(trace)
    assert any(complaint in problem for problem in problems), problems


@pytest.mark.parametrize(
    "reason", [Reason.UNAUTHENTICATED, Reason.MODEL_NOT_ALLOWED, Reason.RATE_LIMITED]
)
def test_the_checker_accepts_an_access_refusal_in_ingest(reason: Reason) -> None:
    """401, 403 and 429 of access control: `Receive, Reject` with the refusal as its reason,
    complete without a usage record; the same refusal from tokenize is not a step."""
    refused = _events(Action.RECEIVE, (Action.REJECT, Stage.INGEST, Stage.FAILED, reason))
    assert check_trace(refused, require_complete=True) == []
    late = _events(
        Action.RECEIVE, Action.INGEST, (Action.REJECT, Stage.TOKENIZE, Stage.FAILED, reason)
    )
    assert any("Reject is not enabled" in p for p in check_trace(late))


def test_the_checker_accepts_background_traces() -> None:
    """A background request: detached at once (reason `background`), then finished, or
    cancelled with its usage still recorded."""
    start = (
        (Action.RECEIVE, Stage.IDLE, Stage.INGEST, Reason.BACKGROUND),
        Action.INGEST,
        Action.TOKENIZE,
        (Action.DISCONNECT_LATE, Stage.GENERATE, Stage.GENERATE, Reason.BACKGROUND),
        Action.EMIT_CHUNK,
    )
    done = _events(*start, Action.FINISH, Action.RECORD_USAGE)
    assert check_trace(done, require_complete=True) == []
    cancelled = _events(*start, Action.CANCEL, Action.RECORD_USAGE)
    assert check_trace(cancelled, require_complete=True) == []
    unbilled = _events(*start, Action.CANCEL)
    assert any(
        "usage was never recorded" in p for p in check_trace(unbilled, require_complete=True)
    )


def test_the_checker_accepts_fallback_traces() -> None:
    """Attempts before the first chunk, as many as the chain has (the model's MaxAttempts is
    lifted for traces), then the served model's answer; or every attempt failing, the last one
    as the request's ProviderFail; or a client gone while the next model is tried."""
    served = _events(
        *HAPPY,
        *[Action.NEXT_ATTEMPT] * 4,
        Action.EMIT_CHUNK,
        Action.EMIT_CHUNK,
        Action.FINISH,
        Action.RECORD_USAGE,
    )
    assert all(e.reason == Reason.FALLBACK for e in served if e.action == Action.NEXT_ATTEMPT)
    assert check_trace(served, require_complete=True) == []
    exhausted = _events(*HAPPY, Action.NEXT_ATTEMPT, Action.PROVIDER_FAIL, Action.RECORD_USAGE)
    assert check_trace(exhausted, require_complete=True) == []
    gone = _events(
        *HAPPY,
        Action.DISCONNECT_LATE,
        Action.NEXT_ATTEMPT,
        Action.TIME_OUT,
        Action.RECORD_USAGE,
    )
    assert check_trace(gone, require_complete=True) == []


def test_background_traces_conform(serve_with: ServeWith) -> None:
    """Live background requests: one polled to completion, one cancelled mid-generation; both
    traces are steps of the model, complete with one usage record."""
    live = serve_with(local_slow_delay_s=0.05)
    body = {"model": "local/slow", "input": "one two three four five six", "background": True}
    finished, cancelled = _request_id(), _request_id()
    with live.client() as client:
        first = client.post("/v1/responses", json=body, headers={"x-request-id": finished})
        second = client.post("/v1/responses", json=body, headers={"x-request-id": cancelled})
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        assert first.json()["status"] == "in_progress"
        stopped = client.post(f"/v1/responses/{second.json()['id']}/cancel", json={})
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "cancelled"
    done_events = _trace(live, finished)
    # Detached from the start: the step after Tokenize, before any output.
    assert _actions(done_events)[:4] == ["Receive", "Ingest", "Tokenize", "DisconnectLate"]
    assert done_events[0].reason == Reason.BACKGROUND
    assert done_events[3].reason == Reason.BACKGROUND
    assert _actions(done_events)[-2:] == ["Finish", "RecordUsage"]
    assert check_trace(done_events, require_complete=True) == []
    cancel_events = _trace(live, cancelled)
    assert _actions(cancel_events)[-2:] == ["Cancel", "RecordUsage"]
    assert check_trace(cancel_events, require_complete=True) == []


def test_the_checker_rejects_a_clock_going_back() -> None:
    trace = _events(*HAPPY)
    trace[2] = LifecycleEvent(
        trace[2].request_id, Action.TOKENIZE, Stage.TOKENIZE, Stage.GENERATE, Reason.TOKENIZED, 0
    )
    assert any("at_ns" in problem for problem in check_trace(trace))


def test_an_unfinished_lifecycle_is_reported_only_when_completeness_is_required() -> None:
    stalled = _events(*HAPPY, Action.EMIT_CHUNK)
    assert check_trace(stalled) == []
    assert any("stopped in generate" in p for p in check_trace(stalled, require_complete=True))
    unbilled = _events(*HAPPY, Action.FINISH)
    assert any(
        "usage was never recorded" in p for p in check_trace(unbilled, require_complete=True)
    )


def test_a_reused_request_id_starts_a_new_lifecycle() -> None:
    once = _events(*HAPPY, Action.FINISH, Action.RECORD_USAGE)
    assert check_trace(once + once, require_complete=True) == []
    # Two interleaved lifecycles under one id: each step goes to the one that can take it.
    first, second = _events(*HAPPY), _events(*HAPPY)
    interleaved = [first[0], second[0], first[1], second[1], first[2], second[2]]
    assert check_trace(interleaved) == []
