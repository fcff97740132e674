"""Conversations on the Redis store, through the HTTP API and the `openai` SDK in strict mode
(real redis-server processes, tests/redis_servers.py): a conversation carried across two
gateways on one Redis (and on a Redis Cluster), turns appended by either, the TTL, Redis down,
and ownership with gateway keys on Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.redis_servers import RedisCluster, RedisServer
from tests.test_access_control import SECRET, Keys
from tests.test_conversations import sdk, texts, user
from xrouter.adapters.keys.memory import MemoryKeyStore

Serve = Callable[..., LiveServer]


@pytest.fixture(params=["redis", "cluster"])
def redis_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides that put the stores on a Redis server, or on a Redis Cluster."""
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return {"storage": "redis", "redis_url": cluster.url, "redis_cluster": True}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"storage": "redis", "redis_url": server.url}


def test_two_gateways_on_one_redis_share_a_conversation_and_its_turns(
    serve_with: Serve, redis_settings: dict[str, Any]
) -> None:
    a, b = serve_with(**redis_settings), serve_with(**redis_settings)
    with sdk(a) as on_a, sdk(b) as on_b:
        conversation = on_a.conversations.create(
            items=[user("Remember: apricot")], metadata={"made": "on a"}
        )
        assert on_b.conversations.retrieve(conversation.id) == conversation

        first = on_b.responses.create(
            model="local/echo", input="turn on b", conversation=conversation.id
        )
        assert first.conversation is not None and first.conversation.id == conversation.id
        streamed = list(
            on_a.responses.create(
                model="local/echo",
                input="turn on a",
                conversation={"id": conversation.id},
                stream=True,
            )
        )
        last = streamed[-1]
        assert last.type == "response.completed"
        assert last.response.usage is not None and first.usage is not None
        assert last.response.usage.input_tokens > first.usage.input_tokens

        assert texts(on_a.conversations.items.list(conversation.id, order="asc")) == [
            ("user", "Remember: apricot"),
            ("user", "turn on b"),
            ("assistant", "turn on b"),
            ("user", "turn on a"),
            ("assistant", "turn on a"),
        ]
        page = on_b.conversations.items.list(conversation.id, limit=2)
        assert [t for _, t in texts(page.data)] == ["turn on a", "turn on a"]
        assert [t for _, t in texts(page)][2:] == ["turn on b", "turn on b", "Remember: apricot"]

        updated = on_b.conversations.update(conversation.id, metadata={"made": "on b"})
        assert on_a.conversations.retrieve(conversation.id).metadata == updated.metadata
        one = on_a.conversations.items.retrieve(page.data[0].id, conversation_id=conversation.id)
        assert one == page.data[0]
        on_b.conversations.items.delete(page.data[0].id, conversation_id=conversation.id)
        assert len(list(on_a.conversations.items.list(conversation.id))) == 4
        with pytest.raises(openai.BadRequestError) as both:
            on_a.responses.create(
                model="local/echo",
                input="x",
                conversation=conversation.id,
                previous_response_id=first.id,
            )
        assert both.value.param == "previous_response_id"

        assert on_a.conversations.delete(conversation.id).deleted
        with pytest.raises(openai.NotFoundError):
            on_b.conversations.retrieve(conversation.id)
        with pytest.raises(openai.NotFoundError) as gone:
            on_b.responses.create(model="local/echo", input="x", conversation=conversation.id)
        assert gone.value.param == "conversation"


def test_a_conversation_expires_with_the_store_ttl_after_its_last_write(
    serve_with: Serve, redis_server: RedisServer
) -> None:
    server = serve_with(storage="redis", redis_url=redis_server.url, store_ttl_s=1.0)
    with sdk(server) as client:
        conversation = client.conversations.create(items=[user("short-lived")])
        time.sleep(0.6)
        client.responses.create(model="local/echo", input="a turn", conversation=conversation.id)
        time.sleep(0.6)  # 1.2 s after creation, 0.6 s after the turn's write
        assert len(list(client.conversations.items.list(conversation.id))) == 3
        deadline = time.monotonic() + 5
        while redis_server.cli("KEYS", f"xr:{{{conversation.id}}}:*") != "":
            assert time.monotonic() < deadline, "the conversation's keys did not expire"
            time.sleep(0.1)
        with pytest.raises(openai.NotFoundError):
            client.conversations.retrieve(conversation.id)


def test_redis_down_is_a_503_for_conversations_and_the_rest_still_works(
    serve_with: Serve, redis_factory: Callable[..., RedisServer]
) -> None:
    redis = redis_factory()
    server = serve_with(storage="redis", redis_url=redis.url, redis_timeout_s=0.3)
    with sdk(server) as client:
        conversation = client.conversations.create()
        redis.kill()
        with pytest.raises(openai.InternalServerError) as down:
            client.conversations.retrieve(conversation.id)
        assert down.value.status_code == 503
        with pytest.raises(openai.InternalServerError):
            client.responses.create(model="local/echo", input="x", conversation=conversation.id)
        answered = client.responses.create(model="local/echo", input="stateless", store=False)
        assert answered.output_text == "stateless"


def test_a_conversation_on_redis_is_its_keys_alone(
    serve_with: Serve, redis_server: RedisServer
) -> None:
    container = make_container(
        discovery=False,
        auth="keys",
        auth_secret=SECRET,
        storage="redis",
        redis_url=redis_server.url,
    )
    # The keys in memory (made from the test's own loop); the conversations on Redis.
    container.key_store.override(providers.Object(MemoryKeyStore()))
    server = serve_with(container=container)
    keys = Keys(server)
    alice, bob = sdk(server, keys.add("alice")), sdk(server, keys.add("bob"))
    mine = alice.conversations.create(items=[user("mine")])
    alice.responses.create(model="local/echo", input="turn", conversation=mine.id)
    item_id = next(iter(alice.conversations.items.list(mine.id))).id
    for call in (
        lambda: bob.conversations.retrieve(mine.id),
        lambda: bob.conversations.update(mine.id, metadata={"x": "y"}),
        lambda: bob.conversations.items.list(mine.id),
        lambda: bob.conversations.items.create(mine.id, items=[user("x")]),
        lambda: bob.conversations.items.retrieve(item_id, conversation_id=mine.id),
        lambda: bob.conversations.items.delete(item_id, conversation_id=mine.id),
        lambda: bob.conversations.delete(mine.id),
        lambda: bob.responses.create(model="local/echo", input="x", conversation=mine.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert len(list(alice.conversations.items.list(mine.id))) == 3
