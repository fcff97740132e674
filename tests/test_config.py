"""Configuration: environment parsing, clear errors, and docs that match the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from xrouter.entrypoints.config import ConfigError, Settings, documented_variables

DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_defaults_serve_the_local_provider_on_loopback() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.api_prefixes == ("/v1", "/api/v1")


def test_environment_overrides_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "XR_PORT": "9001",
            "XR_API_PREFIXES": "v2, /api/v2/",
            "XR_DOCS_ENABLED": "no",
            "XR_GENERATION_TIMEOUT_S": "2.5",
            "XR_LOG_LEVEL": "debug",
        }
    )
    assert settings.port == 9001
    assert settings.api_prefixes == ("/v2", "/api/v2")
    assert settings.docs_enabled is False
    assert settings.generation_timeout_s == 2.5
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("XR_PORT", "eighty"),
        ("XR_PORT", "70000"),
        ("XR_MAX_INFLIGHT", "0"),
        ("XR_DOCS_ENABLED", "maybe"),
        ("XR_LOG_LEVEL", "LOUD"),
        ("XR_API_PREFIXES", ","),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_docs_list_every_variable_with_its_default() -> None:
    text = DOCS.read_text()
    for name, default, meaning in documented_variables():
        assert f"| `{name}` | `{default}` | {meaning} |" in text, name
