"""`xrouter models`, run as a user runs it: the local catalog, discovery from a fake
OpenAI-compatible upstream on loopback, `--json`, `--provider`, and what happens when the
upstream is down or the configuration is wrong."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.upstreams import FakeUpstream, fake_upstream  # noqa: F401

XROUTER = str(Path(sys.executable).parent / "xrouter")
KEY = "sk-models-test-key-0123456789"
LIST_FIELDS = {"id", "object", "created", "owned_by"}  # an entry of GET /v1/models


def _env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any XRouter or OpenTelemetry setting, plus
    `extra`: each run sees only the configuration the test gives it."""
    clean = {
        name: value for name, value in os.environ.items() if not name.startswith(("XR_", "OTEL_"))
    }
    return {**clean, **extra}


def _run(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [XROUTER, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fake_env(upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    return _env(
        XR_FAKE_BASE_URL=upstream.base_url,
        XR_FAKE_API_KEY=KEY,
        XR_FAKE_MODELS="pinned-model",
        XR_ALIASES="fast=fake/gpt-test",
        **extra,
    )


def _by_id(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    listing = json.loads(result.stdout)
    assert listing["object"] == "list"
    return {entry["id"]: entry for entry in listing["data"]}


def test_the_local_catalog_is_a_table_of_built_in_models() -> None:
    result = _run("models", env=_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "provider", "source"]
    rows = [line.split() for line in lines[1:]]
    assert ["local/echo", "local", "built-in"] in rows
    assert ["local/slow", "local", "built-in"] in rows
    assert "Traceback" not in result.stderr


def test_json_lists_discovered_configured_and_alias_entries(upstream: FakeUpstream) -> None:
    result = _run("models", "--json", env=_fake_env(upstream))
    assert result.returncode == 0, result.stderr
    models = _by_id(result)
    # Discovery asked the upstream itself, with the configured key.
    [listing] = upstream.requests("/v1/models")
    assert listing.headers["authorization"] == f"Bearer {KEY}"
    discovered = models["fake/gpt-test"]
    assert discovered.keys() >= LIST_FIELDS
    assert discovered["object"] == "model" and discovered["owned_by"] == "fake"
    assert discovered["provider"] == "fake" and discovered["source"] == "discovered"
    assert models["fake/gpt-test-mini"]["source"] == "discovered"
    assert models["fake/pinned-model"]["source"] == "configured"
    assert models["fast"]["source"] == "alias" and models["fast"]["provider"] == "fake"
    assert models["local/echo"]["source"] == "built-in"
    assert KEY not in result.stdout + result.stderr


def test_provider_filter_keeps_that_providers_models_and_aliases(upstream: FakeUpstream) -> None:
    result = _run("models", "--json", "--provider", "fake", env=_fake_env(upstream))
    assert result.returncode == 0, result.stderr
    models = _by_id(result)
    assert set(models) == {"fake/gpt-test", "fake/gpt-test-mini", "fake/pinned-model", "fast"}
    assert {entry["provider"] for entry in models.values()} == {"fake"}

    table = _run("models", "--provider", "fake", env=_fake_env(upstream))
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()[1:]]
    assert ["fake/gpt-test", "fake", "discovered"] in rows
    assert not any(row[0].startswith("local/") for row in rows)


def test_a_provider_that_is_not_served_is_a_usage_error(upstream: FakeUpstream) -> None:
    result = _run("models", "--provider", "nope", env=_fake_env(upstream))
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "'nope'" in line and "served: local, fake" in line


def test_an_upstream_that_is_down_leaves_its_configured_models_and_a_note() -> None:
    env = _env(
        XR_DEAD_BASE_URL=f"http://127.0.0.1:{_closed_port()}/v1",
        XR_DEAD_API_KEY=KEY,
        XR_DEAD_MODELS="kept-model",
        XR_DEAD_MAX_RETRIES="0",
    )
    started = time.monotonic()
    result = _run("models", "--json", env=env)
    assert time.monotonic() - started < 20
    assert result.returncode == 0, result.stderr
    models = _by_id(result)
    assert models["dead/kept-model"]["source"] == "configured"
    assert "discovery for dead failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_discovery_off_lists_configured_models_without_asking(upstream: FakeUpstream) -> None:
    result = _run("models", "--json", env=_fake_env(upstream, XR_DISCOVERY="false"))
    assert result.returncode == 0, result.stderr
    models = _by_id(result)
    assert "fake/pinned-model" in models and "fake/gpt-test" not in models
    assert upstream.hits("/v1/models") == 0


def test_a_bad_provider_setting_is_a_configuration_error_naming_it(
    upstream: FakeUpstream,
) -> None:
    result = _run("models", env=_fake_env(upstream, XR_FAKE_PROTOCOL="grpc"))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "XR_FAKE_" in line and "'protocol'" in line
    assert "Traceback" not in result.stderr


def test_building_the_command_line_loads_neither_rich_nor_the_container() -> None:
    """`xrouter --version` stays instant: models and config check import their heavy parts
    when they run."""
    probe = (
        "import sys; from xrouter.entrypoints.cli.main import _parser; "
        "from xrouter.entrypoints.config import Settings; _parser(Settings()); "
        "heavy = [m for m in ('rich', 'dependency_injector', 'httpx', "
        "'xrouter.entrypoints.container') if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
