"""Gateway keys across two separate `xrouter serve` instances (issue 12, Tests): a key made,
revoked or expired by `xrouter keys` takes effect on both at once, and a key's limit is one
limit however its requests spread over the instances.

Two instances (not workers of one server), each its own process, share one Redis or one keys
file; the key's whole life runs through the CLI in a subprocess on the same environment, as an
operator would. On Redis each request reads the key from Redis, so the very next request after
`xrouter keys revoke` is refused. A keys file is re-read by each server when it has changed,
checked at most every 0.5 s (TomlKeyStore's CHECK_EVERY_S), so there a change is awaited, within
a bound: what the test asserts is "within half a second, plus a request's time".
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from functools import partial
from typing import Any

import httpx
import pytest

from tests.log_audit import register_secret
from tests.redis_servers import RedisServer
from tests.test_workers import XROUTER, serving
from xrouter.adapters.keys.hashing import HmacKeyHasher

AUTH_SECRET = "two-processes-server-secret-0123456789"
BODY = {"model": "local/echo", "input": "hi", "store": False}
FILE_RECHECK_S = 0.5
"""How often at most a server looks at its keys file (TomlKeyStore's CHECK_EVERY_S)."""
FILE_SLACK_S = 0.5
"""What the test allows on top of that for the requests themselves on a busy machine."""

Pair = tuple[dict[str, str], tuple[str, str]]
"""The environment two gateways share with `xrouter keys`, and their base URLs."""


@contextmanager
def two_gateways(env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Two `xrouter serve` processes on `env`, started side by side (each takes ~2 s to be
    ready); yields their base URLs; both stop after the block, whichever failed to start."""
    managers: list[AbstractContextManager[tuple[str, list[str]]]] = [
        serving(env),
        serving(env),
    ]
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
        bases: list[str] = []
        failure: BaseException | None = None
        for manager, future in zip(managers, futures, strict=True):
            try:
                bases.append(future.result()[0])
                stack.push(manager.__exit__)
            except BaseException as exc:  # the other one still has to be stopped
                failure = failure or exc
        if failure is not None:
            raise failure
        yield bases[0], bases[1]


def gateway_env(**storage: str) -> dict[str, str]:
    """Gateway keys on, INFO lines (the access log names the key) for the log audit."""
    return {"XR_AUTH": "keys", "XR_AUTH_SECRET": AUTH_SECRET, "XR_LOG_LEVEL": "INFO", **storage}


@pytest.fixture(scope="module")
def on_redis(_session_redis: RedisServer) -> Iterator[Pair]:
    """Two gateways on one Redis, for the whole module (starting a pair takes seconds; every
    test makes keys of its own, so they share the pair and the Redis without meeting)."""
    if _session_redis.cli("PING", check=False) != "PONG":
        _session_redis.restart()  # as the redis_server fixture does: a test broke it
    env = gateway_env(XR_STORAGE="redis", XR_REDIS_URL=_session_redis.url)
    with two_gateways(env) as bases:
        yield env, bases


@pytest.fixture(scope="module")
def on_keys_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two gateways on one keys file and no Redis (each keeps its responses in its memory)."""
    env = gateway_env(XR_KEYS_FILE=str(tmp_path_factory.mktemp("keys") / "keys.toml"))
    with two_gateways(env) as bases:
        yield env, bases


@pytest.fixture(params=["on_redis", "on_keys_file"])
def pair(request: pytest.FixtureRequest) -> Pair:
    """The environment `xrouter keys` shares with two gateways, and their base URLs."""
    chosen: Pair = request.getfixturevalue(request.param)
    return chosen


def keys_command(env: dict[str, str], *argv: str) -> dict[str, Any]:
    """`xrouter keys ARGV --json` in a subprocess on `env`; its JSON answer. A secret it
    prints is registered with the log audit, and so is its hash."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("XR_")}
    result = subprocess.run(
        [XROUTER, "keys", *argv, "--json"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    if "secret" in answer:
        secret = answer["secret"]
        register_secret(secret, "a gateway key made by tests/test_access_across_processes.py")
        register_secret(HmacKeyHasher(AUTH_SECRET).hash(secret), "the hash of that key")
    return answer


def respond(base: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/responses",
        json=BODY,
        headers={"authorization": f"Bearer {secret}"},
        timeout=10,
    )


def refusal(reply: httpx.Response) -> str:
    """The 401's message (asserting it is the 401 of a gateway key)."""
    assert reply.status_code == 401, reply.text
    error = reply.json()["error"]
    assert error["code"] == "invalid_api_key"
    message: str = error["message"]
    return message


def within(seconds: float, answer: Callable[[], httpx.Response], status: int) -> float:
    """Seconds until `answer()` gives `status` (asserted to come within `seconds`)."""
    started = time.monotonic()
    while True:
        reply = answer()
        waited = time.monotonic() - started
        if reply.status_code == status:
            return waited
        assert waited < seconds, f"still {reply.status_code} after {waited:.2f} s: {reply.text}"
        time.sleep(0.02)


def seen_by_both(env: dict[str, str], bases: tuple[str, str], secret: str, status: int) -> None:
    """Each gateway answers `status` to `secret`: at once on Redis; on a keys file within its
    re-read interval (each server's last look at the file may be up to 0.5 s old)."""
    if "XR_REDIS_URL" in env:
        for base in bases:
            reply = respond(base, secret)
            assert reply.status_code == status, (base, reply.text)
        return
    for base in bases:
        waited = within(FILE_RECHECK_S + FILE_SLACK_S, partial(respond, base, secret), status)
        assert waited <= FILE_RECHECK_S + FILE_SLACK_S


def test_a_revoked_key_is_refused_by_both_instances_at_once(pair: Pair) -> None:
    storage, bases = pair
    created = keys_command(storage, "create", "revoke-me")
    secret, key_id = created["secret"], created["key"]["id"]
    seen_by_both(storage, bases, secret, 200)
    for base in bases:  # and it keeps working, on each, until revoked
        assert respond(base, secret).status_code == 200

    assert keys_command(storage, "revoke", key_id)["status"] == "revoked"
    seen_by_both(storage, bases, secret, 401)
    for base in bases:
        assert "revoked" in refusal(respond(base, secret))


def test_an_expired_key_is_refused_by_both_instances_at_once(pair: Pair) -> None:
    storage, bases = pair
    created = keys_command(storage, "create", "short-lived", "--expires", "4s")
    secret = created["secret"]
    expires_at = created["key"]["expires_at"]  # whole seconds, rounded down
    seen_by_both(storage, bases, secret, 200)
    assert time.time() < expires_at, "the key expired before both could use it"

    # Past the moment (the rounded-down second plus one), bounded by the key's 4 s.
    time.sleep(max(0.0, expires_at + 1 - time.time()))
    for base in bases:  # nothing to re-read: each server compares the moment it holds
        assert "expired" in refusal(respond(base, secret))


def test_a_keys_limit_is_one_limit_across_both_instances(on_redis: Pair) -> None:
    """rpm=5 and 12 parallel requests spread over two instances on one Redis: exactly 5 are
    admitted; the other 7 are 429 with Retry-After and the x-ratelimit-* headers."""
    env, bases = on_redis
    secret = keys_command(env, "create", "five-a-minute", "--rpm", "5")["secret"]
    # The windows are whole minutes of Redis's clock (this machine's): twelve requests
    # straddling a minute's end could rightly get 5 in each window. Start clear of one.
    if time.time() % 60 > 55:
        time.sleep(60.2 - time.time() % 60)
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda n: respond(bases[n % 2], secret), range(12)))

    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [200] * 5 + [429] * 7, statuses
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in replies)
    assert remaining == [0] * 8 + [1, 2, 3, 4]  # 4..0 for the admitted, 0 for the refused
    for reply in replies:
        assert reply.headers["x-ratelimit-limit-requests"] == "5"
        assert reply.headers["x-ratelimit-reset-requests"].endswith("s")
        if reply.status_code == 429:
            error = reply.json()["error"]
            assert error["code"] == "rate_limit_exceeded", error
            assert "requests per minute" in error["message"]
            assert 0 < int(reply.headers["retry-after"]) <= 60
