"""Graceful shutdown of `xrouter serve`, as an orchestrator does it: SIGTERM to the process.

At once `/ready` answers 503 (and new requests 503); open streams get `XR_SHUTDOWN_GRACE_S`;
a stream still open at its end receives `error` + `response.failed` (`server_shutting_down`)
before its socket closes; the process exits within the grace plus
`entrypoints/http/server.py`'s `DRAIN_MARGIN_S`.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx

from xrouter.entrypoints.http.server import DRAIN_MARGIN_S


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, data) of each SSE event, until the stream ends."""
    name = ""
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: ") and line != "data: [DONE]":
            yield name, json.loads(line[len("data: ") :])


def stream_body(words: int) -> dict[str, Any]:
    text = " ".join(f"w{i}" for i in range(words))
    return {"model": "local/slow", "input": text, "stream": True}


def test_sigterm_fails_a_stream_still_open_at_the_end_of_the_grace(start_gateway: Any) -> None:
    grace = 2.0
    gateway = start_gateway(XR_SHUTDOWN_GRACE_S=str(grace), XR_LOCAL_SLOW_DELAY_S="0.25")
    seen: list[tuple[float, str, dict[str, Any]]] = []
    with (
        httpx.Client(base_url=gateway.base_url, timeout=30) as client,
        client.stream("POST", "/v1/responses", json=stream_body(200)) as stream,
    ):
        events = sse_events(stream.iter_lines())
        for name, data in events:
            seen.append((time.monotonic(), name, data))
            if name == "response.output_text.delta":
                break
        gateway.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # At once: not ready, and no new work admitted; the listener is still open.
        with httpx.Client(base_url=gateway.base_url, timeout=5) as probe:
            time.sleep(0.3)
            ready = probe.get("/ready")
            refused = probe.post("/v1/responses", json={"model": "local/echo", "input": "x"})
        assert time.monotonic() - signalled < 1.5
        assert ready.status_code == 503, ready.text
        assert ready.json() == {"status": "not_ready"}
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "server_shutting_down"

        for name, data in events:
            seen.append((time.monotonic(), name, data))
    stream_ended = time.monotonic()

    names = [name for _, name, _ in seen]
    # The stream went on during the grace...
    during_grace = [t for t, name, _ in seen if name == "response.output_text.delta"]
    assert during_grace[-1] - signalled > grace - 0.5, "the stream was cut before the grace"
    # ...and was failed properly at its end, not cut mid-chunk.
    assert names[-2:] == ["error", "response.failed"], names[-5:]
    error = seen[-2][2]
    failed = seen[-1][2]["response"]
    assert error["code"] == "server_shutting_down", error
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_shutting_down"
    assert "XR_SHUTDOWN_GRACE_S" in failed["error"]["message"]
    assert grace - 0.5 < stream_ended - signalled < grace + DRAIN_MARGIN_S

    code = gateway.process.wait(timeout=grace + DRAIN_MARGIN_S + 5)
    exited = time.monotonic() - signalled
    assert exited < grace + DRAIN_MARGIN_S + 1.0, exited
    assert code in (0, -signal.SIGTERM), gateway.log()
    assert "Traceback" not in gateway.log(), gateway.log()


def test_stream_that_ends_within_the_grace_completes_and_the_process_exits_then(
    start_gateway: Any,
) -> None:
    gateway = start_gateway(XR_SHUTDOWN_GRACE_S="20", XR_LOCAL_SLOW_DELAY_S="0.2")
    with (
        httpx.Client(base_url=gateway.base_url, timeout=30) as client,
        client.stream("POST", "/v1/responses", json=stream_body(8)) as stream,
    ):
        events = sse_events(stream.iter_lines())
        next(events)
        gateway.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        names = [name for name, _ in events]
    assert names[-1] == "response.completed", names
    # The process does not sit out the whole 20 s grace once nothing runs.
    gateway.process.wait(timeout=10)
    assert time.monotonic() - signalled < 5.0
    assert "Traceback" not in gateway.log(), gateway.log()


def test_idle_gateway_exits_at_once_on_sigterm(start_gateway: Any) -> None:
    gateway = start_gateway(XR_SHUTDOWN_GRACE_S="20")
    signalled = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    code = gateway.process.wait(timeout=10)
    assert time.monotonic() - signalled < 2.0
    assert code in (0, -signal.SIGTERM)
