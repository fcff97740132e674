"""The keyless local presets (`ollama`, `self_hosted`): their default base URLs, served without
an API key, several servers of one preset under different names, and calls through the
gateway that carry no credentials, against fake servers on loopback."""

from __future__ import annotations

from typing import Any

from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.test_openresponses_schema import create
from tests.upstreams import FakeUpstream
from xrouter.entrypoints.provider_config import ProviderConfig, load_gateway_config


def served(environ: dict[str, str], config_file: str | None = None) -> dict[str, ProviderConfig]:
    config = load_gateway_config(environ, config_file, byok=False)
    return {provider.name: provider for provider in config.providers}


def test_ollama_is_served_without_a_key_at_its_local_url() -> None:
    providers_ = served({"XR_OLLAMA_MODELS": "llama3.2,qwen3"})
    ollama = providers_["ollama"]
    assert (ollama.kind, ollama.base_url, ollama.api_key) == (
        "ollama", "http://127.0.0.1:11434/v1", None)  # fmt: skip
    assert ollama.models == ("llama3.2", "qwen3")


def test_an_unmentioned_preset_is_not_served_and_enabled_false_turns_it_off() -> None:
    assert served({}) == {}
    assert served({"XR_OLLAMA_ENABLED": "false"}) == {}


def test_several_ollama_servers_are_providers_with_their_own_names(tmp_path: Any) -> None:
    file = tmp_path / "xrouter.toml"
    file.write_text(
        '[providers.ollama]\n'
        '[providers.gpu-box]\nkind = "ollama"\nbase_url = "http://10.0.0.5:11434/v1"\n'
        '[providers.vllm]\nkind = "self_hosted"\n'
    )  # fmt: skip
    by_name = served({}, str(file))
    assert {name: (p.kind, p.base_url) for name, p in by_name.items()} == {
        "ollama": ("ollama", "http://127.0.0.1:11434/v1"),
        "gpu-box": ("ollama", "http://10.0.0.5:11434/v1"),
        "vllm": ("self_hosted", "http://127.0.0.1:8000/v1"),
    }
    assert all(p.api_key is None for p in by_name.values())


def test_a_plain_openai_compatible_server_still_needs_a_key_or_enabled() -> None:
    assert served({"XR_LAB_BASE_URL": "http://127.0.0.1:9/v1"}) == {}
    assert "lab" in served({"XR_LAB_BASE_URL": "http://127.0.0.1:9/v1", "XR_LAB_KIND": "ollama"})


def gateway(serve_with: Any, environ: dict[str, str]) -> LiveServer:
    container = make_container(discovery=False)
    container.environ.override(providers.Object(environ))
    return serve_with(container=container)


def test_two_ollama_servers_answer_through_the_gateway_without_credentials(
    serve_with: Any, upstream: FakeUpstream
) -> None:
    with FakeUpstream() as second:
        server = gateway(
            serve_with,
            {
                "XR_OLLAMA_BASE_URL": upstream.base_url,
                "XR_GPU_BASE_URL": second.base_url,
                "XR_GPU_KIND": "ollama",
            },
        )
        with server.client() as client:
            first = create(client, {"model": "ollama/llama3.2", "input": "from one"})
            other = client.post(
                "/v1/chat/completions",
                json={"model": "gpu/qwen3", "messages": [{"role": "user", "content": "two"}]},
            )
        (to_second,) = second.requests("/v1/chat/completions")
    assert first["output"][0]["content"][0]["text"] == "from one"
    assert other.status_code == 200, other.text
    assert other.json()["choices"][0]["message"]["content"] == "two"
    (to_first,) = upstream.requests("/v1/chat/completions")
    assert to_first.json["model"] == "llama3.2" and to_second.json["model"] == "qwen3"
    assert "authorization" not in to_first.headers and "authorization" not in to_second.headers
