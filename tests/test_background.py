"""Background responses: `background: true` answered at once and polled, replayed with
`?stream=true&starting_after=N` while it runs and after, cancelled mid-generation; refused
where the API refuses it; on the memory store, through the official SDK in strict mode, and
across two gateway processes on one real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import httpx
import msgspec
import openai
import pytest

from tests.conftest import LiveServer
from tests.helpers import sse_events, usage_records, wait_for
from tests.redis_servers import RedisServer
from tests.serve_process import Gateway
from tests.test_openresponses_schema import validate_event, validate_resource
from xrouter.adapters.redis.event_log import RedisEventLog
from xrouter.adapters.storage.event_log_memory import MemoryEventLog
from xrouter.domain.events import OutputTextDelta, ResponseCompleted, ResponseCreated
from xrouter.domain.responses import Response
from xrouter.entrypoints.config import Settings
from xrouter.entrypoints.storage_config import build_shared_redis

WORDS = " ".join(f"w{i}" for i in range(12))
"""local/slow answers the input word by word: the first at once, then one per delay."""


def _background(client: httpx.Client, text: str = WORDS, **extra: Any) -> dict[str, Any]:
    body = {"model": "local/slow", "input": text, "background": True, **extra}
    answer = client.post("/v1/responses", json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _poll(client: httpx.Client, response_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The response once it is no longer in progress (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, Any] = client.get(f"/v1/responses/{response_id}").json()
        if found["status"] not in ("queued", "in_progress"):
            return found
        assert time.monotonic() < deadline, f"{response_id} still {found['status']}"
        time.sleep(0.02)


def _replay(
    client: httpx.Client, response_id: str, starting_after: int | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """(events, their types) of a replay; it must end with `data: [DONE]`."""
    params: dict[str, Any] = {"stream": "true"}
    if starting_after is not None:
        params["starting_after"] = starting_after
    with client.stream("GET", f"/v1/responses/{response_id}", params=params) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        raw = answer.read().decode()
    events, others = sse_events(raw)
    assert others == ["[DONE]"], others
    return events, [event["type"] for event in events]


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


# --- memory store, one process ------------------------------------------------------------------


def test_background_needs_store(server: LiveServer) -> None:
    with server.client() as client:
        answer = client.post(
            "/v1/responses",
            json={"model": "local/echo", "input": "x", "background": True, "store": False},
        )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "background"
    assert "store" in error["message"]


def test_background_answers_at_once_and_polls_to_completion(serve_with: Any) -> None:
    live: LiveServer = serve_with(local_slow_delay_s=0.1)
    with live.client() as client:
        started = time.monotonic()
        created = _background(client, metadata={"job": "poll"})
        answered_in = time.monotonic() - started
        # The whole answer takes about 1.1 s; the request was answered long before.
        assert answered_in < 0.8, answered_in
        assert created["status"] in ("queued", "in_progress")
        assert created["background"] is True
        assert created["output"] == []
        polled = client.get(f"/v1/responses/{created['id']}").json()
        assert polled["status"] == "in_progress"
        final = _poll(client, created["id"])
        items = client.get(f"/v1/responses/{created['id']}/input_items").json()
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == WORDS
    assert final["usage"]["output_tokens"] > 0
    assert final["metadata"] == {"job": "poll"}
    assert [item["id"] for item in items["data"]] == [item["id"] for item in items["data"] if item]
    assert len(items["data"]) == 1
    request_id = next(
        rid
        for rid, events in live.listener.traces().items()
        if any(e.reason == "background" for e in events)
    )
    wait_for(lambda: len(usage_records(live, request_id)) == 1)
    assert usage_records(live, request_id)[0].status == "completed"


def test_replay_with_starting_after_then_follow_live_events(serve_with: Any) -> None:
    live: LiveServer = serve_with(local_slow_delay_s=0.05)
    with live.client() as client:
        created = _background(client)
        # Follows live: starts while generating, ends with the terminal event.
        events, names = _replay(client, created["id"], starting_after=2)
        assert events[0]["sequence_number"] == 3
        numbers = [e["sequence_number"] for e in events]
        assert numbers == list(range(3, 3 + len(numbers)))
        assert names[-1] == "response.completed"
        assert events[-1]["response"]["status"] == "completed"
        # After the end: the whole stream again, from response.created.
        everything, all_names = _replay(client, created["id"])
        for event in everything:
            validate_event(event)
        validate_resource(client.get(f"/v1/responses/{created['id']}").json())
        assert all_names[:2] == ["response.created", "response.in_progress"]
        assert [e["sequence_number"] for e in everything] == list(range(len(everything)))
        assert _text(everything) == WORDS
        assert everything[3:] == events
        # Past the end: nothing but [DONE].
        last = everything[-1]["sequence_number"]
        with client.stream(
            "GET",
            f"/v1/responses/{created['id']}",
            params={"stream": "true", "starting_after": last},
        ) as tail:
            assert tail.read() == b"data: [DONE]\n\n"


def test_background_stream_is_the_usual_stream_and_survives_its_client(serve_with: Any) -> None:
    """`background` with `stream`: the SSE stream as usual; the client leaving after the first
    delta changes nothing (the response completes, stored, replayable)."""
    live: LiveServer = serve_with(local_slow_delay_s=0.05)
    body = {"model": "local/slow", "input": WORDS, "background": True, "stream": True}
    with live.client() as client:
        with client.stream("POST", "/v1/responses", json=body) as answer:
            assert answer.status_code == 200
            first: dict[str, Any] | None = None
            for line in answer.iter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    first = first or event
                    if event["type"] == "response.output_text.delta":
                        break  # leave mid-stream
        assert first is not None and first["type"] == "response.created"
        assert first["response"]["background"] is True
        final = _poll(client, first["response"]["id"])
        assert final["status"] == "completed"
        assert _text(_replay(client, final["id"])[0]) == WORDS


def test_cancel_mid_generation_ends_cancelled_with_usage_recorded_once(
    serve_with: Any,
) -> None:
    live: LiveServer = serve_with(local_slow_delay_s=0.1)
    with live.client() as client:
        created = _background(client, text=" ".join(["word"] * 100))
        response_id = created["id"]
        # Wait for output: the cancel interrupts the provider stream, not its start.
        _wait_for_output(client, response_id, deltas=3)
        cancelled = client.post(f"/v1/responses/{response_id}/cancel", json={})
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert body["status"] == "cancelled"
        assert body["error"] is None
        assert body["usage"]["output_tokens"] > 0
        assert body["output"][0]["status"] == "incomplete"
        assert client.get(f"/v1/responses/{response_id}").json()["status"] == "cancelled"
        # Idempotent on a cancelled response.
        again = client.post(f"/v1/responses/{response_id}/cancel", json={})
        assert again.status_code == 200
        assert again.json()["status"] == "cancelled"
        events, names = _replay(client, response_id)
    assert names[-1] == "response.failed"
    assert events[-1]["response"]["status"] == "cancelled"
    assert "error" not in names
    # Every replayed event and the cancelled response pass the Open Responses schemas.
    for event in events:
        validate_event(event)
    validate_resource(body)
    request_id = next(
        rid
        for rid, steps in live.listener.traces().items()
        if any(step.action == "Cancel" for step in steps)
    )
    wait_for(lambda: len(usage_records(live, request_id)) == 1)
    time.sleep(0.1)
    records = usage_records(live, request_id)
    assert len(records) == 1
    assert records[0].status == "cancelled"
    assert records[0].output_tokens > 0


def _wait_for_output(client: httpx.Client, response_id: str, deltas: int) -> None:
    """Follow the replay until `deltas` text deltas went by, then leave it (a replay drives
    nothing: its reader leaving changes nothing)."""
    seen = 0
    with client.stream("GET", f"/v1/responses/{response_id}", params={"stream": "true"}) as live:
        for line in live.iter_lines():
            if line == "event: response.output_text.delta":
                seen += 1
                if seen >= deltas:
                    return
    raise AssertionError("the response ended before it produced the output waited for")


def test_cancel_is_refused_for_a_foreground_or_finished_response(server: LiveServer) -> None:
    with server.client() as client:
        foreground = client.post("/v1/responses", json={"model": "local/echo", "input": "hi"})
        foreground_id = foreground.json()["id"]
        refused = client.post(f"/v1/responses/{foreground_id}/cancel", json={})
        assert refused.status_code == 400
        assert "background" in refused.json()["error"]["message"]
        replay = client.get(f"/v1/responses/{foreground_id}", params={"stream": "true"})
        assert replay.status_code == 400
        assert replay.json()["error"]["param"] == "stream"

        done = _background(client, text="quick")
        assert _poll(client, done["id"])["status"] == "completed"
        late = client.post(f"/v1/responses/{done['id']}/cancel", json={})
        assert late.status_code == 400
        assert "already completed" in late.json()["error"]["message"]

        unknown = client.post("/v1/responses/resp_nope/cancel", json={})
        assert unknown.status_code == 404
        bad = client.get(
            f"/v1/responses/{done['id']}", params={"stream": "true", "starting_after": "x"}
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "starting_after"


def test_openai_sdk_retrieve_cancel_and_stream_resume(serve_with: Any) -> None:
    """The official SDK, strict: create in the background, retrieve, resume the stream after a
    sequence number, cancel another one mid-generation."""
    live: LiveServer = serve_with(local_slow_delay_s=0.05)
    with openai.OpenAI(
        base_url=live.base_url + "/v1",
        api_key="test",
        _strict_response_validation=True,
        max_retries=0,
    ) as sdk:
        created = sdk.responses.create(model="local/slow", input=WORDS, background=True)
        assert created.status in ("queued", "in_progress")
        assert created.background is True
        assert sdk.responses.retrieve(created.id).id == created.id
        resumed = list(sdk.responses.retrieve(created.id, stream=True, starting_after=1))
        assert resumed[0].sequence_number == 2
        assert resumed[-1].type == "response.completed"
        assert sdk.responses.retrieve(created.id).output_text == WORDS

        slow = sdk.responses.create(
            model="local/slow", input=" ".join(["word"] * 200), background=True
        )
        time.sleep(0.3)
        cancelled = sdk.responses.cancel(slow.id)
        assert cancelled.status == "cancelled"
        assert sdk.responses.retrieve(slow.id).status == "cancelled"
        with pytest.raises(openai.BadRequestError):
            sdk.responses.cancel(created.id)  # completed


# --- the event logs on their own -------------------------------------------------------------


def _events(count: int) -> list[Any]:
    """response.created, text deltas, response.completed: `count` events."""
    snapshot = Response(id="resp_x", created_at=0, model="m", status="in_progress", output=[])
    events: list[Any] = [ResponseCreated(sequence_number=0, response=snapshot)]
    for n in range(1, count - 1):
        delta = OutputTextDelta(
            sequence_number=n, item_id="msg_x", output_index=0, content_index=0, delta="x" * 10
        )
        events.append(delta)
    done = msgspec.structs.replace(snapshot, status="completed")
    events.append(ResponseCompleted(sequence_number=count - 1, response=done))
    return events


def test_memory_event_log_bounds_expiry_and_cancels() -> None:
    now = [0.0]
    log = MemoryEventLog(max_events=4, max_bytes=100_000, ttl_s=60, monotonic=lambda: now[0])

    async def scenario() -> None:
        await log.append("resp_a", _events(10))
        kept = await log.read("resp_a", after=-1, limit=100)
        assert kept is not None
        # Four kept, the rest dropped, but the terminal event always kept.
        assert [e.sequence_number for e in kept] == [0, 1, 2, 3, 9]
        after = await log.read("resp_a", after=2, limit=1)
        assert after is not None and [e.sequence_number for e in after] == [3]
        assert await log.read("resp_b", after=-1, limit=10) is None
        assert not await log.requested("resp_a")
        await log.request("resp_a")
        assert await log.requested("resp_a")
        now[0] = 61.0
        assert await log.read("resp_a", after=-1, limit=10) is None  # expired
        assert not await log.requested("resp_a")

    asyncio.run(scenario())


@pytest.mark.parametrize("topology", ["plain", "cluster"])
def test_redis_event_log_bounds_expiry_hash_tags_and_cancels(
    topology: str, request: pytest.FixtureRequest
) -> None:
    """On a plain Redis and on a three-master cluster (every key of a response on one slot)."""
    fixture = "redis_server" if topology == "plain" else "redis_cluster"
    server: Any = request.getfixturevalue(fixture)
    settings = replace(
        Settings(), redis_url=server.url, storage="redis", redis_cluster=topology == "cluster"
    )

    async def scenario() -> list[int]:
        redis = build_shared_redis(settings)
        assert redis is not None
        log = RedisEventLog(redis, max_events=4, max_bytes=100_000, ttl_s=30)
        events = _events(10)
        await log.append("resp_r", events[:5])
        await log.append("resp_r", events[3:])  # overlapping: what is kept is not added again
        kept = await log.read("resp_r", after=-1, limit=100)
        assert kept is not None
        assert [e.sequence_number for e in kept] == [0, 1, 2, 3, 9]
        assert kept[0] == events[0] and kept[-1] == events[-1]
        after = await log.read("resp_r", after=2, limit=1)
        assert after is not None and [e.sequence_number for e in after] == [3]
        assert await log.read("resp_none", after=-1, limit=5) is None
        assert not await log.requested("resp_r")
        await log.request("resp_r")
        assert await log.requested("resp_r")
        keys = ["xr:{resp_r}:c", "xr:{resp_r}:e", "xr:{resp_r}:em"]

        async def ttls(client: Any) -> list[int]:
            return [int(await client.pttl(key)) for key in keys]

        found = await redis.run("read the TTLs", ttls)
        await redis.aclose()
        return found

    for ttl in asyncio.run(scenario()):
        assert 0 < ttl <= 30_000, ttl


# --- two gateway processes on one Redis ------------------------------------------------------


def test_two_gateway_processes_on_redis_poll_replay_and_cancel(
    start_gateway: Any, redis_server: RedisServer
) -> None:
    env = {
        "XR_STORAGE": "redis",
        "XR_REDIS_URL": redis_server.url,
        "XR_LOCAL_SLOW_DELAY_S": "0.05",
        "XR_BACKGROUND_POLL_S": "0.05",
    }
    first: Gateway = start_gateway(**env)
    second: Gateway = start_gateway(**env)
    with (
        httpx.Client(base_url=first.base_url, timeout=10) as a,
        httpx.Client(base_url=second.base_url, timeout=10) as b,
    ):
        created = _background(a)
        # The other process polls it, and replays and follows it to the end.
        assert b.get(f"/v1/responses/{created['id']}").json()["status"] == "in_progress"
        events, names = _replay(b, created["id"], starting_after=1)
        assert events[0]["sequence_number"] == 2
        assert names[-1] == "response.completed"
        assert _poll(b, created["id"])["output"][0]["content"][0]["text"] == WORDS

        # A cancel on the other process reaches the generating one.
        long = _background(a, text=" ".join(["word"] * 200))
        time.sleep(0.3)
        cancelled = b.post(f"/v1/responses/{long['id']}/cancel", json={})
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert a.get(f"/v1/responses/{long['id']}").json()["status"] == "cancelled"
        tail, tail_names = _replay(a, long["id"])
        assert tail_names[-1] == "response.failed"
        assert tail[-1]["response"]["status"] == "cancelled"
        refused = b.post(f"/v1/responses/{created['id']}/cancel", json={})
        assert refused.status_code == 400
