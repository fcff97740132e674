"""Conversations through the HTTP API (issue 13, item 5), with the official `openai` SDK in
strict mode as the client: every `/v1/conversations` route, paging, `conversation` on
`POST /v1/responses` (its items are the history, the finished turn is appended, also when
the client left mid-stream; a failed turn is not), the 400s and 404s, the limits, and
ownership with gateway keys (another key gets 404 everywhere)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.test_access_control import SECRET, Keys
from tests.upstreams import FakeUpstream

Serve = Callable[..., LiveServer]


def sdk(server: LiveServer, api_key: str = "test") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url + "/v1",
        api_key=api_key,
        _strict_response_validation=True,
        max_retries=0,
    )


@pytest.fixture
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with sdk(server) as client:
        yield client


def texts(items: Any) -> list[tuple[str, str]]:
    """(role, text) of each message item of a listing, in its order."""
    found = []
    for item in items:
        assert item.type == "message", item
        found.append((item.role, "".join(part.text for part in item.content)))
    return found


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


# --- the routes -----------------------------------------------------------------------------


def test_the_sdk_drives_every_conversation_route(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(
        items=[user("first"), {"role": "assistant", "content": "an answer"}],
        metadata={"topic": "demo"},
    )
    assert conversation.id.startswith("conv_") and conversation.object == "conversation"
    assert conversation.metadata == {"topic": "demo"}
    assert abs(conversation.created_at - time.time()) < 60

    fetched = client.conversations.retrieve(conversation.id)
    assert fetched == conversation
    updated = client.conversations.update(conversation.id, metadata={"topic": "other"})
    assert updated.metadata == {"topic": "other"} and updated.id == conversation.id
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "other"}

    added = client.conversations.items.create(
        conversation.id,
        items=[
            user("second"),
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        ],
    )
    assert [item.type for item in added.data] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert added.first_id == added.data[0].id and added.last_id == added.data[-1].id

    listed = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [item.type for item in listed] == ["message"] * 3 + [
        "function_call",
        "function_call_output",
    ]
    assert texts(listed[:3]) == [("user", "first"), ("assistant", "an answer"), ("user", "second")]
    assert [item.id for item in listed[2:]] == [item.id for item in added.data]
    assert all(item.status == "completed" for item in listed if item.type == "message")

    one = client.conversations.items.retrieve(listed[1].id, conversation_id=conversation.id)
    assert one == listed[1]
    after_delete = client.conversations.items.delete(listed[1].id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id and after_delete.object == "conversation"
    remaining = [item.id for item in client.conversations.items.list(conversation.id, order="asc")]
    assert remaining == [listed[0].id, *[item.id for item in listed[2:]]]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(listed[1].id, conversation_id=conversation.id)

    deleted = client.conversations.delete(conversation.id)
    assert deleted.id == conversation.id and deleted.deleted
    assert deleted.object == "conversation.deleted"
    for call in (
        lambda: client.conversations.retrieve(conversation.id),
        lambda: client.conversations.delete(conversation.id),
        lambda: client.conversations.update(conversation.id, metadata={}),
        lambda: client.conversations.items.list(conversation.id),
        lambda: client.conversations.items.create(conversation.id, items=[user("x")]),
    ):
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert conversation.id in missing.value.message


def test_an_empty_conversation_and_one_made_without_a_body(server: LiveServer) -> None:
    with sdk(server) as client:
        empty = client.conversations.create()
        assert empty.metadata == {}
        assert list(client.conversations.items.list(empty.id)) == []
    reply = httpx.post(  # no body at all: an empty conversation
        server.base_url + "/v1/conversations", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["object"] == "conversation"
    page = httpx.get(server.base_url + f"/v1/conversations/{empty.id}/items").json()
    assert page == {"object": "list", "data": [], "first_id": None, "last_id": None,
                    "has_more": False}  # fmt: skip


def test_items_page_by_after_limit_and_order(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[user(f"m{n}") for n in range(7)])
    oldest_first = client.conversations.items.list(conversation.id, order="asc", limit=3)
    assert texts(oldest_first.data) == [("user", "m0"), ("user", "m1"), ("user", "m2")]
    assert oldest_first.has_more
    # The SDK follows `last_id` as `after` through every page.
    assert [t for _, t in texts(oldest_first)] == [f"m{n}" for n in range(7)]
    newest_first = client.conversations.items.list(conversation.id, limit=2)  # desc default
    assert [t for _, t in texts(newest_first.data)] == ["m6", "m5"]
    after = client.conversations.items.list(
        conversation.id, after=newest_first.data[-1].id, limit=10
    )
    assert [t for _, t in texts(after.data)] == ["m4", "m3", "m2", "m1", "m0"]
    assert not after.has_more

    for query, param in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "msg_unknown"}, "after"),
    ):
        with pytest.raises(openai.BadRequestError) as bad:
            client.conversations.items.list(conversation.id, **query)  # type: ignore[arg-type]
        assert bad.value.param == param


def test_bad_items_and_metadata_are_400s_naming_the_param(client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"items": [{"type": "message", "role": "user"}]}, "items[0].content"),
        ({"items": [{"type": "message", "role": "robot", "content": "x"}]}, "items[0].role"),
        ({"items": [{"type": "item_reference", "id": "msg_1"}]}, "items[0].type"),
        ({"items": [user("a") | {"id": "msg_1"}, user("b") | {"id": "msg_1"}]}, "items[1].id"),
        ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as bad:
            client.conversations.create(**body)
        assert bad.value.param == param, body
    with pytest.raises(openai.BadRequestError) as empty:
        client.conversations.items.create(conversation.id, items=[])
    assert empty.value.param == "items"
    client.conversations.items.create(conversation.id, items=[user("a") | {"id": "msg_mine"}])
    with pytest.raises(openai.BadRequestError) as again:
        client.conversations.items.create(conversation.id, items=[user("b") | {"id": "msg_mine"}])
    assert "msg_mine" in again.value.message


# --- responses in a conversation ------------------------------------------------------------


def test_a_response_continues_its_conversation_and_its_turn_is_appended(
    client: openai.OpenAI,
) -> None:
    conversation = client.conversations.create(items=[user("Remember the word: apricot")])
    alone = client.responses.create(model="local/echo", input="What was the word?")

    first = client.responses.create(
        model="local/echo", input="What was the word?", conversation=conversation.id
    )
    assert first.conversation is not None and first.conversation.id == conversation.id
    assert first.output_text == "What was the word?"
    assert first.usage is not None and alone.usage is not None
    assert first.usage.input_tokens > alone.usage.input_tokens  # the history was its input

    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert texts(items) == [
        ("user", "Remember the word: apricot"),
        ("user", "What was the word?"),
        ("assistant", "What was the word?"),
    ]
    assert items[-1].id == first.output[0].id  # the output items as the response has them

    # `{"id": ...}` names it too, and a streamed turn is appended like any other.
    events = list(
        client.responses.create(
            model="local/echo",
            input=[user("again")],
            conversation={"id": conversation.id},
            stream=True,
        )
    )
    assert events[-1].type == "response.completed"
    completed = events[-1].response
    assert completed.conversation is not None and completed.conversation.id == conversation.id
    assert completed.usage is not None and completed.usage.input_tokens > first.usage.input_tokens
    assert texts(client.conversations.items.list(conversation.id, order="asc"))[-2:] == [
        ("user", "again"),
        ("assistant", "again"),
    ]
    assert client.responses.retrieve(first.id).conversation == first.conversation


def test_a_tool_call_turn_is_appended_and_the_next_turn_answers_it(
    client: openai.OpenAI,
) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    conversation = client.conversations.create()
    asked = client.responses.create(
        model="local/echo",
        input='call get_weather {"city": "Paris"}',
        tools=[tool],  # type: ignore[list-item]
        conversation=conversation.id,
    )
    call = asked.output[0]
    assert call.type == "function_call"
    answered = client.responses.create(
        model="local/echo",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[tool],  # type: ignore[list-item]
        conversation=conversation.id,
    )
    assert "sunny" in answered.output_text
    kinds = [item.type for item in client.conversations.items.list(conversation.id, order="asc")]
    assert kinds == ["message", "function_call", "function_call_output", "message"]


def test_a_failed_turn_appends_nothing(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[user("before")])
    stream = client.responses.create(
        model="local/error-mid-stream",
        input="this fails after some output",
        conversation=conversation.id,
        stream=True,
    )
    with pytest.raises(openai.APIError, match="failed mid-stream"):
        for _ in stream:
            pass
    assert texts(client.conversations.items.list(conversation.id)) == [("user", "before")]


def test_a_turn_is_appended_when_the_client_left_mid_stream(server: LiveServer) -> None:
    with sdk(server) as client:
        conversation = client.conversations.create()
    body = {
        "model": "local/slow",
        "input": "one two three four five",
        "stream": True,
        "conversation": conversation.id,
    }
    with (
        httpx.Client(base_url=server.base_url, timeout=10) as http,
        http.stream("POST", "/v1/responses", json=body) as streaming,
    ):
        assert streaming.status_code == 200
        next(streaming.iter_bytes())  # the first events, then the client leaves
    deadline = time.monotonic() + 10
    with sdk(server) as client:
        while True:
            items = texts(client.conversations.items.list(conversation.id, order="asc"))
            if len(items) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert items == [
        ("user", "one two three four five"),
        ("assistant", "one two three four five"),
    ]


def test_conversation_errors_on_a_response(client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    first = client.responses.create(model="local/echo", input="hi")
    with pytest.raises(openai.BadRequestError) as both:
        client.responses.create(
            model="local/echo",
            input="hi",
            conversation=conversation.id,
            previous_response_id=first.id,
        )
    assert both.value.param == "previous_response_id"
    assert "conversation" in both.value.message

    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="local/echo", input="hi", conversation="conv_unknown")
    assert unknown.value.param == "conversation" and "conv_unknown" in unknown.value.message

    for shape in ({}, {"id": 5}, ""):
        with pytest.raises(openai.BadRequestError) as bad:
            client.responses.create(
                model="local/echo",
                input="hi",
                conversation=shape,  # type: ignore[arg-type]
            )
        assert bad.value.param == "conversation"
    assert list(client.conversations.items.list(conversation.id)) == []


def test_the_upstream_receives_the_conversation_before_the_new_input(
    serve_with: Serve, fake_upstream: FakeUpstream
) -> None:
    container = make_container(discovery=False)
    container.environ.override(
        providers.Object(
            {
                "XR_FAKE_BASE_URL": fake_upstream.base_url,
                "XR_FAKE_ENABLED": "true",
                "XR_FAKE_API_KEY": "sk-operator-key-0123456789",
            }
        )
    )
    server = serve_with(container=container)
    with sdk(server) as client:
        conversation = client.conversations.create(items=[user("my name is Ada")])
        client.responses.create(model="fake/gpt-test", input="hello", conversation=conversation.id)
        client.responses.create(
            model="fake/gpt-test", input="what is my name?", conversation=conversation.id
        )
    sent = fake_upstream.requests("/v1/chat/completions")[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "my name is Ada"),
        ("user", "hello"),
        ("assistant", "hello"),
        ("user", "what is my name?"),
    ]


# --- limits ---------------------------------------------------------------------------------


def test_the_item_limits_are_400s_that_name_their_setting(serve_with: Serve) -> None:
    server = serve_with(conversation_max_items=4, conversation_max_item_bytes=2_000)
    with sdk(server) as client:
        with pytest.raises(openai.BadRequestError) as too_many:
            client.conversations.create(items=[user(f"m{n}") for n in range(5)])
        assert "XR_CONVERSATION_MAX_ITEMS" in too_many.value.message
        with pytest.raises(openai.BadRequestError) as too_big:
            client.conversations.create(items=[user("x" * 3_000)])
        assert too_big.value.param == "items[0]"
        assert "XR_CONVERSATION_MAX_ITEM_BYTES" in too_big.value.message

        conversation = client.conversations.create(items=[user("a"), user("b")])
        client.responses.create(model="local/echo", input="c", conversation=conversation.id)
        with pytest.raises(openai.BadRequestError) as full:
            client.conversations.items.create(conversation.id, items=[user("e")])
        assert "XR_CONVERSATION_MAX_ITEMS" in full.value.message
        # A turn needs room for its input and an output: refused before generation.
        with pytest.raises(openai.BadRequestError) as no_room:
            client.responses.create(model="local/echo", input="d", conversation=conversation.id)
        assert no_room.value.param == "conversation"
        assert "XR_CONVERSATION_MAX_ITEMS" in no_room.value.message
        assert len(list(client.conversations.items.list(conversation.id))) == 4

        roomy = client.conversations.create()
        with pytest.raises(openai.BadRequestError) as big_input:
            client.responses.create(
                model="local/echo", input=[user("hello"), user("y" * 3_000)], conversation=roomy.id
            )
        assert big_input.value.param == "input[1]"
        assert "XR_CONVERSATION_MAX_ITEM_BYTES" in big_input.value.message
        assert list(client.conversations.items.list(roomy.id)) == []


# --- ownership ------------------------------------------------------------------------------


def test_a_conversation_is_its_keys_alone(serve_with: Serve) -> None:
    server = serve_with(container=make_container(discovery=False, auth="keys", auth_secret=SECRET))
    keys = Keys(server)
    alice, bob = sdk(server, keys.add("alice")), sdk(server, keys.add("bob"))
    mine = alice.conversations.create(items=[user("secret plans")], metadata={"who": "alice"})
    item_id = next(iter(alice.conversations.items.list(mine.id))).id

    for call in (
        lambda: bob.conversations.retrieve(mine.id),
        lambda: bob.conversations.update(mine.id, metadata={"who": "bob"}),
        lambda: bob.conversations.items.list(mine.id),
        lambda: bob.conversations.items.create(mine.id, items=[user("bob was here")]),
        lambda: bob.conversations.items.retrieve(item_id, conversation_id=mine.id),
        lambda: bob.conversations.items.delete(item_id, conversation_id=mine.id),
        lambda: bob.conversations.delete(mine.id),
        lambda: bob.responses.create(model="local/echo", input="hi", conversation=mine.id),
    ):
        with pytest.raises(openai.NotFoundError) as other:
            call()
        assert mine.id in other.value.message

    assert alice.conversations.retrieve(mine.id).metadata == {"who": "alice"}
    turn = alice.responses.create(model="local/echo", input="go on", conversation=mine.id)
    assert turn.status == "completed"
    assert texts(alice.conversations.items.list(mine.id, order="asc")) == [
        ("user", "secret plans"),
        ("user", "go on"),
        ("assistant", "go on"),
    ]
    theirs = bob.conversations.create()
    with pytest.raises(openai.NotFoundError):
        alice.conversations.retrieve(theirs.id)
    with pytest.raises(openai.AuthenticationError):
        sdk(server, "sk-not-a-key").conversations.create()
    assert alice.conversations.delete(mine.id).deleted
