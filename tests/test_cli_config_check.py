"""`xrouter config check [--probe]`, run as a user runs it: a good configuration shown with its
keys masked, broken ones reported with the variable (or TOML field) to fix, and probes of an
upstream that answers, one that is down, and GigaChat through its OAuth."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.gigachat_fake import (  # noqa: F401
    AUTH_KEY,
    Certificates,
    GigaChatFake,
    certificates_fixture,
    gigachat_fixture,
)
from tests.upstreams import FakeUpstream, fake_upstream  # noqa: F401

XROUTER = str(Path(sys.executable).parent / "xrouter")
KEY = "sk-config-check-secret-0123456789"
DEPLOYMENT_KEY = "sk-deployment-secret-9876543210"
GOOD_TOML = """
[providers.fake]
base_url = "{base_url}"
api_key_env = "FAKE_KEY"
models = ["pinned-model"]
max_inflight = 7

[providers.spread]
api_key_env = "FAKE_KEY"
strategy = "weighted"
[[providers.spread.deployments]]
base_url = "http://127.0.0.1:9/a/v1"
weight = 3
[[providers.spread.deployments]]
base_url = "http://127.0.0.1:9/b/v1"
api_key_env = "DEPLOYMENT_KEY"

[aliases]
fast = "fake/gpt-test"
"""


def _env(**extra: str) -> dict[str, str]:
    """The runner's environment without XRouter or OpenTelemetry settings, plus `extra`."""
    clean = {
        name: value for name, value in os.environ.items() if not name.startswith(("XR_", "OTEL_"))
    }
    return {**clean, **extra}


