"""Upstream providers and aliases from the environment and the TOML file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from xrouter.entrypoints.config import ConfigError
from xrouter.entrypoints.provider_config import load_gateway_config, provider_fields

DOCS = Path(__file__).parent.parent / "docs" / "providers.md"


def names(config: object) -> list[str]:
    return [p.name for p in config.providers]  # type: ignore[attr-defined]


def test_nothing_configured_serves_no_upstream() -> None:
    config = load_gateway_config({}, None, byok=False)
    assert names(config) == [] and dict(config.aliases) == {}


def test_openai_base_url_and_key_from_the_environment() -> None:
    config = load_gateway_config(
        {
            "XR_OPENAI_BASE_URL": "http://127.0.0.1:9000/v1",
            "XR_OPENAI_API_KEY": "sk-test",
            "XR_OPENAI_READ_TIMEOUT_S": "5",
            "XR_OPENAI_MAX_INFLIGHT": "3",
        },
        None,
        byok=False,
    )
    (openai,) = config.providers
    assert (openai.name, openai.kind, openai.base_url) == (
        "openai",
        "openai_compatible",
        "http://127.0.0.1:9000/v1",
    )
    assert (openai.api_key, openai.read_timeout_s, openai.max_inflight) == ("sk-test", 5.0, 3)


def test_openrouter_key_alone_enables_it_with_its_default_url() -> None:
    config = load_gateway_config({"XR_OPENROUTER_API_KEY": "sk-or-v1-x"}, None, byok=False)
    (openrouter,) = config.providers
    assert openrouter.kind == "openrouter"
    assert openrouter.base_url == "https://openrouter.ai/api/v1"


def test_any_name_with_a_base_url_is_an_openai_compatible_upstream() -> None:
    config = load_gateway_config(
        {"XR_VLLM_BASE_URL": "http://127.0.0.1:8001/v1", "XR_VLLM_ENABLED": "true"},
        None,
        byok=False,
    )
    assert names(config) == ["vllm"]
    assert config.providers[0].api_key is None


def test_a_provider_without_credentials_is_skipped_with_a_clear_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "xrouter.config"):
        config = load_gateway_config(
            {"XR_VLLM_BASE_URL": "http://127.0.0.1:8001/v1"}, None, byok=False
        )
    assert names(config) == []
    assert "XR_VLLM_API_KEY" in caplog.text and "XR_VLLM_ENABLED=true" in caplog.text
    # BYOK needs no configured key.
    assert names(load_gateway_config({"XR_VLLM_BASE_URL": "http://x/v1"}, None, byok=True)) == [
        "vllm"
    ]


def test_toml_file_with_providers_and_aliases_env_wins(tmp_path: Path) -> None:
    path = tmp_path / "xrouter.toml"
    path.write_text(
        """
[aliases]
fast = "openai/gpt-4o-mini"

[providers.openai]
api_key_env = "MY_OPENAI_KEY"
protocol = "responses"
max_retries = 5

[providers.ollama]
base_url = "http://127.0.0.1:11434/v1"
enabled = true
models = ["llama3", "qwen"]
"""
    )
    config = load_gateway_config(
        {
            "MY_OPENAI_KEY": "sk-file",
            "XR_OPENAI_MAX_RETRIES": "1",
            "XR_ALIASES": "smart=ollama/qwen",
        },
        str(path),
        byok=False,
    )
    by_name = {p.name: p for p in config.providers}
    assert set(by_name) == {"openai", "ollama"}
    assert by_name["openai"].api_key == "sk-file"
    assert by_name["openai"].protocol == "responses"
    assert by_name["openai"].max_retries == 1  # the environment wins over the file
    assert by_name["ollama"].models == ("llama3", "qwen")
    assert dict(config.aliases) == {"fast": "openai/gpt-4o-mini", "smart": "ollama/qwen"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"XR_OPENAI_API_KEY": "k", "XR_OPENAI_PROTOCOL": "grpc"}, "protocol"),
        ({"XR_OPENAI_API_KEY": "k", "XR_OPENAI_MAX_INFLIGHT": "0"}, "max_inflight"),
        ({"XR_ALIASES": "fast"}, "XR_ALIASES"),
        ({"XR_ALIASES": "fast=gpt-4o"}, "provider/model"),
    ],
)
def test_bad_values_are_config_errors_naming_the_setting(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_gateway_config(environ, None, byok=False)


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[providers.x\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_gateway_config({}, str(path), byok=False)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_gateway_config({}, str(tmp_path / "missing.toml"), byok=False)
    path.write_text("[providers.x]\nspeed = 3\n")
    with pytest.raises(ConfigError, match="unknown provider setting 'speed'"):
        load_gateway_config({}, str(path), byok=False)


def test_docs_list_every_provider_setting() -> None:
    text = DOCS.read_text()
    for field, default, meaning in provider_fields():
        assert f"| `{field}` | `{default}` | {meaning} |" in text, field


def test_keys_never_show_in_a_repr() -> None:
    config = load_gateway_config({"XR_OPENAI_API_KEY": "sk-very-secret"}, None, byok=False)
    text = repr(config)
    assert "sk-very-secret" not in text and "api_key=***" in text
