"""Upstream providers and aliases from the environment and the TOML file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from tests.conftest import make_container
from tests.upstreams import FakeUpstream, Reply
from xrouter.entrypoints.config import ConfigError
from xrouter.entrypoints.provider_config import (
    load_gateway_config,
    provider_fields,
    provider_spec,
)

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


def test_the_spec_carries_every_setting_and_names_them_as_the_environment_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "xrouter.toml"
    path.write_text(
        "[providers.my-llm]\n"
        'base_url = "http://127.0.0.1:9000/v1"\n'
        'protocol = "responses"\n'
        'models = ["a", "b"]\n'
        "pool_timeout_s = 3\n"
        "max_event_bytes = 1000\n"
    )
    config = load_gateway_config(
        {"XR_MY_LLM_API_KEY": "sk-secret-spec", "XR_MY_LLM_MAX_INFLIGHT": "5"},
        str(path),
        byok=True,
    )
    spec = provider_spec(config.providers[0], byok=True)
    assert (spec.name, spec.api_key, spec.protocol, spec.byok) == (
        "my-llm",
        "sk-secret-spec",
        "responses",
        True,
    )
    assert spec.static_models == ("a", "b")
    transport = spec.transport
    assert transport.base_url == "http://127.0.0.1:9000/v1"
    assert (transport.pool_timeout_s, transport.max_event_bytes) == (3.0, 1000)
    assert transport.max_inflight == 5
    assert transport.setting_names("max_inflight") == "XR_MY_LLM_MAX_INFLIGHT"
    assert "sk-secret-spec" not in repr(spec)


def test_openrouter_configured_by_environment_end_to_end(
    serve_with: Any, fake_upstream: FakeUpstream
) -> None:
    """The composition root builds OpenRouter from XR_OPENROUTER_*: its attribution headers
    and key reach the upstream, its static models are listed, and a refused key names the
    variable to check."""
    container = make_container(discovery=False)
    container.environ.override(
        providers.Object(
            {
                "XR_OPENROUTER_BASE_URL": fake_upstream.base_url,
                "XR_OPENROUTER_API_KEY": "sk-or-configured",
                "XR_OPENROUTER_TITLE": "My App",
                "XR_OPENROUTER_REFERER": "https://app.example",
                "XR_OPENROUTER_MODELS": "listed/model",
                "XR_OPENROUTER_MAX_RETRIES": "0",
            }
        )
    )
    chat = "/v1/chat/completions"
    fake_upstream.script(chat, Reply.error(401, "Invalid key"))  # then the default echo
    server = serve_with(container=container)
    body = {"model": "openrouter/some/model", "input": "hi", "max_output_tokens": 20}
    with server.client() as client:
        models = {m["id"] for m in client.get("/v1/models").json()["data"]}
        refused = client.post("/v1/responses", json=body)
        ok = client.post("/v1/responses", json=body)

    assert "openrouter/listed/model" in models
    assert ok.status_code == 200, ok.text
    sent = fake_upstream.requests(chat)[-1]
    assert sent.headers["authorization"] == "Bearer sk-or-configured"
    assert sent.headers["x-openrouter-title"] == "My App"
    assert sent.headers["http-referer"] == "https://app.example"
    assert sent.json["max_tokens"] == 20  # OpenRouter's dialect, not max_completion_tokens
    assert refused.status_code == 502
    assert "XR_OPENROUTER_API_KEY" in refused.json()["error"]["message"]
