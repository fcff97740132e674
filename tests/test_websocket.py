"""WebSocket mode of /v1/responses, against the server `xrouter serve` runs (uvicorn with the
gateway's connection limits) on a loopback port, driven by the `websockets` client and the
official `openai` SDK's Responses WebSocket client. Every server message is validated against
`openresponses-types`: stream events as over SSE, errors as `WebSocketErrorEvent`."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import openresponses_types as ort
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import LiveServer, make_container
from tests.log_audit import register_secret
from tests.redis_servers import RedisServer
from tests.test_openresponses_schema import (
    TERMINAL_EVENTS,
    check_stream_consistency,
    validate_event,
)
from xrouter.domain.keys import GatewayKey
from xrouter.entrypoints.http.server import DRAIN_MARGIN_S

JSON = dict[str, Any]
WAIT_S = 10.0
MODEL = "local/echo"


def ws_url(server: LiveServer, prefix: str = "/v1") -> str:
    return f"ws://{server.host}:{server.port}{prefix}/responses"


def create(**body: Any) -> JSON:
    """A `response.create` message, checked against the Open Responses client event."""
    message = {"type": "response.create", "model": MODEL, **body}
    ort.WebSocketResponseCreateEvent.model_validate(message)
    return message


async def receive(ws: ClientConnection) -> JSON:
    raw = await asyncio.wait_for(ws.recv(), WAIT_S)
    assert isinstance(raw, str), "every server message is a text message"
    message: JSON = json.loads(raw)
    if message["type"] == "error" and "status" in message:
        ort.WebSocketErrorEvent.model_validate(message)
    else:
        validate_event(message)
    return message


async def read_turn(ws: ClientConnection) -> list[JSON]:
    """One turn's messages: its stream events up to the terminal one, or one error."""
    events: list[JSON] = []
    while True:
        event = await receive(ws)
        events.append(event)
        if event["type"] in TERMINAL_EVENTS or event["type"] == "error":
            return events


def check_turn(events: list[JSON]) -> JSON:
    """The SSE stream's rules hold for a turn; returns its final response."""
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed", events[-1]
    check_stream_consistency(events)
    ids = {event["response"]["id"] for event in events if "response" in event}
    assert len(ids) == 1, "a turn's events belong to one response"
    response: JSON = events[-1]["response"]
    return response


async def turn(ws: ClientConnection, **body: Any) -> list[JSON]:
    await ws.send(json.dumps(create(**body)))
    return await read_turn(ws)


def error_of(events: list[JSON]) -> JSON:
    assert len(events) == 1 and events[0]["type"] == "error", events
    assert isinstance(events[0]["status"], int)
    return events[0]


async def closed(ws: ClientConnection) -> ConnectionClosed:
    """Wait (bounded) for the server to close the connection, skipping messages."""
    with pytest.raises(ConnectionClosed) as info:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            await asyncio.wait_for(ws.recv(), WAIT_S)
    return info.value


@pytest.fixture
def gateway(serve_as_cli: Callable[..., LiveServer]) -> LiveServer:
    return serve_as_cli(discovery=False)


async def test_sequential_turns_on_one_socket_are_the_sse_stream(gateway: LiveServer) -> None:
    async with connect(ws_url(gateway)) as ws:
        first = check_turn(await turn(ws, store=False, input="Reply with exactly: first"))
        second = check_turn(await turn(ws, store=False, input="Reply with exactly: second"))
    assert first["id"] != second["id"]
    assert first["status"] == second["status"] == "completed"
    assert first["store"] is False


async def test_messages_sent_at_once_are_answered_one_after_another(gateway: LiveServer) -> None:
    async with connect(ws_url(gateway)) as ws:
        for word in ("one", "two", "three"):
            await ws.send(json.dumps(create(model="local/slow", input=f"say {word} now")))
        turns = [await read_turn(ws) for _ in range(3)]
    # Each turn's events are contiguous (sequence numbers restart only at a new turn).
    responses = [check_turn(events) for events in turns]
    assert len({response["id"] for response in responses}) == 3
    texts = [response["output"][0]["content"][0]["text"] for response in responses]
    assert [text.split()[1] for text in texts] == ["one", "two", "three"], texts


