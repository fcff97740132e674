"""`xrouter keys`: a key's whole life cycle from the shell, on a keys file and on Redis (plain
and cluster), seen by the store the gateway reads."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xrouter.adapters.keys.hashing import HmacKeyHasher
from xrouter.application.ports import KeyStore
from xrouter.domain.keys import GatewayKey
from xrouter.entrypoints.cli.main import main
from xrouter.entrypoints.config import ConfigError, Settings
from xrouter.entrypoints.keys_config import build_key_store
from xrouter.entrypoints.storage_config import build_shared_redis

from .redis_servers import RedisCluster, RedisServer

AUTH_SECRET = "cli-test-server-secret-0123"
SECRET_PATTERN = re.compile(r"xr-[A-Za-z0-9_-]{43}")
ENV_NAMES = ("XR_REDIS_URL", "XR_REDIS_CLUSTER", "XR_KEYS_FILE", "XR_AUTH_SECRET", "XR_AUTH")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(params=["toml", "redis", "cluster"])
def storage_env(
    request: pytest.FixtureRequest, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The environment of `xrouter keys` and of the gateway, set in this process."""
    env = {"XR_AUTH_SECRET": AUTH_SECRET}
    if request.param == "toml":
        env["XR_KEYS_FILE"] = str(tmp_path / "keys.toml")
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env["XR_REDIS_URL"] = server.url
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        env.update(XR_REDIS_URL=cluster.url, XR_REDIS_CLUSTER="true")
    for name, value in env.items():
        clean_env.setenv(name, value)
    yield env


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["keys", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def gateway_sees(hash_: str) -> GatewayKey | None:
    """What the gateway's own key store (built from the same environment) finds, now."""

    async def find() -> GatewayKey | None:
        settings = Settings.from_env()
        redis = build_shared_redis(settings)
        store: KeyStore = build_key_store(settings, redis)
        try:
            return await store.find(hash_)
        finally:
            await store.aclose()
            if redis is not None:
                await redis.aclose()

    return asyncio.run(find())


def test_the_whole_life_cycle(
    storage_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    hasher = HmacKeyHasher(AUTH_SECRET)
    code, out, err = run(
        capsys, "create", "ci bot", "--expires", "30d", "--models", "openai/*,fast", "--rpm", "60"
    )
    assert (code, err) == (0, "")
    secrets = SECRET_PATTERN.findall(out)
    assert len(secrets) == 1, out  # printed once
    secret = secrets[0]
    key_id = re.search(r"key_[0-9a-f]{16}", out)
    assert key_id is not None
    key_id_text = key_id.group(0)
    assert "shown this once" in out
    created = gateway_sees(hasher.hash(secret))
    assert created is not None and created.id == key_id_text
    assert created.models == ("openai/*", "fast") and created.limits.requests_per_minute == 60
    assert created.expires_at is not None and created.expires_at > time.time() + 29 * 86_400

    code, out, _ = run(capsys, "create", "second", "--json", "--concurrent", "2")
    second = json.loads(out)
    assert code == 0 and SECRET_PATTERN.fullmatch(second["secret"])
    assert second["key"]["limits"]["concurrent"] == 2 and "hash" not in second["key"]

    code, out, _ = run(capsys, "list")
    assert code == 0 and key_id_text in out and "ci bot" in out and "second" in out
    assert secret not in out and second["secret"] not in out and created.hash not in out
    code, out, _ = run(capsys, "list", "--json")
    listed = json.loads(out)["data"]
    assert [view["name"] for view in listed] == ["ci bot", "second"]
    assert "hash" not in out and secret not in out

    code, out, _ = run(capsys, "show", key_id_text)
    assert code == 0 and "active" in out and "60 rpm" in out and secret not in out

    code, out, _ = run(capsys, "rotate", key_id_text)
    rotated = SECRET_PATTERN.findall(out)
    assert code == 0 and len(rotated) == 1 and rotated[0] != secret
    assert gateway_sees(hasher.hash(secret)) is None  # the old secret stopped at once
    after_rotation = gateway_sees(hasher.hash(rotated[0]))
    assert after_rotation is not None and after_rotation.id == key_id_text

    code, out, _ = run(capsys, "revoke", key_id_text, "--json")
    assert code == 0 and json.loads(out)["status"] == "revoked"
    revoked = gateway_sees(hasher.hash(rotated[0]))
    assert revoked is not None and not revoked.usable_at(time.time())

    code, out, err = run(capsys, "rotate", key_id_text)
    assert code == 2 and out == "" and err.count("\n") == 1 and "revoked" in err
    code, out, err = run(capsys, "show", "key_ffffffffffffffff")
    assert code == 1 and out == "" and err.count("\n") == 1 and "key_ffffffffffffffff" in err


def test_refuses_without_the_auth_secret(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("XR_KEYS_FILE", str(tmp_path / "keys.toml"))
    code, out, err = run(capsys, "create", "x")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "XR_AUTH_SECRET" in err
    clean_env.setenv("XR_AUTH_SECRET", "too-short")
    code, _, err = run(capsys, "list")
    assert code == 2 and err.count("\n") == 1 and "XR_AUTH_SECRET" in err
    assert not (tmp_path / "keys.toml").exists()


def test_refuses_without_shared_storage(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("XR_AUTH_SECRET", AUTH_SECRET)
    code, out, err = run(capsys, "list")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "XR_KEYS_FILE" in err and "XR_REDIS_URL" in err


def test_refuses_bad_arguments(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("XR_AUTH_SECRET", AUTH_SECRET)
    clean_env.setenv("XR_KEYS_FILE", str(tmp_path / "keys.toml"))
    for argv in (
        ["create", "x", "--expires", "2001-01-01"],
        ["create", "x", "--expires", "soon"],
        ["create", "x", "--rpm", "0"],
        ["rotate"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(["keys", *argv])
        assert exited.value.code == 2, argv
    code, _, err = run(capsys, "create", "   ")
    assert code == 2 and "name" in err
    assert not (tmp_path / "keys.toml").exists()


def test_a_revocation_from_another_process_stops_the_key_within_half_a_second(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console script in its own process revokes; this process's server view (the
    gateway's, re-reading the file) sees it without a restart."""
    path = tmp_path / "keys.toml"
    clean_env.setenv("XR_AUTH_SECRET", AUTH_SECRET)
    clean_env.setenv("XR_KEYS_FILE", str(path))
    _, out, _ = run(capsys, "create", "ci", "--json")
    created = json.loads(out)
    hash_ = HmacKeyHasher(AUTH_SECRET).hash(created["secret"])
    store = build_key_store(Settings.from_env(), None)
    found = asyncio.run(store.find(hash_))
    assert found is not None and found.revoked_at is None

    revoke = subprocess.run(
        [sys.executable, "-m", "xrouter.entrypoints.cli", "keys", "revoke", found.id],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoke.returncode == 0, revoke.stderr
    assert created["secret"] not in revoke.stdout
    deadline = time.monotonic() + 2.0
    while True:
        found = asyncio.run(store.find(hash_))
        assert found is not None
        if found.revoked_at is not None:
            break
        assert time.monotonic() < deadline, "the revocation was not seen"
        time.sleep(0.05)


def test_the_settings_of_access_control() -> None:
    with pytest.raises(ConfigError, match="XR_AUTH_SECRET"):
        Settings.from_env({"XR_AUTH": "keys"})
    with pytest.raises(ConfigError, match="XR_ADMIN_KEY is 5 characters"):
        Settings.from_env({"XR_ADMIN_KEY": "short"})
    with pytest.raises(ConfigError, match="XR_KEYS_FILE and XR_REDIS_URL"):
        Settings.from_env({"XR_KEYS_FILE": "/k.toml", "XR_REDIS_URL": "redis://127.0.0.1:1"})
    with pytest.raises(ConfigError, match="XR_AUTH="):
        Settings.from_env({"XR_AUTH": "open"})
    # XR_AUTH and the older XR_BYOK agree, whichever is set.
    assert (Settings.from_env({"XR_BYOK": "true"}).auth, Settings().auth) == ("byok", "none")
    assert Settings.from_env({"XR_AUTH": "byok"}).byok
    both = Settings.from_env(
        {
            "XR_AUTH": "keys",
            "XR_BYOK": "true",
            "XR_AUTH_SECRET": AUTH_SECRET,
            "XR_ADMIN_KEY": "a" * 20,
        }
    )
    assert (both.auth, both.byok) == ("keys", True)
    assert AUTH_SECRET not in repr(both) and "a" * 20 not in repr(both)
