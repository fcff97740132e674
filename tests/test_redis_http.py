"""The Responses scenarios over real HTTP with XR_STORAGE=redis: a real redis-server (and a
three-master Redis Cluster) on loopback, the real app in-thread.

Create, stream, retrieve, delete, input_items in both orders, previous_response_id chains and
TTL expiry; two gateways sharing one Redis; and Redis stopped (SIGSTOP, then SIGKILL) in the
middle of traffic, then back, without restarting the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.fakes import ScriptedProvider
from tests.helpers import LogLines, captured_log, sse_events
from tests.redis_servers import RedisCluster, RedisServer
from xrouter.domain.provider_events import Finish, TextDelta

JSON = dict[str, Any]
Serve = Callable[..., LiveServer]


@pytest.fixture(params=["redis", "cluster"])
def redis_settings(request: pytest.FixtureRequest) -> JSON:
    """Settings overrides that put the store on a Redis server, or on a Redis Cluster."""
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return {"storage": "redis", "redis_url": cluster.url, "redis_cluster": True}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"storage": "redis", "redis_url": server.url}


def create(client: httpx.Client, **body: Any) -> JSON:
    response = client.post("/v1/responses", json={"model": "local/echo", **body})
    assert response.status_code == 200, response.text
    answer: JSON = response.json()
    return answer


def text_of(answer: JSON) -> str:
    text: str = answer["output"][0]["content"][0]["text"]
    return text


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# --- the scenario matrix on Redis and on the cluster ---------------------------------------


def test_create_retrieve_input_items_and_delete(serve_with: Serve, redis_settings: JSON) -> None:
    server = serve_with(**redis_settings)
    words = ["one", "two", "three", "four", "five"]
    with server.client() as client:
        created = create(client, input=[{"role": "user", "content": word} for word in words])
        assert text_of(created) == "five"
        response_id = created["id"]
        assert client.get(f"/v1/responses/{response_id}").json() == created

        def page(**params: Any) -> JSON:
            answer = client.get(f"/v1/responses/{response_id}/input_items", params=params)
            assert answer.status_code == 200, answer.text
            listed: JSON = answer.json()
            return listed

        newest_first = page()
        assert [item["content"][0]["text"] for item in newest_first["data"]] == words[::-1]
        assert newest_first["has_more"] is False
        first = page(order="asc", limit=2)
        assert [item["content"][0]["text"] for item in first["data"]] == ["one", "two"]
        assert first["has_more"] is True
        second = page(order="asc", limit=2, after=first["last_id"])
        assert [item["content"][0]["text"] for item in second["data"]] == ["three", "four"]
        back = page(order="desc", limit=2, after=second["first_id"])
        assert [item["content"][0]["text"] for item in back["data"]] == ["two", "one"]
        assert back["has_more"] is False
        unknown = client.get(
            f"/v1/responses/{response_id}/input_items", params={"after": "msg_nope"}
        )
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "after"

        deleted = client.delete(f"/v1/responses/{response_id}")
        assert deleted.json() == {"id": response_id, "object": "response.deleted", "deleted": True}
        assert client.get(f"/v1/responses/{response_id}").status_code == 404
        assert client.get(f"/v1/responses/{response_id}/input_items").status_code == 404
        assert client.delete(f"/v1/responses/{response_id}").status_code == 404


def test_a_streamed_response_is_stored(serve_with: Serve, redis_settings: JSON) -> None:
    server = serve_with(**redis_settings)
    with server.client() as client:
        streamed = client.post(
            "/v1/responses",
            json={"model": "local/echo", "input": "streamed to redis", "stream": True},
        )
        events, _ = sse_events(streamed.text)
        assert events[-1]["type"] == "response.completed"
        final = events[-1]["response"]
        assert client.get(f"/v1/responses/{final['id']}").json() == final


def test_a_chain_of_three_turns_reaches_the_provider_whole(
    serve_with: Serve, redis_settings: JSON
) -> None:
    fake = ScriptedProvider([TextDelta("ok"), Finish()])
    container = make_container(**redis_settings)
    container.model_providers.override(providers.Object([fake]))
    server = serve_with(container=container)
    with server.client() as client:
        previous = None
        for word in ("one", "two", "three"):
            previous = create(
                client, model="fake/model", input=word, previous_response_id=previous
            )["id"]
    assert len(fake.calls) == 3
    conversation = [(item.role, item.content) for item in fake.calls[-1].items]
    assert [role for role, _ in conversation] == ["user", "assistant"] * 2 + ["user"]
    said = [c if isinstance(c, str) else c[0]["text"] for _, c in conversation]  # type: ignore[index]
    assert said == ["one", "ok", "two", "ok", "three"]


def test_stored_responses_expire_after_the_ttl(
    serve_with: Serve, redis_server: RedisServer
) -> None:
    server = serve_with(storage="redis", redis_url=redis_server.url, store_ttl_s=0.5)
    with server.client() as client:
        created = create(client, input="short-lived")
        assert client.get(f"/v1/responses/{created['id']}").status_code == 200
        time.sleep(0.7)
        assert client.get(f"/v1/responses/{created['id']}").status_code == 404
        follow = client.post(
            "/v1/responses",
            json={"model": "local/echo", "input": "x", "previous_response_id": created["id"]},
        )
    assert follow.status_code == 400 and error_code(follow) == "previous_response_not_found"
    assert redis_server.cli("KEYS", "xr:*") == ""  # every key of the response expired


def test_two_gateways_on_one_redis_share_responses(serve_with: Serve, redis_settings: JSON) -> None:
    a, b = serve_with(**redis_settings), serve_with(**redis_settings)
    with a.client() as on_a, b.client() as on_b:
        first = create(on_a, input="made on A")
        second = create(on_b, input="continued on B", previous_response_id=first["id"])
        assert second["previous_response_id"] == first["id"]
        assert on_a.get(f"/v1/responses/{second['id']}").json() == second
        assert on_b.delete(f"/v1/responses/{first['id']}").status_code == 200
        assert on_a.get(f"/v1/responses/{first['id']}").status_code == 404
        again = on_a.post(
            "/v1/responses",
            json={"model": "local/echo", "input": "x", "previous_response_id": first["id"]},
        )
        assert again.status_code == 400 and error_code(again) == "previous_response_not_found"


# --- Redis down in the middle of traffic ----------------------------------------------------


@pytest.fixture
def engine_log() -> Iterator[LogLines]:
    """What `xrouter.engine` logs."""
    with captured_log("xrouter.engine") as lines:
        yield lines


TIMEOUT_S = 0.2
BREAKER_S = 0.5
FAST_S = 0.1
"""Well under TIMEOUT_S: an answer this quick waited for no Redis timeout."""


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_redis_stopped_then_killed_mid_traffic_then_back(
    serve_with: Serve, redis_factory: Callable[..., RedisServer], engine_log: LogLines
) -> None:
    redis = redis_factory()
    server = serve_with(
        storage="redis",
        redis_url=redis.url,
        redis_timeout_s=TIMEOUT_S,
        redis_breaker_s=BREAKER_S,
    )
    with server.client() as client:
        kept = create(client, input="stored before the outage")["id"]

        def stateless() -> httpx.Response:
            return client.post(
                "/v1/responses", json={"model": "local/echo", "input": "hi", "store": False}
            )

        def stored() -> httpx.Response:
            return client.post("/v1/responses", json={"model": "local/echo", "input": "keep"})

        def retrieve() -> httpx.Response:
            return client.get(f"/v1/responses/{kept}")

        def follow_up() -> httpx.Response:
            return client.post(
                "/v1/responses",
                json={"model": "local/echo", "input": "and?", "previous_response_id": kept},
            )

        for outage in (redis.pause, redis.kill):
            outage()
            started = time.monotonic()
            stateful_times: list[float] = []
            rounds = 0
            while time.monotonic() - started < 1.2:  # more than two breaker periods
                rounds += 1
                response, took = timed(stateless)
                assert response.status_code == 200, response.text
                assert took < FAST_S, f"a stateless request waited {took:.3f} s for Redis"
                delivered, took = timed(stored)
                assert delivered.status_code == 200 and text_of(delivered.json()) == "keep"
                stateful_times.append(took)
                for call in (retrieve, follow_up):
                    response, took = timed(call)
                    assert response.status_code == 503, response.text
                    assert error_code(response) == "storage_unavailable"
                    message = response.json()["error"]["message"]
                    assert "Redis" in message and "stored state" in message
                    stateful_times.append(took)
            # Bounded by the Redis timeout; waits only when the breaker lets one call probe
            # (once per breaker period), never on every request.
            assert max(stateful_times) < TIMEOUT_S + 0.3, stateful_times
            slow = [took for took in stateful_times if took >= FAST_S]
            assert len(slow) <= 1.2 / BREAKER_S + 1, (len(stateful_times), stateful_times)
            assert rounds >= 5
        assert any(
            "delivered but not stored" in line and line.startswith("ERROR")
            for line in engine_log.lines
        )

        redis.start()  # empty: the outage lost what it held (no persistence in the tests)
        deadline = time.monotonic() + BREAKER_S + 2.0
        while True:
            answer = stored()
            if client.get(f"/v1/responses/{answer.json()['id']}").status_code == 200:
                break
            assert time.monotonic() < deadline, "the store did not come back"
            time.sleep(0.05)
        first = create(client, input="after the outage")
        second = create(client, input="and again", previous_response_id=first["id"])
        assert client.delete(f"/v1/responses/{second['id']}").status_code == 200
        assert retrieve().status_code == 404