async def test_store_false_chain_continues_on_the_socket_and_nowhere_else(
    gateway: LiveServer,
) -> None:
    async with connect(ws_url(gateway)) as ws:
        first = check_turn(await turn(ws, store=False, input="Remember the code word: cobalt."))
        alone = check_turn(await turn(ws, store=False, input="What is the code word?"))
        # The connection remembers its most recent response's chain: `alone` started a new
        # one, so `first` (not stored) is gone and `alone` continues.
        follow = check_turn(
            await turn(
                ws, store=False, previous_response_id=alone["id"], input="What is the code word?"
            )
        )
        missing = error_of(
            await turn(ws, store=False, previous_response_id=first["id"], input="again")
        )
    # The history reached the model: the continuation counted the earlier turn's tokens.
    assert follow["usage"]["input_tokens"] > alone["usage"]["input_tokens"]
    assert follow["previous_response_id"] == alone["id"]
    assert missing["status"] == 400
    assert missing["error"]["code"] == "previous_response_not_found"
    assert missing["error"]["param"] == "previous_response_id"
    # Nothing was stored; a new connection cannot continue the chain.
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=WAIT_S) as client:
        assert (await client.get(f"/v1/responses/{follow['id']}")).status_code == 404
    async with connect(ws_url(gateway)) as ws:
        error = error_of(await turn(ws, store=False, previous_response_id=follow["id"], input="x"))
        assert error["error"]["code"] == "previous_response_not_found"
        recovered = check_turn(await turn(ws, store=False, input="Start again: recovered"))
    assert recovered["status"] == "completed"


async def test_a_long_store_false_chain_keeps_every_turn(gateway: LiveServer) -> None:
    async with connect(ws_url(gateway)) as ws:
        previous = None
        tokens = []
        for word in ("alpha", "beta", "gamma", "delta"):
            response = check_turn(
                await turn(ws, store=False, previous_response_id=previous, input=word)
            )
            tokens.append(response["usage"]["input_tokens"])
            previous = response["id"]
    assert tokens == sorted(tokens) and len(set(tokens)) == 4, tokens


async def test_a_failed_continuation_evicts_the_response_it_continued(gateway: LiveServer) -> None:
    orphan = [{"type": "function_call_output", "call_id": "call_nowhere", "output": "42"}]
    async with connect(ws_url(gateway)) as ws:
        first = check_turn(await turn(ws, store=False, input="Remember: ember."))
        failed = error_of(
            await turn(ws, store=False, previous_response_id=first["id"], input=orphan)
        )
        retry = error_of(
            await turn(ws, store=False, previous_response_id=first["id"], input="stale?")
        )
        # A stored response evicted from the connection is still found in the store.
        stored = check_turn(await turn(ws, store=True, input="Remember: iron."))
        error_of(await turn(ws, store=True, previous_response_id=stored["id"], input=orphan))
        again = check_turn(
            await turn(ws, store=True, previous_response_id=stored["id"], input="and now?")
        )
    assert failed["status"] == 400
    assert failed["error"]["code"] == "invalid_value"
    assert "call_nowhere" in failed["error"]["message"]
    assert retry["error"]["code"] == "previous_response_not_found"
    assert again["previous_response_id"] == stored["id"]


async def test_bad_messages_get_an_error_and_the_connection_stays(gateway: LiveServer) -> None:
    async with connect(ws_url(gateway)) as ws:
        await ws.send("not json")
        not_json = error_of(await read_turn(ws))
        await ws.send("[1, 2]")
        not_object = error_of(await read_turn(ws))
        await ws.send(json.dumps({"type": "response.steer", "input": "hi"}))
        unknown = error_of(await read_turn(ws))
        await ws.send(json.dumps({"type": "response.create", "input": "no model"}))
        no_model = error_of(await read_turn(ws))
        await ws.send(json.dumps({**create(input="x"), "background": True}))
        background = error_of(await read_turn(ws))
        check_turn(await turn(ws, input="still here"))
    assert not_json["error"]["code"] == not_object["error"]["code"] == "invalid_json"
    assert unknown["error"]["param"] == "type"
    assert "response.steer" in unknown["error"]["message"]
    assert no_model["error"]["param"] == "model"
    assert background["error"]["param"] == "background"
    assert {e["status"] for e in (not_json, not_object, unknown, no_model, background)} == {400}


