"""Cross-site requests: POST bodies must be declared JSON (415 otherwise), and CORS is off
unless `XR_CORS_ORIGINS` names the origins a browser page may call from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.test_bad_input import assert_envelope

BODY = json.dumps({"model": "local/echo", "input": "hi"}).encode()
CHAT_BODY = json.dumps({"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]})
APP = "https://app.example.com"
PREFLIGHT = {
    "origin": APP,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type, x-stainless-lang",
}


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


# --- Content-Type ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        None,
    ],
    ids=["text-plain", "text-plain-charset", "form", "multipart", "jsonx", "none"],
)
@pytest.mark.parametrize("path", ["/v1/responses", "/v1/chat/completions"])
def test_post_without_a_json_content_type_is_415(
    client: httpx.Client, path: str, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    body = BODY if path == "/v1/responses" else CHAT_BODY.encode()
    response = client.post(path, content=body, headers=headers)
    error = assert_envelope(response, 415)
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["message"]
    if content_type is not None:
        assert content_type in error["message"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON ;charset=UTF-8"],
)
def test_json_with_parameters_is_accepted(client: httpx.Client, content_type: str) -> None:
    response = client.post("/v1/responses", content=BODY, headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"


def test_a_post_with_no_body_needs_no_content_type(client: httpx.Client) -> None:
    """`curl -X POST .../cancel` sends neither a body nor a Content-Type: it reaches the route
    (here: an unknown response, 404), while a body sent without one is still a 415."""
    bare = client.post("/v1/responses/resp_unknown/cancel")
    assert bare.status_code == 404, bare.text
    with_body = client.post("/v1/responses/resp_unknown/cancel", content=b"{}")
    assert assert_envelope(with_body, 415)["code"] == "unsupported_media_type"


def test_routing_errors_come_before_the_content_type_check(client: httpx.Client) -> None:
    assert client.post("/v1/nothing", content=b"x").status_code == 404
    assert client.post("/v1/models", content=b"x").status_code == 405


# --- CORS ------------------------------------------------------------------------------------


def test_cors_is_off_by_default(client: httpx.Client) -> None:
    preflight = client.options("/v1/responses", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    # Without the header a browser refuses the call; no other CORS header invites it either.
    assert not [h for h in preflight.headers if h.startswith("access-control-")]
    cross = client.get("/v1/models", headers={"origin": APP})
    assert cross.status_code == 200
    assert "access-control-allow-origin" not in cross.headers


@pytest.fixture
def cors_server(serve_with: Any) -> LiveServer:
    server: LiveServer = serve_with(cors_origins=(APP, "http://localhost:3000"))
    return server


def test_configured_origin_passes_the_preflight(cors_server: LiveServer) -> None:
    with cors_server.client() as http:
        preflight = http.options("/v1/responses", headers=PREFLIGHT)
    assert preflight.status_code in (200, 204), preflight.text
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "x-stainless-lang" in allowed


def test_other_origins_are_refused(cors_server: LiveServer) -> None:
    with cors_server.client() as http:
        preflight = http.options(
            "/v1/responses", headers={**PREFLIGHT, "origin": "https://evil.example"}
        )
        cross = http.post(
            "/v1/responses",
            content=BODY,
            headers={"origin": "https://evil.example", "content-type": "application/json"},
        )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in cross.headers


def test_configured_origin_can_read_answers_and_errors(cors_server: LiveServer) -> None:
    headers: dict[str, Any] = {"origin": APP, "content-type": "application/json"}
    with cors_server.client() as http:
        ok = http.post("/v1/responses", content=BODY, headers=headers)
        refused = http.post(
            "/v1/responses", content=BODY, headers={**headers, "content-type": "text/plain"}
        )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == APP
    assert "x-request-id" in ok.headers["access-control-expose-headers"].lower()
    # Still JSON only: CORS opens the door to a page, not to text/plain bodies.
    assert refused.status_code == 415
    assert refused.headers["access-control-allow-origin"] == APP


def test_bad_origin_setting_stops_the_start() -> None:
    from xrouter.entrypoints.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="XR_CORS_ORIGINS"):
        Settings.from_env({"XR_CORS_ORIGINS": "app.example.com"})
    parsed = Settings.from_env({"XR_CORS_ORIGINS": "https://a.example/, http://b.example:8080"})
    assert parsed.cors_origins == ("https://a.example", "http://b.example:8080")
