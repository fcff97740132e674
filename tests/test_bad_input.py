"""Bad input gets its documented 4xx in the OpenAI error envelope; odd-but-legal input is
accepted; and no JSON body whatsoever makes the gateway answer with a 5xx.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import LiveServer

JSON = dict[str, Any]
ENVELOPE_KEYS = {"message", "type", "param", "code"}
STACK_TRACE_SIGNS = re.compile(r"Traceback|File \"|\.py\b|/site-packages/|/src/xrouter")


def assert_envelope(response: httpx.Response, status: int) -> JSON:
    """`response` is a `status` JSON error in the OpenAI envelope, with a request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert response.headers.get("x-request-id"), "every answer carries x-request-id"
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    assert not STACK_TRACE_SIGNS.search(error["message"]), error["message"]
    return error


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def post(client: httpx.Client, body: Any, **kwargs: Any) -> httpx.Response:
    return client.post("/v1/responses", json=body, **kwargs)


# --- 400: the body cannot be used ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"model": "local/echo", "input": "x"', b"\xff\xfe", b"", b"[1, 2]", b"null"],
    ids=["malformed", "truncated", "not-utf8", "empty", "array", "null"],
)
def test_unusable_body_is_400(client: httpx.Client, raw: bytes) -> None:
    response = client.post(
        "/v1/responses", content=raw, headers={"content-type": "application/json"}
    )
    error = assert_envelope(response, 400)
    assert error["type"] == "invalid_request_error"


def nest(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (
            b'{"model": "local/echo", "input": "x", "client_metadata": {"a": ' + nest(1000) + b"}}",
            "client_metadata",
        ),
        (
            b'{"model": "local/echo", "input": "x", "tools": [{"type": "function", "name": "f", '
            b'"parameters": {"p": ' + nest(5000) + b"}}]}",
            "tools",
        ),
        (
            b'{"model": "local/echo", "input": "x", "text": {"format": {"type": "json_schema", '
            b'"name": "x", "schema": {"p": ' + nest(50_000) + b"}}}}",
            "text",
        ),
    ],
    ids=["client_metadata-1000", "tool-parameters-5000", "text-schema-50000"],
)
def test_json_nested_too_deep_is_400_naming_the_field(
    client: httpx.Client, raw: bytes, param: str
) -> None:
    for path in ("/v1/responses", "/v1/chat/completions"):
        body = raw if path == "/v1/responses" else raw.replace(b'"input": "x"', b'"messages": []')
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        error = assert_envelope(response, 400)
        assert error["code"] == "json_too_deep", error
        assert error["param"] == param, error
        assert "deep" in error["message"]


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"model": "local/echo", "input": "caf\xe9 au lait"}', "input"),
        (b'{"model": "local/echo", "input": "x", "metadata": {"k": "\xff\xfe"}}', "metadata"),
        (b'{"model": "local/echo", "input": "x", "metadata": {"k\xc3": "v"}}', "metadata"),
        (
            b'{"model": "local/echo", "input": [{"role": "user", "content": "\xed\xa0\x80"}]}',
            "input",
        ),
    ],
    ids=["latin1-in-input", "garbage-in-metadata-value", "truncated-in-key", "surrogate-bytes"],
)
def test_invalid_utf8_inside_a_string_is_400_naming_the_field(
    client: httpx.Client, raw: bytes, param: str
) -> None:
    response = client.post(
        "/v1/responses", content=raw, headers={"content-type": "application/json"}
    )
    error = assert_envelope(response, 400)
    assert error["code"] == "invalid_utf8", error
    assert error["param"] == param, error
    assert "UTF-8" in error["message"]