async def test_every_api_prefix_serves_websocket_mode(gateway: LiveServer) -> None:
    async with connect(ws_url(gateway, "/api/v1")) as ws:
        check_turn(await turn(ws, input="hello"))


async def test_the_connection_limit_sends_its_error_after_the_running_turn(
    serve_as_cli: Callable[..., LiveServer],
) -> None:
    server = serve_as_cli(discovery=False, ws_max_lifetime_s=0.5, local_slow_delay_s=0.1)
    async with connect(ws_url(server)) as ws:
        # Takes longer than the limit: it finishes, then the limit acts.
        events = await turn(ws, model="local/slow", input="one two three four five six seven")
        check_turn(events)
        limit = error_of(await read_turn(ws))
        assert limit["error"]["code"] == "websocket_connection_limit_reached"
        assert "XR_WS_MAX_LIFETIME_S" in limit["error"]["message"]
        close = await closed(ws)
    assert close.rcvd is not None and close.rcvd.code == 1000


async def test_an_idle_connection_is_closed(serve_as_cli: Callable[..., LiveServer]) -> None:
    server = serve_as_cli(discovery=False, ws_idle_timeout_s=0.3)
    async with connect(ws_url(server)) as ws:
        check_turn(await turn(ws, input="hello"))
        started = time.monotonic()
        close = await closed(ws)
    assert close.rcvd is not None and close.rcvd.code == 1000
    assert "XR_WS_IDLE_TIMEOUT_S" in close.rcvd.reason
    assert time.monotonic() - started < 3


async def test_a_message_over_the_body_limit_is_refused_and_the_connection_stays(
    serve_as_cli: Callable[..., LiveServer],
) -> None:
    server = serve_as_cli(discovery=False, max_body_bytes=2_000)
    async with connect(ws_url(server)) as ws:
        too_large = error_of(await turn(ws, input="word " * 500))
        check_turn(await turn(ws, input="small"))
        # Over twice the limit the server does not read the message: it closes (1009).
        await ws.send(json.dumps(create(input="word " * 1_000)))
        close = await closed(ws)
    assert close.rcvd is not None and close.rcvd.code == 1009
    assert too_large["status"] == 413
    assert too_large["error"]["code"] == "request_too_large"
    assert "XR_MAX_BODY_BYTES" in too_large["error"]["message"]


async def test_too_many_queued_messages_close_the_connection_and_the_running_turn_completes(
    serve_as_cli: Callable[..., LiveServer],
) -> None:
    server = serve_as_cli(discovery=False, ws_max_queued=1, local_slow_delay_s=0.1)
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps(create(model="local/slow", input="a b c d e f")))
        created = await receive(ws)
        for _ in range(3):
            await ws.send(json.dumps(create(input="queued")))
        close = await closed(ws)
    assert close.rcvd is not None and close.rcvd.code == 1008
    assert "XR_WS_MAX_QUEUED" in close.rcvd.reason
    assert_completes(server, created["response"]["id"])


def assert_completes(server: LiveServer, response_id: str) -> JSON:
    """Poll the stored response (bounded) until it is no longer in progress."""
    deadline = time.monotonic() + WAIT_S
    with httpx.Client(base_url=server.base_url, timeout=WAIT_S) as client:
        while time.monotonic() < deadline:
            reply = client.get(f"/v1/responses/{response_id}")
            if reply.status_code == 200 and reply.json()["status"] != "in_progress":
                body: JSON = reply.json()
                assert body["status"] == "completed", body
                return body
            time.sleep(0.05)
    raise AssertionError(f"{response_id} did not complete within {WAIT_S} s")


