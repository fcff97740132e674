"""/openapi.json agrees with what the gateway serves: every route and method is documented (and
nothing else), the probes' bodies, every SSE event of real streams, the JSON answers, and the
`Allow` header of OPTIONS and 405 answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from tests.conftest import LiveServer, make_container
from tests.schema_check import check
from xrouter.entrypoints.http.app import create_app, create_litestar

Doc = dict[str, Any]
UNDOCUMENTED = {"/openapi.json"}  # the document itself, and the /docs page under /docs


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def doc(client: httpx.Client) -> Doc:
    document: Doc = client.get("/openapi.json").json()
    return document


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def assert_matches(doc: Doc, schema: dict[str, Any], value: Any) -> None:
    problems = check(doc, schema, value)
    assert not problems, (problems[:5], json.dumps(value)[:500])


def response_schema(doc: Doc, path: str, method: str, status: int, media: str) -> Any:
    responses = doc["paths"][path][method]["responses"]
    entry = responses.get(str(status)) or responses[f"{str(status)[0]}XX"]
    return entry["content"][media]["schema"]


# --- routes ----------------------------------------------------------------------------------


def test_every_route_is_documented_and_nothing_else(doc: Doc) -> None:
    app = create_litestar(make_container())
    served: set[tuple[str, str]] = set()
    for route in app.routes:
        if route.path_format in UNDOCUMENTED or route.path_format.startswith("/docs"):
            continue
        for method in getattr(route, "methods", ()):
            if method not in ("OPTIONS", "HEAD"):
                served.add((route.path_format, method.lower()))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented, (served - documented, documented - served)


@pytest.mark.parametrize("path", ["/v1/responses/resp_x", "/api/v1/responses/resp_x"])
def test_allow_lists_every_documented_method(client: httpx.Client, doc: Doc, path: str) -> None:
    template = path.rsplit("/", 1)[0] + "/{response_id}"
    expected = {m.upper() for m in doc["paths"][template]} | {"OPTIONS"}
    assert expected == {"GET", "DELETE", "OPTIONS"}
    options = client.options(path)
    not_allowed = client.patch(path, content=b"{}", headers={"content-type": "application/json"})
    assert not_allowed.status_code == 405
    for answer in (options, not_allowed):
        assert {m.strip() for m in answer.headers["allow"].split(",")} == expected, answer


# --- probes ----------------------------------------------------------------------------------


def test_probe_answers_match_the_document(client: httpx.Client, doc: Doc) -> None:
    health = client.get("/health")
    ready = client.get("/ready")
    assert_matches(
        doc, response_schema(doc, "/health", "get", 200, "application/json"), health.json()
    )
    assert_matches(
        doc, response_schema(doc, "/ready", "get", 200, "application/json"), ready.json()
    )
    # Not started (no lifespan startup outside `with`): /ready is 503, as documented.
    unready = TestClient(app=create_app(make_container())).get("/ready")
    assert unready.status_code == 503
    schema = response_schema(doc, "/ready", "get", 503, "application/json")
    assert_matches(doc, schema, unready.json())
    assert check(doc, schema, {"status": "ready"}), "the 503 schema must not accept 'ready'"


# --- bodies and streams ----------------------------------------------------------------------

REQUESTS = [
    {"model": "local/echo", "input": "hello world"},
    {"model": "local/think", "input": "think first"},
    {
        "model": "local/echo",
        "input": 'call f {"a": 1}',
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    },
    {"model": "local/echo", "input": "a b c d e f", "max_output_tokens": 2},
    {"model": "local/error-mid-stream", "input": "a b c d"},
]


def sse_data(text: str) -> list[Any]:
    return [
        json.loads(line[len("data: ") :])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


@pytest.mark.parametrize("body", REQUESTS, ids=lambda b: f"{b['model']}-{len(b)}")
def test_responses_answers_and_events_match_the_document(
    client: httpx.Client, doc: Doc, body: dict[str, Any]
) -> None:
    answer = client.post("/v1/responses", json=body)
    media = "application/json"
    assert_matches(
        doc, response_schema(doc, "/v1/responses", "post", answer.status_code, media), answer.json()
    )
    stream = client.post("/v1/responses", json={**body, "stream": True})
    assert stream.status_code == 200
    event_schema = response_schema(doc, "/v1/responses", "post", 200, "text/event-stream")
    events = sse_data(stream.text)
    assert events
    for event in events:
        assert_matches(doc, event_schema, event)
    # `event:` names are the JSON types.
    names = [
        line[len("event: ") :] for line in stream.text.splitlines() if line.startswith("event: ")
    ]
    assert names == [event["type"] for event in events]


@pytest.mark.parametrize("body", REQUESTS, ids=lambda b: f"{b['model']}-{len(b)}")
def test_chat_answers_and_chunks_match_the_document(
    client: httpx.Client, doc: Doc, body: dict[str, Any]
) -> None:
    chat: dict[str, Any] = {
        "model": body["model"],
        "messages": [{"role": "user", "content": body["input"]}],
    }
    if "tools" in body:
        chat["tools"] = [{"type": "function", "function": {"name": "f"}}]
    answer = client.post("/v1/chat/completions", json=chat)
    path = "/v1/chat/completions"
    schema = response_schema(doc, path, "post", answer.status_code, "application/json")
    assert_matches(doc, schema, answer.json())
    stream = client.post(
        path, json={**chat, "stream": True, "stream_options": {"include_usage": True}}
    )
    chunk_schema = response_schema(doc, path, "post", 200, "text/event-stream")
    for chunk in sse_data(stream.text):
        assert_matches(doc, chunk_schema, chunk)


def test_stored_response_routes_match_the_document(client: httpx.Client, doc: Doc) -> None:
    created = client.post("/v1/responses", json={"model": "local/echo", "input": "keep"}).json()
    path = "/v1/responses/{response_id}"
    media = "application/json"
    retrieved = client.get(f"/v1/responses/{created['id']}")
    items = client.get(f"/v1/responses/{created['id']}/input_items")
    models = client.get("/v1/models")
    deleted = client.delete(f"/v1/responses/{created['id']}")
    missing = client.get(f"/v1/responses/{created['id']}")
    assert_matches(doc, response_schema(doc, path, "get", 200, media), retrieved.json())
    assert_matches(
        doc, response_schema(doc, path + "/input_items", "get", 200, media), items.json()
    )
    assert_matches(doc, response_schema(doc, "/v1/models", "get", 200, media), models.json())
    assert_matches(doc, response_schema(doc, path, "delete", 200, media), deleted.json())
    assert missing.status_code == 404
    assert_matches(doc, response_schema(doc, path, "get", 404, media), missing.json())