def test_malformed_json_names_the_problem(client: httpx.Client) -> None:
    response = client.post(
        "/v1/responses", content=b"{not json", headers={"content-type": "application/json"}
    )
    error = assert_envelope(response, 400)
    assert error["code"] == "invalid_json"
    assert "JSON" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": 1, "input": "x"}, "model"),
        ({"model": "local/echo", "input": 5}, "input"),
        ({"model": "local/echo", "input": "x", "temperature": "hot"}, "temperature"),
        ({"model": "local/echo", "input": "x", "temperature": 5}, "temperature"),
        ({"model": "local/echo", "input": "x", "top_p": 1.5}, "top_p"),
        ({"model": "local/echo", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "local/echo", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "local/echo", "input": "x", "tools": {"type": "function"}}, "tools"),
    ],
    ids=[
        "model-int",
        "input-int",
        "temperature-str",
        "temperature-5",
        "top_p",
        "max_output_tokens-0",
        "stream-str",
        "tools-object",
    ],
)
def test_wrong_type_or_value_names_the_param(client: httpx.Client, body: JSON, param: str) -> None:
    error = assert_envelope(post(client, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param.split(".")[0] in error["message"]


def test_wrong_metadata_value_names_metadata(client: httpx.Client) -> None:
    body = {"model": "local/echo", "input": "x", "metadata": {"k": 1}}
    error = assert_envelope(post(client, body), 400)
    assert (error["param"] or "").startswith("metadata")


def test_wrong_type_inside_an_input_item_names_its_path(client: httpx.Client) -> None:
    body = {"model": "local/echo", "input": [{"role": 7, "content": "x"}]}
    error = assert_envelope(post(client, body), 400)
    assert error["param"] == "input[0].role"


@pytest.mark.parametrize(
    ("body", "param"),
    [({"input": "x"}, "model"), ({"model": "local/echo"}, "input")],
    ids=["model", "input"],
)
def test_missing_required_parameter(client: httpx.Client, body: JSON, param: str) -> None:
    error = assert_envelope(post(client, body), 400)
    assert error["param"] == param
    assert error["code"] == "missing_required_parameter"


def test_unknown_previous_response_is_400(client: httpx.Client) -> None:
    body = {"model": "local/echo", "input": "x", "previous_response_id": "resp_nope"}
    error = assert_envelope(post(client, body), 400)
    assert error["param"] == "previous_response_id"
    assert error["code"] == "previous_response_not_found"


# --- 413 -------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413(serve_with: Any, caplog: pytest.LogCaptureFixture) -> None:
    small = serve_with(max_body_bytes=1000)
    body = json.dumps({"model": "local/echo", "input": "x" * 5000}).encode()
    assert len(body) > 5000
    with small.client() as http, caplog.at_level(logging.INFO, logger="xrouter.http"):
        response = http.post(
            "/v1/responses", content=body, headers={"content-type": "application/json"}
        )
        error = assert_envelope(response, 413)
        assert error["code"] == "request_too_large"
        assert "XR_MAX_BODY_BYTES" in error["message"]
        assert any("XR_MAX_BODY_BYTES" in r.getMessage() for r in caplog.records)
        # A body under the limit still works on the same server.
        assert post(http, {"model": "local/echo", "input": "small"}).status_code == 200


# --- 404 / 405 -------------------------------------------------------------------------------


def test_unknown_model_is_404(client: httpx.Client) -> None:
    error = assert_envelope(post(client, {"model": "nowhere/nothing", "input": "x"}), 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "nowhere/nothing" in error["message"]


def test_unknown_model_with_stream_is_json_not_sse(client: httpx.Client) -> None:
    body = {"model": "nowhere/nothing", "input": "x", "stream": True}
    with client.stream("POST", "/v1/responses", json=body) as response:
        response.read()
    assert "text/event-stream" not in response.headers["content-type"]
    error = assert_envelope(response, 404)
    assert error["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing"),
        ("POST", "/v1/chat/nothing"),
        ("GET", "/nothing"),
        ("GET", "/api/v1/nothing"),
    ],
)
def test_unknown_route_is_404_envelope(client: httpx.Client, method: str, path: str) -> None:
    error = assert_envelope(client.request(method, path), 404)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/v1/responses"), ("GET", "/v1/responses"), ("POST", "/v1/models")],
)
def test_wrong_method_is_405_envelope(client: httpx.Client, method: str, path: str) -> None:
    error = assert_envelope(client.request(method, path), 405)
    assert method in error["message"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("DELETE", ""), ("GET", "/input_items")],
    ids=["retrieve", "delete", "input_items"],
)
def test_unknown_response_id_is_404(client: httpx.Client, method: str, suffix: str) -> None:
    response = client.request(method, f"/v1/responses/resp_does_not_exist{suffix}")
    error = assert_envelope(response, 404)
    assert "resp_does_not_exist" in error["message"]