async def test_closing_the_socket_during_generate_does_not_cancel_it(
    serve_as_cli: Callable[..., LiveServer],
) -> None:
    server = serve_as_cli(discovery=False, local_slow_delay_s=0.1)
    words = "one two three four five six seven eight"
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps(create(model="local/slow", store=True, input=words)))
        created = await receive(ws)
        assert created["type"] == "response.created"
        while (await receive(ws))["type"] != "response.output_text.delta":
            pass
    stored = assert_completes(server, created["response"]["id"])
    assert stored["output"][0]["content"][0]["text"].split()[-1] == "eight"


async def test_the_connection_cap_counts_websocket_connections(
    serve_as_cli: Callable[..., LiveServer],
) -> None:
    server = serve_as_cli(discovery=False, max_connections=2)
    async with connect(ws_url(server)) as first, connect(ws_url(server)) as second:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server)):
                pass
        assert refused.value.response.status_code == 503
        check_turn(await turn(first, input="still served"))
        check_turn(await turn(second, input="still served"))
    # Closed connections free their places.
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            async with connect(ws_url(server)) as ws:
                check_turn(await turn(ws, input="a place again"))
            break
        except InvalidStatus:
            assert time.monotonic() < deadline, "the closed connections were not counted out"
            await asyncio.sleep(0.05)


async def test_the_openai_sdk_websocket_client(gateway: LiveServer) -> None:
    client = AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
    async with client.responses.connect() as connection:
        await connection.response.create(model=MODEL, store=False, input="first turn")
        first = None
        async for event in connection:
            if event.type == "response.completed":
                first = event.response
                break
        assert first is not None and first.status == "completed"
        await connection.response.create(
            model=MODEL, store=False, previous_response_id=first.id, input="second turn"
        )
        async for event in connection:
            if event.type == "response.completed":
                assert event.response.previous_response_id == first.id
                break
        await connection.response.create(
            model=MODEL, store=False, previous_response_id="resp_unknown", input="x"
        )
        async for event in connection:
            assert event.type == "error"
            assert event.error.code == "previous_response_not_found"  # type: ignore[union-attr]
            break
    await client.close()


async def test_gateway_keys_are_checked_for_every_turn(
    serve_as_cli: Callable[..., LiveServer],
) -> None:
    server = serve_as_cli(
        container=make_container(
            discovery=False, auth="keys", auth_secret="ws-test-server-secret-0123456789abcdef"
        )
    )
    secret = "xr-ws-test-key-" + "k" * 30
    key_hash = server.container.key_hasher().hash(secret)
    register_secret(secret, "gateway key of tests/test_websocket.py")
    register_secret(key_hash, "its hash")
    await server.container.key_store().save(
        GatewayKey(
            id="key_00000000000000ws",
            name="ws",
            hash=key_hash,
            display=secret[:8],
            created_at=time.time() - 10,
            models=("local/echo",),
        )
    )
    async with connect(ws_url(server)) as ws:
        no_key = error_of(await turn(ws, input="hello"))
    wrong = {"authorization": "Bearer xr-not-a-key-0123456789"}
    async with connect(ws_url(server), additional_headers=wrong) as ws:
        wrong_key = error_of(await turn(ws, input="hello"))
    right = {"authorization": f"Bearer {secret}"}
    async with connect(ws_url(server), additional_headers=right) as ws:
        check_turn(await turn(ws, input="hello"))
        forbidden = error_of(await turn(ws, model="local/slow", input="hello"))
        check_turn(await turn(ws, input="the connection stays"))
    assert no_key["status"] == wrong_key["status"] == 401
    assert no_key["error"]["code"] == "invalid_api_key"
    assert forbidden["status"] == 403
    assert "xr-not-a-key" not in json.dumps(wrong_key)


