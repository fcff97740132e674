"""Gateway keys through the HTTP API (issue 12, items 2, 3, 5): 401 for a missing, unknown,
revoked or expired key, 403 for a model the key may not use, 429 with Retry-After and the
x-ratelimit-* headers over a limit, all before any upstream call, through both APIs and the
stored-response routes; a response is its key's (another key gets 404 everywhere); with BYOK
the upstream key rides in X-Upstream-Authorization."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.log_audit import register_secret
from tests.upstreams import FakeUpstream
from xrouter.adapters.keys.hashing import HmacKeyHasher
from xrouter.adapters.keys.memory import MemoryKeyStore
from xrouter.application.access import AccessControl
from xrouter.domain.errors import Unauthorized
from xrouter.domain.keys import GatewayKey, KeyLimits
from xrouter.entrypoints.cli.main import open_door_warning
from xrouter.entrypoints.config import Settings

SECRET = "test-server-secret-0123456789abcdef"
CHAT = "/v1/chat/completions"
MODEL = "fake/gpt-test"


@pytest.fixture(autouse=True)
def _access_lines_audited(caplog: pytest.LogCaptureFixture) -> None:
    """The in-process gateways' INFO lines (the access log, which names the key) are emitted
    during these tests, so the session's log audit searches them for the keys and hashes
    `Keys` registers; the level is restored after each test."""
    caplog.set_level(logging.INFO, logger="xrouter")


class Keys:
    """Keys made straight in the gateway's key store (the CLI and admin routes have tests of
    their own)."""

    def __init__(self, server: LiveServer) -> None:
        self._store = server.container.key_store()
        self._hasher = server.container.key_hasher()
        self._count = 0

    def add(self, name: str, **fields: Any) -> str:
        self._count += 1
        secret = f"xr-test{self._count:02d}{name}-" + "k" * 30
        key_hash = self._hasher.hash(secret)
        # The session's log audit proves neither ever reaches a log line.
        register_secret(secret, f"gateway key {name!r} of tests/test_access_control.py")
        register_secret(key_hash, f"the hash of gateway key {name!r}")
        asyncio.run(
            self._store.save(
                GatewayKey(
                    id=f"key_{self._count:016x}",
                    name=name,
                    hash=key_hash,
                    display=secret[:8],
                    created_at=time.time() - 10,
                    **fields,
                )
            )
        )
        return secret


def gateway(
    serve_with: Callable[..., LiveServer], upstream: FakeUpstream, **variables: str
) -> LiveServer:
    container = make_container(discovery=False, auth="keys", auth_secret=SECRET)
    container.environ.override(
        providers.Object(
            {
                "XR_FAKE_BASE_URL": upstream.base_url,
                "XR_FAKE_ENABLED": "true",
                "XR_FAKE_API_KEY": "sk-operator-key-0123456789",
                **variables,
            }
        )
    )
    return serve_with(container=container)


def post(server: LiveServer, key: str | None, body: dict[str, Any], path: str = "/v1/responses",
         headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
    auth = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(server.base_url + path, json=body, headers={**auth, **(headers or {})})


def get(server: LiveServer, key: str | None, path: str) -> httpx.Response:
    auth = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(server.base_url + path, headers=auth)


def error(reply: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = reply.json()["error"]
    return body


def test_a_missing_unknown_revoked_or_expired_key_is_401_before_any_upstream_call(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    server = gateway(serve_with, fake_upstream)
    keys = Keys(server)
    revoked = keys.add("revoked", revoked_at=time.time() - 1)
    expired = keys.add("expired", expires_at=time.time() - 1)
    body = {"model": MODEL, "input": "hi"}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    for key, words in [
        (None, "needs a gateway key"),
        ("sk-not-a-gateway-key", "Incorrect gateway key"),
        ("xr-" + "z" * 43, "Incorrect gateway key"),
        (revoked, "revoked"),
        (expired, "expired"),
    ]:
        for path, payload in (("/v1/responses", body), (CHAT, chat)):
            reply = post(server, key, payload, path)
            assert reply.status_code == 401, reply.text
            assert error(reply)["code"] == "invalid_api_key" and words in error(reply)["message"]
        for path in ("/v1/models", "/v1/responses/resp_x", "/v1/responses/resp_x/input_items"):
            assert get(server, key, path).status_code == 401
    assert fake_upstream.hits(CHAT) == 0


def test_a_model_the_key_may_not_use_is_403_and_not_listed(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    server = gateway(serve_with, fake_upstream)
    key = Keys(server).add("local-only", models=("local/*",))
    reply = post(server, key, {"model": MODEL, "input": "hi"})
    assert reply.status_code == 403
    assert error(reply)["code"] == "model_not_allowed" and MODEL in error(reply)["message"]
    assert error(reply)["param"] == "model"
    chat = post(
        server, key, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, CHAT
    )
    assert chat.status_code == 403, chat.text
    assert error(chat)["code"] == "model_not_allowed" and MODEL in error(chat)["message"]
    assert post(server, key, {"model": "local/echo", "input": "hi"}).status_code == 200
    listed = [m["id"] for m in get(server, key, "/v1/models").json()["data"]]
    assert listed and all(m.startswith("local/") for m in listed)
    assert fake_upstream.hits(CHAT) == 0


def test_over_a_limit_is_429_with_retry_after_and_the_rate_headers(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    server = gateway(serve_with, fake_upstream)
    key = Keys(server).add(
        "two-a-minute", limits=KeyLimits(requests_per_minute=2, tokens_per_minute=100_000)
    )
    body = {"model": MODEL, "input": "hi", "store": False}
    first, second = post(server, key, body), post(server, key, body)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-limit-tokens"] == "100000"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    third = post(server, key, body)
    assert third.status_code == 429
    assert error(third)["code"] == "rate_limit_exceeded"
    assert "requests per minute" in error(third)["message"]
    assert 0 < float(third.headers["retry-after"]) <= 60
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    over = post(server, key, chat, CHAT)  # the same key's limit, through the other API
    assert over.status_code == 429, over.text
    assert error(over)["code"] == "rate_limit_exceeded"
    assert 0 < float(over.headers["retry-after"]) <= 60
    assert over.headers["x-ratelimit-limit-requests"] == "2"
    assert over.headers["x-ratelimit-remaining-requests"] == "0"
    assert fake_upstream.hits(CHAT) == 2


def test_a_response_is_its_keys_alone(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    server = gateway(serve_with, fake_upstream)
    keys = Keys(server)
    alice, bob = keys.add("alice"), keys.add("bob")
    created = post(server, alice, {"model": "local/echo", "input": "mine"})
    assert created.status_code == 200
    response_id = created.json()["id"]
    for path in (f"/v1/responses/{response_id}", f"/v1/responses/{response_id}/input_items"):
        other = get(server, bob, path)
        unknown = get(server, bob, path.replace(response_id, "resp_" + "0" * 48))
        assert other.status_code == unknown.status_code == 404
        assert other.json()["error"]["message"].replace(response_id, "X") == unknown.json()[
            "error"
        ]["message"].replace("resp_" + "0" * 48, "X")
        assert get(server, alice, path).status_code == 200
    follow = post(
        server, bob, {"model": "local/echo", "input": "x", "previous_response_id": response_id}
    )
    assert follow.status_code == 400 and error(follow)["code"] == "previous_response_not_found"
    deleted = httpx.delete(
        f"{server.base_url}/v1/responses/{response_id}", headers={"authorization": f"Bearer {bob}"}
    )
    assert deleted.status_code == 404
    assert get(server, alice, f"/v1/responses/{response_id}").status_code == 200  # still there
    follow = post(
        server, alice, {"model": "local/echo", "input": "x", "previous_response_id": response_id}
    )
    assert follow.status_code == 200


def test_gateway_keys_with_byok_send_the_clients_own_upstream_key(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    container = make_container(discovery=False, auth="keys", auth_secret=SECRET, byok=True)
    container.environ.override(
        providers.Object({"XR_FAKE_BASE_URL": fake_upstream.base_url, "XR_FAKE_ENABLED": "true"})
    )
    server = serve_with(container=container)
    key = Keys(server).add("byok")
    reply = post(
        server,
        key,
        {"model": MODEL, "input": "hi"},
        headers={"x-upstream-authorization": "Bearer sk-client-own-upstream-key"},
    )
    assert reply.status_code == 200, reply.text
    sent = fake_upstream.requests(CHAT)[0].headers["authorization"]
    assert sent == "Bearer sk-client-own-upstream-key" and key not in sent


@pytest.mark.parametrize("auth", ["none"])
def test_without_keys_nothing_changes(serve_with: Callable[..., LiveServer], auth: str) -> None:
    server = serve_with(auth=auth)
    reply = post(server, None, {"model": "local/echo", "input": "hi"})
    assert reply.status_code == 200 and "x-ratelimit-limit-requests" not in reply.headers


async def test_a_wrong_key_takes_as_long_however_much_of_a_real_key_it_matches() -> None:
    """The key is found by its keyed hash, so a guess sharing 40 characters with a real key
    costs what a guess sharing none does: medians of interleaved timings agree."""
    hasher = HmacKeyHasher(SECRET)
    real = "xr-" + "Q" * 43
    store = MemoryKeyStore()
    await store.save(
        GatewayKey(id="key_1", name="real", hash=hasher.hash(real), display=real[:8], created_at=0)
    )
    access = AccessControl(store=store, hasher=hasher, clock=_Clock())
    close, far = real[:-3] + "abc", "xr-" + "z" * 43

    async def took(guess: str) -> int:
        started = time.perf_counter_ns()
        with pytest.raises(Unauthorized):
            await access.authenticate(guess)
        return time.perf_counter_ns() - started

    for _ in range(200):  # warm up
        await took(close)
        await took(far)
    near_times, far_times = [], []
    for n in range(4000):
        first, second = (close, far) if n % 2 else (far, close)
        a, b = await took(first), await took(second)
        near_times.append(a if first is close else b)
        far_times.append(b if first is close else a)
    near, farther = statistics.median(near_times), statistics.median(far_times)
    assert abs(near - farther) / min(near, farther) < 0.25, (near, farther)


class _Clock:
    def now(self) -> float:
        return time.time()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


def test_listening_beyond_loopback_without_keys_is_a_loud_warning() -> None:
    assert open_door_warning(Settings(), "127.0.0.1") is None
    warning = open_door_warning(Settings(), "0.0.0.0")
    assert warning is not None and "XR_AUTH=none" in warning and "0.0.0.0" in warning
    keyed = Settings(auth="keys", auth_secret=SECRET)
    assert open_door_warning(keyed, "0.0.0.0") is None
