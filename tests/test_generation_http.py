"""Generation over real sockets: clients that leave, upstreams that hang, DELETE while a
response is generating, a provider stream that ends without saying it finished."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dependency_injector import providers

from tests.conftest import LiveServer, _serve, make_container
from tests.fakes import ScriptedProvider, Wait
from tests.helpers import raw_post, read_until, sse_events, trace, usage_records, wait_for
from tests.upstreams import FakeUpstream, Reply
from xrouter.adapters.providers.openai_compatible.provider import OpenAICompatibleProvider
from xrouter.adapters.providers.provider_spec import ProviderSpec
from xrouter.adapters.providers.transport import TransportSettings
from xrouter.domain.lifecycle import Action
from xrouter.domain.provider_events import Finish, TextDelta


def _with_provider(fake: object, **settings: Any) -> Any:
    container = make_container(**settings)
    container.model_providers.override(providers.Object([fake]))
    return container


def test_streams_abandoned_before_the_first_token_leave_no_handler_waiting() -> None:
    # The first token comes after 0.5 s; every client is gone long before.
    fake = ScriptedProvider([Wait(0.5), TextDelta("late"), Finish()])
    serving = _serve(_with_provider(fake))
    server = next(serving)
    try:
        ids = [f"abandoned-{i}" for i in range(20)]
        sockets = [
            raw_post(server, {"model": "fake/model", "input": "hi", "stream": i < 16}, request_id)
            for i, request_id in enumerate(ids)  # 16 streams, and 4 non-stream clients
        ]
        wait_for(lambda: all(Action.TOKENIZE in trace(server, i) for i in ids))
        for sock in sockets:
            sock.close()
        wait_for(lambda: all(Action.DISCONNECT_LATE in trace(server, i) for i in ids))
        # Generation is not cancelled: each one reaches its terminal state, usage recorded.
        wait_for(lambda: all(Action.RECORD_USAGE in trace(server, i) for i in ids))
        for request_id in ids:
            actions = trace(server, request_id)
            assert actions.index(Action.DISCONNECT_LATE) < actions.index(Action.FINISH)
            assert [r.status for r in usage_records(server, request_id)] == ["completed"]
    finally:
        started = time.monotonic()
        for _ in serving:  # shuts the server down
            pass
    # A handler still waiting for its first events would hold uvicorn's shutdown for its
    # whole graceful timeout (5 s here) before being cancelled.
    assert time.monotonic() - started < 2.5


def test_abandoned_generations_free_their_upstream_slots_at_the_deadline(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    chat = "/v1/chat/completions"
    fake_upstream.script(chat, [Reply.stall()] * 64)  # then the default echo
    # Fail-fast (no queue), so a call over the held slots is refused at once.
    transport = TransportSettings(base_url=fake_upstream.base_url, max_retries=0, queue_timeout_s=0)
    provider = OpenAICompatibleProvider(
        ProviderSpec(name="up", transport=transport, api_key="sk-test")
    )
    server = serve_with(container=_with_provider(provider, generation_timeout_s=1.5))
    ids = [f"hanging-{i}" for i in range(64)]  # the transport's default in-flight limit
    sockets = []
    for index, request_id in enumerate(ids):
        body = {"model": "up/gpt-test", "input": "hi", "stream": index % 2 == 0}
        sockets.append(raw_post(server, body, request_id))
    try:
        assert fake_upstream.wait_until(lambda u: u.hits(chat) == 64, timeout=10)
    finally:
        for sock in sockets:
            sock.close()
    with server.client() as client:
        held = client.post("/v1/responses", json={"model": "up/gpt-test", "input": "hi"})
    assert held.status_code == 429  # every slot is held by a generation nobody reads
    wait_for(lambda: all(Action.RECORD_USAGE in trace(server, i) for i in ids), timeout=10)
    for request_id in ids:
        assert trace(server, request_id)[-2:] == [Action.TIME_OUT, Action.RECORD_USAGE]
        assert [r.status for r in usage_records(server, request_id)] == ["failed"]
    with server.client() as client:
        later = client.post("/v1/responses", json={"model": "up/gpt-test", "input": "hi again"})
    assert later.status_code == 200, later.text
    assert later.json()["output"][0]["content"][0]["text"] == "hi again"


def test_delete_while_generating_wins(serve_with: Callable[..., LiveServer]) -> None:
    fake = ScriptedProvider([TextDelta("slow "), Wait(0.5), TextDelta("answer"), Finish()])
    server = serve_with(container=_with_provider(fake))
    sock = raw_post(server, {"model": "fake/model", "input": "x", "stream": True}, "del-1")
    try:
        received = read_until(sock, b"response.output_text.delta")
        created, _ = sse_events(received.decode())
        response_id = created[0]["response"]["id"]
        with server.client() as client:
            deleted = client.delete(f"/v1/responses/{response_id}")
            assert deleted.status_code == 200
            assert deleted.json() == {
                "id": response_id,
                "object": "response.deleted",
                "deleted": True,
            }
            rest = read_until(sock, b"data: [DONE]")
            assert b"response.completed" in rest  # the client still gets its answer
            wait_for(lambda: Action.RECORD_USAGE in trace(server, "del-1"))
            assert client.get(f"/v1/responses/{response_id}").status_code == 404
            assert client.delete(f"/v1/responses/{response_id}").status_code == 404
    finally:
        sock.close()
    assert [r.status for r in usage_records(server, "del-1")] == ["completed"]


def test_a_stream_without_finish_fails_explicitly(serve_with: Callable[..., LiveServer]) -> None:
    fake = ScriptedProvider([TextDelta("cut "), TextDelta("sho")])  # never says it finished
    server = serve_with(container=_with_provider(fake))
    body = {"model": "fake/model", "input": "x"}
    with server.client() as client:
        plain = client.post("/v1/responses", json=body)
        streamed = client.post("/v1/responses", json={**body, "stream": True})
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "fake/model", "messages": [{"role": "user", "content": "x"}]},
        )
        assert plain.status_code == 502 and chat.status_code == 502
        assert plain.json()["error"]["code"] == "provider_error"
        events, others = sse_events(streamed.text)
        assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
        failed = events[-1]["response"]
        assert others == ["[DONE]"]
        stored = client.get(f"/v1/responses/{failed['id']}").json()
    assert stored["status"] == "failed" and stored["error"]["code"] == "provider_error"
    assert stored["output"][0]["content"][0]["text"] == "cut sho"