# --- accepted on purpose ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"some_future_field": {"nested": [1, 2]}, "another": None},
        {"client_metadata": {"session": "abc", "n": 1}},
        {"tools": [{"type": "web_search", "external_web_access": True}]},
        {"tools": [{"type": "namespace", "name": "x", "tools": []}]},
        {"tools": [{"type": "mcp", "server_label": "s"}, {"type": "custom", "name": "c"}]},
        {"include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "store": False},
    ],
    ids=["unknown-fields", "client_metadata", "web_search", "namespace", "mcp-custom", "codex"],
)
def test_unknown_but_harmless_input_is_accepted(client: httpx.Client, extra: JSON) -> None:
    response = post(client, {"model": "local/echo", "input": "still works", **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["output"][0]["content"][0]["text"] == "still works"


def test_inbound_request_id_is_echoed(client: httpx.Client) -> None:
    ok = post(client, {"model": "local/echo", "input": "x"}, headers={"x-request-id": "abc-123"})
    assert ok.headers["x-request-id"] == "abc-123"
    failed = post(client, {"model": "nope/x", "input": "x"}, headers={"x-request-id": "req.77"})
    assert failed.status_code == 404
    assert failed.headers["x-request-id"] == "req.77"


def test_generated_request_ids_are_unique(client: httpx.Client) -> None:
    ids = {
        post(client, {"model": "local/echo", "input": "x"}).headers["x-request-id"]
        for _ in range(3)
    }
    assert len(ids) == 3


# --- provider failure ------------------------------------------------------------------------


def test_provider_error_is_502_without_internals(client: httpx.Client) -> None:
    response = post(client, {"model": "local/error", "input": "x"})
    error = assert_envelope(response, 502)
    assert error["type"] == "server_error"
    assert error["code"] == "provider_error"
    assert not STACK_TRACE_SIGNS.search(response.text), response.text


# --- property: no body makes a 5xx ----------------------------------------------------------

REQUEST_FIELDS = (
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "top_logprobs",
    "max_output_tokens",
    "max_tool_calls",
    "stream",
    "stream_options",
    "store",
    "background",
    "previous_response_id",
    "conversation",
    "metadata",
    "text",
    "reasoning",
    "include",
    "truncation",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
    "client_metadata",
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
short_text = st.sampled_from(["", "hi", "call f {}", 'call f {"a": 1}', "x y z"]) | st.text(
    max_size=20
)
content_parts = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["input_text", "output_text", "input_image", "refusal"])},
        optional={"text": json_values, "image_url": json_values, "refusal": json_values},
    ),
    max_size=3,
)
input_items = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            ["message", "function_call", "function_call_output", "reasoning", "item_reference"]
        )
        | json_values,
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | json_values,
        "content": short_text | content_parts | json_values,
        "call_id": st.sampled_from(["call_1", "call_local_0"]) | json_values,
        "name": st.sampled_from(["f", "g"]) | json_values,
        "arguments": st.sampled_from(["{}", "{", "[]"]) | json_values,
        "output": short_text | content_parts | json_values,
        "id": json_values,
        "summary": json_values,
    },
)
tools = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "web_search", "namespace", "mcp"]) | json_values},
        optional={
            "name": st.sampled_from(["f", "g"]) | json_values,
            "parameters": json_values,
            "strict": json_values,
            "description": json_values,
            "tools": json_values,
        },
    ),
    max_size=3,
)
messages = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "developer"]),
        "content": short_text
        | st.lists(
            st.fixed_dictionaries({"type": st.just("input_text"), "text": short_text}),
            min_size=1,
            max_size=2,
        ),
    },
    optional={"type": st.just("message")},
)
function_tools = st.lists(
    st.fixed_dictionaries(
        {"type": st.just("function"), "name": st.sampled_from(["f", "g", "get_weather"])},
        optional={
            "parameters": st.just({"type": "object", "properties": {}}),
            "strict": st.booleans() | st.none(),
            "description": short_text | st.none(),
        },
    ),
    max_size=2,
)
text_formats = st.sampled_from(
    [
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "name": "x", "schema": {"type": "object"}},
        {"type": "json_schema", "name": "x", "schema": {}, "strict": True, "description": "d"},
    ]
)
# Values a real client could send, field by field.
plausible: dict[str, st.SearchStrategy[Any]] = {
    "input": short_text | st.lists(messages, min_size=1, max_size=3),
    "instructions": short_text | st.none(),
    "tools": function_tools
    | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["web_search", "mcp"])}), max_size=1),
    "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "name": "f"}]),
    "parallel_tool_calls": st.booleans(),
    "temperature": st.floats(min_value=0, max_value=2) | st.none(),
    "top_p": st.floats(min_value=0, max_value=1) | st.none(),
    "presence_penalty": st.floats(min_value=-2, max_value=2),
    "frequency_penalty": st.floats(min_value=-2, max_value=2),
    "top_logprobs": st.integers(min_value=0, max_value=20),
    "max_output_tokens": st.integers(min_value=1, max_value=6) | st.none(),
    "max_tool_calls": st.integers(min_value=1, max_value=3),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_obfuscation": st.booleans()}),
    "store": st.booleans(),
    "background": st.just(False),
    "previous_response_id": st.none(),
    "conversation": st.none(),
    "metadata": st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=16), max_size=3),
    "text": st.fixed_dictionaries(
        {"format": text_formats}, optional={"verbosity": st.sampled_from(["low", "medium", "high"])}
    ),
    "reasoning": st.fixed_dictionaries(
        {},
        optional={
            "effort": st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh"]),
            "summary": st.sampled_from(["auto", "concise", "detailed"]),
        },
    ),
    "include": st.lists(
        st.sampled_from(["reasoning.encrypted_content", "message.output_text.logprobs"]),
        max_size=2,
    ),
    "truncation": st.sampled_from(["auto", "disabled"]),
    "user": short_text,
    "safety_identifier": short_text,
    "prompt_cache_key": short_text,
    "service_tier": st.sampled_from(["auto", "default"]),
    "client_metadata": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
}
assert set(plausible) == set(REQUEST_FIELDS) - {"model"}
# Values shaped like the field but wrong inside, or anything at all.
hostile: dict[str, st.SearchStrategy[Any]] = {name: json_values for name in plausible}
hostile.update(
    {
        "input": st.lists(input_items, max_size=3) | json_values,
        "tools": tools | json_values,
        "tool_choice": st.fixed_dictionaries(
            {"type": st.sampled_from(["function", "allowed_tools"])},
            optional={"name": json_values, "tools": json_values, "mode": json_values},
        )
        | json_values,
        "text": st.fixed_dictionaries(
            {}, optional={"format": json_values, "verbosity": json_values}
        )
        | json_values,
        "reasoning": st.fixed_dictionaries(
            {}, optional={"effort": json_values, "summary": json_values}
        )
        | json_values,
        "max_output_tokens": st.integers(min_value=-2, max_value=2**64) | json_values,
        "previous_response_id": st.sampled_from(["resp_nope", ""]) | json_values,
    }
)
local_models = st.sampled_from(["local/echo", "local/think"])
# A third each: plausible requests (mostly 200), plausible with hostile fields mixed in,
# and anything JSON at all.
plausible_bodies = st.fixed_dictionaries(
    {"model": local_models, "input": plausible["input"]},
    optional={name: value for name, value in plausible.items() if name != "input"},
)
mixed_bodies = st.fixed_dictionaries(
    {"model": st.just("local/echo") | json_values},
    optional={name: plausible[name] | hostile[name] for name in plausible},
)
any_body = plausible_bodies | mixed_bodies | json_values