def _check(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [XROUTER, "config", "check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("  ") if cell.strip()]


def _rows(stdout: str, *first: str) -> list[list[str]]:
    """The report's rows (cells split on runs of two spaces or more) that start with
    `first`, in order: a provider's row in the providers table comes before its probe's."""
    rows = [_cells(line) for line in stdout.splitlines()]
    return [row for row in rows if tuple(row[: len(first)]) == first]


def _row(stdout: str, *first: str) -> list[str]:
    rows = _rows(stdout, *first)
    assert rows, f"no row starting {first!r} in:\n{stdout}"
    return rows[0]


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("xrouter config check: error")]


def test_a_good_configuration_is_shown_with_every_key_masked(tmp_path: Path) -> None:
    config = tmp_path / "xrouter.toml"
    config.write_text(GOOD_TOML.format(base_url="http://127.0.0.1:9/v1"))
    env = _env(
        XR_CONFIG_FILE=str(config),
        FAKE_KEY=KEY,
        DEPLOYMENT_KEY=DEPLOYMENT_KEY,
        XR_ADMIN_KEY="admin-secret-0123456789",
        XR_AUTH="keys",
        XR_AUTH_SECRET="auth-secret-0123456789",
        XR_KEYS_FILE=str(tmp_path / "keys.toml"),
    )
    result = _check(env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for secret in (KEY, DEPLOYMENT_KEY, "admin-secret-0123456789", "auth-secret-0123456789"):
        assert secret not in out + result.stderr
    fake = _row(out, "fake")
    assert fake[:5] == ["fake", "openai_compatible", "http://127.0.0.1:9/v1", "set (***)", "chat"]
    assert fake[5].startswith("7 in flight") and fake[6] == "pinned-model"
    assert _row(out, "local")[1] == "built-in"
    assert _row(out, "spread", "1")[2:6] == [
        "http://127.0.0.1:9/a/v1",
        "the provider's",
        "3",
        "weighted",
    ]
    assert _row(out, "spread", "2")[2:4] == ["http://127.0.0.1:9/b/v1", "set (***)"]
    assert _row(out, "fast") == ["fast", "fake/gpt-test"]
    assert _row(out, "auth")[1].startswith("keys: gateway keys in ")
    assert "XR_AUTH_SECRET set (***)" in _row(out, "auth")[1]
    assert _row(out, "admin routes")[1] == "on (XR_ADMIN_KEY set, ***)"
    assert _row(out, "storage")[1].startswith("memory")
    assert _row(out, "telemetry")[1].startswith("metrics on")
    assert out.rstrip().endswith("Configuration valid.")
    assert result.stderr == ""


def test_a_key_variable_that_is_not_set_is_named(tmp_path: Path) -> None:
    config = tmp_path / "xrouter.toml"
    config.write_text(GOOD_TOML.format(base_url="http://127.0.0.1:9/v1"))
    result = _check(env=_env(XR_CONFIG_FILE=str(config), DEPLOYMENT_KEY=DEPLOYMENT_KEY))
    assert result.returncode == 2
    errors = _errors(result.stderr)
    fake = next(line for line in errors if "provider fake is not served" in line)
    assert "FAKE_KEY" in fake and "XR_FAKE_API_KEY" in fake
    # Both providers missing it are reported, not only the first.
    assert any("provider spread is not served" in line for line in errors)
    assert DEPLOYMENT_KEY not in result.stdout + result.stderr
    assert "configuration error" in result.stdout and "Traceback" not in result.stderr


def test_a_bad_toml_field_names_its_table_and_field(tmp_path: Path) -> None:
    config = tmp_path / "xrouter.toml"
    config.write_text(
        '[providers.fake]\nbase_url = "http://127.0.0.1:9/v1"\nmax_retries = "lots"\n'
    )
    result = _check(env=_env(XR_CONFIG_FILE=str(config), XR_FAKE_API_KEY=KEY))
    assert result.returncode == 2
    [error] = _errors(result.stderr)
    assert "[providers.fake]" in error and "'max_retries'" in error
    assert KEY not in result.stdout + result.stderr

    config.write_text('[providers.fake]\nbase_url = "http://127.0.0.1:9/v1"\nretries = 3\n')
    result = _check(env=_env(XR_CONFIG_FILE=str(config), XR_FAKE_API_KEY=KEY))
    assert result.returncode == 2
    [error] = _errors(result.stderr)
    assert "[providers.fake]" in error and "unknown provider setting 'retries'" in error


def test_every_bad_xr_value_is_named_not_only_the_first(tmp_path: Path) -> None:
    env = _env(
        XR_PORT="eighty",
        XR_STORAGE="disk",
        XR_GIGACHAT_SCOPE="GIGACHAT_API_NOPE",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        XR_PROT="8000",
    )
    result = _check(env=env)
    assert result.returncode == 2
    errors = "\n".join(_errors(result.stderr))
    for variable in (
        "XR_PORT='eighty'",
        "XR_STORAGE='disk'",
        "XR_GIGACHAT_SCOPE",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ):
        assert variable in errors, errors
    # A variable nothing reads is a warning: it does not make the configuration invalid.
    assert "warning: XR_PROT is not a setting XRouter reads" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_cross_setting_refusal_names_both_variables() -> None:
    result = _check(env=_env(XR_WORKERS="4", XR_DEFAULT_PROVIDER="nope"))
    assert result.returncode == 2
    errors = "\n".join(_errors(result.stderr))
    assert "XR_STORAGE=memory" in errors and "XR_REDIS_URL" in errors
    assert "XR_DEFAULT_PROVIDER='nope' names no provider" in errors


def test_probe_reports_latency_of_an_upstream_that_answers(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    config = tmp_path / "xrouter.toml"
    config.write_text(f'[providers.fake]\nbase_url = "{upstream.base_url}"\napi_key_env = "K"\n')
    result = _check("--probe", env=_env(XR_CONFIG_FILE=str(config), K=KEY))
    assert result.returncode == 0, result.stderr
    probe = _rows(result.stdout, "fake")[-1]
    assert probe[1] == upstream.base_url
    assert probe[2].startswith("ok, ") and probe[2].endswith(" ms, 2 models")
    [listing] = upstream.requests("/v1/models")
    assert listing.headers["authorization"] == f"Bearer {KEY}"
    assert result.stdout.rstrip().endswith("every upstream answered.")
    assert KEY not in result.stdout + result.stderr


def test_probe_of_a_down_upstream_fails_with_exit_1_in_bounded_time(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{_closed_port()}/v1"
    env = _env(XR_DOWN_BASE_URL=down, XR_DOWN_API_KEY=KEY)
    started = time.monotonic()
    result = _check("--probe", "--timeout", "5", env=env)
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stdout + result.stderr
    probe = _rows(result.stdout, "down")[-1]
    assert probe[1] == down and not probe[2].startswith("ok")
    assert "not reachable: down" in result.stdout
    assert "Traceback" not in result.stderr


def test_probe_of_an_upstream_that_never_answers_stops_at_the_timeout(
    upstream: FakeUpstream,
) -> None:
    from tests.upstreams import Reply

    upstream.script("/v1/models", Reply.stall())
    env = _env(XR_SLOW_BASE_URL=upstream.base_url, XR_SLOW_API_KEY=KEY)
    started = time.monotonic()
    result = _check("--probe", "--timeout", "1", env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 20
    assert "no answer within 1 s (--timeout)" in result.stdout


def _gigachat_env(gigachat: GigaChatFake, certificates: Certificates, key: str) -> dict[str, str]:
    return _env(
        XR_GIGACHAT_AUTH_KEY=key,
        XR_GIGACHAT_SCOPE="GIGACHAT_API_B2B",
        XR_GIGACHAT_OAUTH_URL=gigachat.oauth_url,
        XR_GIGACHAT_BASE_URL=gigachat.base_url,
        XR_GIGACHAT_CA_BUNDLE=certificates.ca_file,
    )


def test_probe_of_gigachat_goes_through_its_oauth(
    gigachat: GigaChatFake, certificates: Certificates
) -> None:
    result = _check("--probe", env=_gigachat_env(gigachat, certificates, AUTH_KEY))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(result.stdout, "gigachat")
    assert rows[0][3] == "auth key set (***)"
    assert rows[-1][2].startswith("ok, ") and rows[-1][2].endswith(" 2 models")  # chat only
    assert gigachat.oauth.hits("/api/v2/oauth") == 1 and len(gigachat.issued) == 1
    assert AUTH_KEY not in result.stdout + result.stderr

    refused = _check("--probe", env=_gigachat_env(gigachat, certificates, "d3Jvbmc6a2V5LXZhbHVl"))
    assert refused.returncode == 1
    assert "XR_GIGACHAT_AUTH_KEY" in _rows(refused.stdout, "gigachat")[-1][2]


def test_a_config_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = _check(env=_env(XR_CONFIG_FILE=str(missing)))
    assert result.returncode == 2
    [error] = _errors(result.stderr)
    assert f"XR_CONFIG_FILE='{missing}' cannot be read" in error


def test_probe_of_a_redis_that_is_down_fails_with_exit_1() -> None:
    url = f"redis://:redis-password-0123456789@127.0.0.1:{_closed_port()}/0"
    started = time.monotonic()
    result = _check("--probe", "--timeout", "3", env=_env(XR_REDIS_URL=url))
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stdout + result.stderr
    probe = _rows(result.stdout, "redis")[-1]
    assert probe[1].startswith("127.0.0.1:") and not probe[2].startswith("ok")
    assert "redis-password-0123456789" not in result.stdout + result.stderr
