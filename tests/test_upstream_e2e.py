"""Upstreams configured the way users configure them (environment variables), end to end:
`xrouter serve` in a subprocess, a fake OpenAI-compatible upstream on loopback."""

from __future__ import annotations

import time

import httpx

from tests.helpers import running_xrouter
from tests.upstreams import FakeUpstream


def test_env_configured_upstream_with_alias_discovery_and_both_apis(
    fake_upstream: FakeUpstream,
) -> None:
    env = {
        "XR_OPENAI_BASE_URL": fake_upstream.base_url,
        "XR_OPENAI_API_KEY": "sk-configured",
        "XR_ALIASES": "fast=openai/gpt-test",
    }
    with running_xrouter(env) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        models = {m["id"] for m in client.get("/v1/models").json()["data"]}
        assert {"openai/gpt-test", "openai/gpt-test-mini", "fast", "local/echo"} <= models
        answer = client.post(
            "/v1/responses", json={"model": "fast", "input": "through the upstream"}
        ).json()
        assert answer["model"] == "fast"
        assert answer["output"][0]["content"][0]["text"] == "through the upstream"
        chat = client.post(
            "/v1/chat/completions",
            json={
                "model": "openai/gpt-test",
                "stream": True,
                "messages": [{"role": "user", "content": "streamed chat"}],
            },
        )
        assert "streamed " in chat.text and chat.text.rstrip().endswith("data: [DONE]")
    sent = [r for r in fake_upstream.received if r.path.endswith("/chat/completions")]
    assert [r.json["model"] for r in sent] == ["gpt-test", "gpt-test"]
    assert {r.headers["authorization"] for r in sent} == {"Bearer sk-configured"}


def test_byok_forwards_the_client_token_and_requires_one(
    fake_upstream: FakeUpstream,
) -> None:
    env = {
        "XR_BYOK": "true",
        "XR_OPENAI_BASE_URL": fake_upstream.base_url,
        "XR_OPENAI_API_KEY": "sk-never-used",
    }
    body = {"model": "openai/gpt-test", "input": "mine"}
    with running_xrouter(env) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        missing = client.post("/v1/responses", json=body)
        ok = client.post("/v1/responses", json=body, headers={"authorization": "Bearer sk-mine"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert ok.status_code == 200
    tokens = {
        r.headers.get("authorization")
        for r in fake_upstream.received
        if r.path.endswith("/chat/completions")
    }
    assert tokens == {"Bearer sk-mine"}


def test_an_unreachable_upstream_does_not_block_startup() -> None:
    env = {
        "XR_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "XR_OPENAI_API_KEY": "sk-x",
        "XR_OPENAI_MAX_RETRIES": "0",
        "XR_DISCOVERY_STARTUP_TIMEOUT_S": "0.5",
    }
    started = time.monotonic()
    with running_xrouter(env) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        assert time.monotonic() - started < 10
        assert client.get("/ready").status_code == 200
        local = client.post("/v1/responses", json={"model": "local/echo", "input": "still here"})
        assert local.status_code == 200
        down = client.post("/v1/responses", json={"model": "openai/gpt-test", "input": "x"})
        assert down.status_code == 502
        assert "openai" in down.json()["error"]["message"]