# Bodies no JSON encoder writes: one field replaced by deep nesting or by a string with bytes
# that are not UTF-8.
HOLE = "@@hole@@"
deep_values = st.builds(
    lambda depth, opener, inner: opener * depth + inner + _closing(opener) * depth,
    st.integers(min_value=900, max_value=20_000),
    st.sampled_from([b"[", b'{"a":']),
    st.sampled_from([b"1", b'"x"', b"[]", b"{}"]),
)
not_utf8 = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xe9", b"\xed\xa0\x80", b"\xf8\x88"])
bad_strings = st.builds(
    lambda before, bad, after: b'"' + before.encode() + bad + after.encode() + b'"',
    st.text(alphabet="abc xyz", max_size=5),
    not_utf8,
    st.text(alphabet="abc xyz", max_size=5),
)


def _closing(opener: bytes) -> bytes:
    return b"]" if opener == b"[" else b"}"


@st.composite
def raw_hostile_bodies(draw: st.DrawFn) -> bytes:
    body = draw(plausible_bodies | mixed_bodies)
    field = draw(st.sampled_from(REQUEST_FIELDS))
    body[field] = HOLE
    raw = json.dumps(body, allow_nan=True).encode()
    value = draw(deep_values | bad_strings)
    if draw(st.booleans()) and value.startswith(b'"'):
        value = b"[" + value + b"]"  # the bad string one level down, in an array
    return raw.replace(json.dumps(HOLE).encode(), value)


def send(client: httpx.Client, body: Any) -> tuple[httpx.Response, bytes]:
    """POST `body` (NaN and Infinity written as JS does, which is not JSON; bytes as they are)
    and read it all."""
    raw = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    headers = {"content-type": "application/json"}
    with client.stream("POST", "/v1/responses", content=raw, headers=headers) as response:
        return response, response.read()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=any_body | raw_hostile_bodies())
def test_no_body_makes_a_server_error(client: httpx.Client, body: Any) -> None:
    response, raw = send(client, body)
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, raw[:500]
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        assert_envelope(response, response.status_code)
        return
    assert response.status_code == 200
    if response.headers["content-type"].startswith("text/event-stream"):
        assert raw.endswith(b"data: [DONE]\n\n")
        last_event = raw.rsplit(b"event: ", 1)[-1].split(b"\n", 1)[0]
        assert last_event in (b"response.completed", b"response.incomplete", b"response.failed")
    else:
        assert response.json()["object"] == "response"