async def test_a_failure_during_generation_ends_the_turn_with_response_failed_alone(
    gateway: LiveServer,
) -> None:
    async with connect(ws_url(gateway)) as ws:
        first = check_turn(await turn(ws, store=False, input="one two three"))
        events = await turn(
            ws,
            model="local/error-mid-stream",
            store=False,
            previous_response_id=first["id"],
            input="four five six seven",
        )
        # The continuation failed, so the response it continued from is forgotten.
        evicted = error_of(
            await turn(ws, store=False, previous_response_id=first["id"], input="again")
        )
        before_output = error_of(await turn(ws, model="local/error", input="x"))
        check_turn(await turn(ws, input="the connection stays"))
    assert [event["type"] for event in events].count("error") == 0
    assert events[-1]["type"] == "response.failed"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[-1]["response"]["error"]["code"]
    assert evicted["error"]["code"] == "previous_response_not_found"
    assert before_output["status"] == 502
    assert before_output["error"]["code"] == "provider_error"


async def test_sigterm_lets_a_running_turn_use_the_grace_and_refuses_new_turns(
    start_gateway: Callable[..., Any],
) -> None:
    grace = 1.5
    gateway = start_gateway(XR_SHUTDOWN_GRACE_S=str(grace), XR_LOCAL_SLOW_DELAY_S="0.25")
    url = gateway.base_url.replace("http://", "ws://") + "/v1/responses"
    words = " ".join(f"w{i}" for i in range(200))
    async with connect(url) as ws, connect(url) as other:
        await ws.send(json.dumps(create(model="local/slow", input=words)))
        while (await receive(ws))["type"] != "response.output_text.delta":
            pass
        gateway.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.sleep(0.3)
        refused = error_of(await turn(other, input="after the signal"))
        events = await read_turn(ws)
        ended = time.monotonic()
        close = await closed(ws)
    assert refused["status"] == 503
    assert refused["error"]["code"] == "server_shutting_down"
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_shutting_down"
    assert grace - 0.5 < ended - signalled < grace + DRAIN_MARGIN_S
    assert close.rcvd is not None and close.rcvd.code in (1000, 1012)
    assert gateway.process.wait(DRAIN_MARGIN_S + grace) is not None


async def test_several_workers_keep_a_running_turn_for_the_grace_at_sigterm(
    start_gateway: Callable[..., Any], redis_server: RedisServer
) -> None:
    """With uvicorn's supervisor the workers hear of SIGTERM through their connections:
    the WebSocket protocol drains the app before it closes the socket."""
    grace = 1.5
    gateway = start_gateway(
        XR_WORKERS="2",
        XR_STORAGE="redis",
        XR_REDIS_URL=redis_server.url,
        XR_SHUTDOWN_GRACE_S=str(grace),
        XR_LOCAL_SLOW_DELAY_S="0.25",
    )
    url = gateway.base_url.replace("http://", "ws://") + "/v1/responses"
    words = " ".join(f"w{i}" for i in range(200))
    async with connect(url) as ws:
        await ws.send(json.dumps(create(model="local/slow", input=words)))
        while (await receive(ws))["type"] != "response.output_text.delta":
            pass
        gateway.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        events = await read_turn(ws)
        ended = time.monotonic()
        close = await closed(ws)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_shutting_down"
    assert grace - 0.5 < ended - signalled < grace + DRAIN_MARGIN_S
    assert close.rcvd is not None and close.rcvd.code == 1012


async def test_a_conversation_over_the_remembered_bytes_is_forgotten_and_says_so(
    serve_as_cli: Callable[..., LiveServer],
) -> None:
    server = serve_as_cli(discovery=False, ws_max_remembered_bytes=4_000)
    async with connect(ws_url(server)) as ws:
        first = check_turn(await turn(ws, store=False, input="short"))
        second = check_turn(
            await turn(ws, store=False, previous_response_id=first["id"], input="long " * 500)
        )
        outgrown = error_of(
            await turn(ws, store=False, previous_response_id=second["id"], input="more")
        )
        # A stored conversation continues from the store when the connection forgot it.
        stored = check_turn(await turn(ws, input="long " * 500))
        check_turn(await turn(ws, previous_response_id=stored["id"], input="more"))
    assert outgrown["error"]["code"] == "previous_response_not_found"
    assert "XR_WS_MAX_REMEMBERED_BYTES" in outgrown["error"]["message"]
