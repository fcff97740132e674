"""`POST /v1/responses/compact` and compaction items, through the public HTTP API.

Three ways a compaction goes: the gateway's own (the model writes a summary, sealed into a
`compaction` item that later requests expand), passed through to an upstream that compacts
natively, and refused (a tampered, foreign or missing-model request).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import openresponses_types as ort
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.test_openai_sdk import make_client
from tests.upstreams import FakeUpstream, Reply
from xrouter.adapters.providers.openai_compatible.provider import OpenAICompatibleProvider
from xrouter.adapters.providers.provider_spec import ProviderSpec
from xrouter.adapters.providers.transport_settings import TransportSettings
from xrouter.application.compaction import SUMMARY_INSTRUCTIONS, SUMMARY_REQUEST
from xrouter.application.compaction_items import SUMMARY_PREAMBLE

JSON = dict[str, Any]

WINDOW: list[JSON] = [
    {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "Remember the code word: slate."}],
    },
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "OK."}]},
]


def compact(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/responses/compact", json=body)


def compaction_item(resource: JSON) -> JSON:
    items = [item for item in resource["output"] if item["type"] == "compaction"]
    assert len(items) == 1, resource
    return items[0]


def assert_unverifiable(reply: httpx.Response, param: str) -> None:
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param
    assert "could not be verified" in error["message"]


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


# --- the gateway's own compaction ---------------------------------------------------------------


def test_the_sdk_in_strict_mode_compacts_and_the_answer_is_open_responses(
    server: LiveServer,
) -> None:
    with make_client(server) as sdk:
        compacted = sdk.responses.compact(model="local/echo", input=WINDOW)  # type: ignore[arg-type]

    assert compacted.object == "response.compaction"
    assert compacted.id.startswith("resp_")
    (item,) = compacted.output
    assert item.type == "compaction"
    assert item.id.startswith("cmp_")
    assert item.encrypted_content.startswith("xrc_")
    # The summary is sealed: nothing of the window shows through.
    assert "slate" not in item.encrypted_content
    assert compacted.usage.input_tokens > 0 and compacted.usage.output_tokens > 0
    ort.CompactResource.model_validate(compacted.model_dump(mode="json", exclude_none=True))


def test_the_strict_sdk_lists_a_stored_compaction_item_and_compacts_from_it(
    server: LiveServer,
) -> None:
    with make_client(server) as sdk:
        compacted = sdk.responses.compact(model="local/echo", input="hello there")  # type: ignore[arg-type]
        sent = compacted.output[0].model_dump(exclude_none=True)
        del sent["id"]  # optional on input: the store gives the item its own
        turn = sdk.responses.create(
            model="local/echo", input=[sent, {"role": "user", "content": "next"}]
        )
        listed = sdk.responses.input_items.list(turn.id, order="asc").data
        again = sdk.responses.compact(model="local/echo", previous_response_id=turn.id)  # type: ignore[arg-type]

    assert [item.type for item in listed] == ["compaction", "message"]
    assert listed[0].encrypted_content == sent["encrypted_content"]  # type: ignore[union-attr]
    assert [item.type for item in again.output] == ["compaction"]


def test_every_api_prefix_serves_compaction(serve_with: Any) -> None:
    server = serve_with(api_prefixes=("/v1", "/api/v1"))
    with server.client() as http:
        reply = http.post("/api/v1/responses/compact", json={"model": "local/echo", "input": "hi"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["object"] == "response.compaction"


def test_a_compaction_item_sent_back_is_expanded_into_its_summary(client: httpx.Client) -> None:
    resource = compact(client, model="local/echo", input=WINDOW).json()
    item = compaction_item(resource)

    # `local/echo` answers with the last user message: here, what the item became.
    reply = client.post("/v1/responses", json={"model": "local/echo", "input": [item]})

    assert reply.status_code == 200, reply.text
    seen = reply.json()["output"][0]["content"][0]["text"]
    # The echo model's "summary" is the summarising request it was sent last.
    assert seen == SUMMARY_PREAMBLE + SUMMARY_REQUEST


def test_the_item_survives_storage_and_previous_response_id(client: httpx.Client) -> None:
    item = compaction_item(compact(client, model="local/echo", input="a long story").json())
    first = client.post(
        "/v1/responses", json={"model": "local/echo", "input": [item, *WINDOW[:1]]}
    ).json()

    # The stored input keeps the item itself; the next turn expands it again from history.
    listed = client.get(f"/v1/responses/{first['id']}/input_items?order=asc").json()["data"]
    assert listed[0]["type"] == "compaction"
    assert listed[0]["encrypted_content"] == item["encrypted_content"]
    compacted_again = compact(client, model="local/echo", previous_response_id=first["id"])
    assert compacted_again.status_code == 200, compacted_again.text


def test_a_chat_upstream_gets_the_window_and_later_the_summary_never_the_item(
    serve_with: Any, fake_upstream: FakeUpstream
) -> None:
    server = upstream_gateway(serve_with, fake_upstream, protocol="chat")
    with server.client() as http:
        resource = compact(http, model="up/gpt-test", input=WINDOW, instructions="Be terse.").json()
        item = compaction_item(resource)
        follow = http.post(
            "/v1/responses",
            json={"model": "up/gpt-test", "input": [item, {"role": "user", "content": "Next?"}]},
        )
    assert follow.status_code == 200, follow.text

    summarising, continuing = (r.json for r in fake_upstream.requests("/v1/chat/completions"))
    # The summariser saw the fixed prompt, the client's instructions, the window, the request.
    system, user, assistant, ask = summarising["messages"]
    assert system["role"] == "system"
    assert SUMMARY_INSTRUCTIONS in system["content"] and "Be terse." in system["content"]
    assert "slate" in str(user["content"]) and assistant["role"] == "assistant"
    assert ask == {"role": "user", "content": SUMMARY_REQUEST}
    # The fake upstream's "summary" is the last user message: the summarising request.
    expanded, latest = continuing["messages"]
    assert expanded == {"role": "user", "content": SUMMARY_PREAMBLE + SUMMARY_REQUEST}
    assert latest == {"role": "user", "content": "Next?"}
    assert "compaction" not in str(continuing)


# --- refusals ------------------------------------------------------------------------------------


def test_a_tampered_item_is_refused_naming_it(client: httpx.Client) -> None:
    item = compaction_item(compact(client, model="local/echo", input=WINDOW).json())
    token = item["encrypted_content"]
    raw = bytearray(base64.urlsafe_b64decode(token[4:] + "=" * (-len(token[4:]) % 4)))
    raw[-1] ^= 1  # one bit of the authentication tag
    tampered = {**item, "encrypted_content": "xrc_" + base64.urlsafe_b64encode(raw).decode()}

    reply = client.post(
        "/v1/responses",
        json={"model": "local/echo", "input": [{"role": "user", "content": "hi"}, tampered]},
    )

    assert_unverifiable(reply, "input[1]")


@pytest.mark.parametrize(
    "content",
    [
        "gAAAAABnot-ours",
        "xrc_",
        "xrc_!!!",
        "xrc_" + base64.urlsafe_b64encode(b"\x02" * 40).decode(),
    ],
)
def test_foreign_or_garbled_items_are_refused_for_a_model_that_cannot_read_them(
    client: httpx.Client, content: str
) -> None:
    item = {"type": "compaction", "id": "cmp_1", "encrypted_content": content}
    reply = client.post("/v1/responses", json={"model": "local/echo", "input": [item]})
    assert_unverifiable(reply, "input[0]")


def test_an_item_sealed_by_another_gateway_key_is_refused(serve_with: Any) -> None:
    one = serve_with(compaction_key="k" * 32)
    other = serve_with(compaction_key="q" * 32)
    same = serve_with(compaction_key="k" * 32)
    with one.client() as http:
        item = compaction_item(compact(http, model="local/echo", input=WINDOW).json())
    body = {"model": "local/echo", "input": [item]}
    with other.client() as http:
        assert_unverifiable(http.post("/v1/responses", json=body), "input[0]")
    # Every process given the same key opens it: workers and instances share the setting.
    with same.client() as http:
        assert http.post("/v1/responses", json=body).status_code == 200


def test_a_missing_model_is_a_400_naming_it(client: httpx.Client) -> None:
    reply = client.post("/v1/responses/compact", json={"input": WINDOW})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "model"


def test_nothing_to_compact_is_a_400(client: httpx.Client) -> None:
    reply = compact(client, model="local/echo")
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "input"


def test_an_unknown_model_is_a_404_and_an_unknown_previous_response_a_400(
    client: httpx.Client,
) -> None:
    assert compact(client, model="local/nope", input="x").status_code == 404
    missing = compact(client, model="local/echo", previous_response_id="resp_gone")
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "previous_response_not_found"


def test_a_failing_summariser_is_a_failure_not_an_empty_compaction(client: httpx.Client) -> None:
    reply = compact(client, model="local/error", input=WINDOW)
    assert reply.status_code == 502, reply.text


# --- an upstream that compacts natively -----------------------------------------------------------


def upstream_gateway(serve_with: Any, upstream: FakeUpstream, **spec: Any) -> LiveServer:
    transport = TransportSettings(base_url=upstream.base_url, max_retries=0)
    provider = OpenAICompatibleProvider(
        ProviderSpec(name="up", transport=transport, api_key="sk-test", **spec)
    )
    container = make_container()
    container.model_providers.override(providers.Object([container.local_provider(), provider]))
    return serve_with(container=container)


UPSTREAM_COMPACTION: JSON = {
    "id": "resp_up1",
    "object": "response.compaction",
    "created_at": 1_700_000_000,
    "output": [
        {
            "type": "message",
            "id": "msg_up1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Code word: slate.", "annotations": []}],
        },
        {"type": "compaction", "id": "cmp_up1", "encrypted_content": "gAAAAAupstream-opaque"},
    ],
    "usage": {
        "input_tokens": 20,
        "output_tokens": 5,
        "total_tokens": 25,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    },
}


def test_a_responses_upstream_compacts_itself_and_its_item_goes_back_untouched(
    serve_with: Any, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script("/v1/responses/compact", Reply.json(UPSTREAM_COMPACTION))
    server = upstream_gateway(serve_with, fake_upstream, protocol="responses")
    with server.client() as http:
        ours = compaction_item(compact(http, model="local/echo", input="kept").json())
        reply = compact(
            http,
            model="up/gpt-test",
            input=[ours, *WINDOW],
            instructions="Be terse.",
            prompt_cache_key="k1",
        )
        assert reply.status_code == 200, reply.text
        relayed = reply.json()
        # Relayed as the upstream sent it; usage normalised to the gateway's full shape.
        assert {**relayed, "usage": None} == {**UPSTREAM_COMPACTION, "usage": None}
        assert relayed["usage"]["total_tokens"] == 25
        assert relayed["usage"]["input_tokens_details"]["cache_write_tokens"] == 0
        follow = http.post(
            "/v1/responses",
            json={
                "model": "up/gpt-test",
                "input": [*UPSTREAM_COMPACTION["output"], {"role": "user", "content": "Next?"}],
            },
        )
    assert follow.status_code == 200, follow.text

    (sent,) = (r.json for r in fake_upstream.requests("/v1/responses/compact"))
    assert sent["model"] == "gpt-test"
    assert sent["instructions"] == "Be terse." and sent["prompt_cache_key"] == "k1"
    # The gateway's own item was opened before it left; the window follows as given.
    assert sent["input"][0] == {
        "type": "message",
        "role": "user",
        "content": SUMMARY_PREAMBLE + SUMMARY_REQUEST,
    }
    assert [i["role"] for i in sent["input"][1:]] == ["user", "assistant"]
    (continued,) = (r.json for r in fake_upstream.requests("/v1/responses"))
    assert continued["input"][1] == UPSTREAM_COMPACTION["output"][1]


@pytest.mark.parametrize(
    "answer",
    [
        {**UPSTREAM_COMPACTION, "object": "response"},
        {**UPSTREAM_COMPACTION, "output": [{"id": "x"}]},
        {**UPSTREAM_COMPACTION, "output": [{"type": "compaction", "id": "cmp_1"}]},
        {"id": "resp_1", "object": "response.compaction"},
    ],
)
def test_a_malformed_upstream_compaction_is_a_502(
    serve_with: Any, fake_upstream: FakeUpstream, answer: JSON
) -> None:
    fake_upstream.script("/v1/responses/compact", Reply.json(answer))
    server = upstream_gateway(serve_with, fake_upstream, protocol="responses")
    with server.client() as http:
        reply = compact(http, model="up/gpt-test", input=WINDOW)
    assert reply.status_code == 502, reply.text
    assert "compaction" in reply.json()["error"]["message"]


def test_the_sdk_reads_a_passed_through_compaction_strictly(
    serve_with: Any, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script("/v1/responses/compact", Reply.json(UPSTREAM_COMPACTION))
    server = upstream_gateway(serve_with, fake_upstream, protocol="responses")
    with make_client(server) as sdk:
        compacted = sdk.responses.compact(model="up/gpt-test", input="hello")  # type: ignore[arg-type]
    assert [item.type for item in compacted.output] == ["message", "compaction"]
    with pytest.raises(openai.BadRequestError) as refused:
        make_client(server).responses.compact(model="", input="x")  # type: ignore[arg-type]
    assert refused.value.param == "model"
