"""Deployments from the TOML file (issue 14 item 5): `[[providers.<name>.deployments]]` with
`base_url`, `api_key_env` and `weight`, the provider's STRATEGY and COOLDOWN_S. Through the
gateway with the official SDK in strict mode against two fake upstreams on loopback, each
expecting its own key; and the configuration mistakes that stop the gateway with a message
naming the table and the field."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from tests.conftest import make_container
from tests.test_openai_sdk import make_client
from tests.upstreams import FakeUpstream
from xrouter.adapters.providers.deployments import Deployment
from xrouter.entrypoints.env_fields import ConfigError
from xrouter.entrypoints.provider_config import load_gateway_config, provider_spec

KEYS = {"EAST_KEY": "sk-east-0123456789", "WEST_KEY": "sk-west-0123456789"}


@pytest.fixture
def east() -> Iterator[FakeUpstream]:
    with FakeUpstream(models=("gpt-test",)) as upstream:
        yield upstream


@pytest.fixture
def west() -> Iterator[FakeUpstream]:
    with FakeUpstream(models=("gpt-test",)) as upstream:
        yield upstream


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "xrouter.toml"
    path.write_text(text)
    return str(path)


def _two_deployments(east: FakeUpstream, west: FakeUpstream, extra: str = "") -> str:
    """A provider `pool` with no base_url and no key of its own: both are on the deployments."""
    return (
        "[providers.pool]\n"
        f"{extra}"
        "[[providers.pool.deployments]]\n"
        f'base_url = "{east.base_url}"\n'
        'api_key_env = "EAST_KEY"\n'
        "[[providers.pool.deployments]]\n"
        f'base_url = "{west.base_url}"\n'
        'api_key_env = "WEST_KEY"\n'
        "weight = 3\n"
    )


def _generations(upstream: FakeUpstream) -> list[str]:
    """The authorization header of every generation request the upstream received."""
    return [
        r.headers["authorization"]
        for r in upstream.received
        if r.path.endswith(("/completions", "/responses"))
    ]


def test_the_gateway_spreads_calls_over_the_deployments_each_with_its_own_key(
    serve_with: Any, tmp_path: Path, east: FakeUpstream, west: FakeUpstream
) -> None:
    container = make_container(config_file=_write(tmp_path, _two_deployments(east, west)))
    container.environ.override(providers.Object(dict(KEYS)))
    server = serve_with(container=container)
    with make_client(server) as sdk:
        answers = [
            sdk.chat.completions.create(
                model="pool/gpt-test", messages=[{"role": "user", "content": f"hello {i}"}]
            )
            .choices[0]
            .message.content
            for i in range(4)
        ]
        streamed = "".join(
            event.delta
            for event in sdk.responses.create(model="pool/gpt-test", input="streamed", stream=True)
            if event.type == "response.output_text.delta"
        )
    assert answers == [f"hello {i}" for i in range(4)] and streamed == "streamed"
    # least_inflight (the default): sequential calls tie at 0 open and take turns.
    east_calls, west_calls = _generations(east), _generations(west)
    assert len(east_calls) + len(west_calls) == 5
    assert len(east_calls) >= 2 and len(west_calls) >= 2
    assert set(east_calls) == {"Bearer sk-east-0123456789"}
    assert set(west_calls) == {"Bearer sk-west-0123456789"}


def test_the_spec_carries_the_deployments_strategy_and_cooldown(
    tmp_path: Path, east: FakeUpstream, west: FakeUpstream
) -> None:
    path = _write(tmp_path, _two_deployments(east, west, 'strategy = "weighted"\n'))
    environ = {**KEYS, "XR_POOL_COOLDOWN_S": "5"}
    (pool,) = load_gateway_config(environ, path, byok=False).providers
    transport = provider_spec(pool, byok=False).transport
    assert transport.base_url == east.base_url  # the first deployment stands for the provider
    assert transport.deployments == (
        Deployment(east.base_url, "sk-east-0123456789", 1.0),
        Deployment(west.base_url, "sk-west-0123456789", 3.0),
    )
    assert (transport.strategy, transport.cooldown_s) == ("weighted", 5.0)
    assert "sk-east" not in repr(pool)


def test_deployments_without_every_key_serve_only_with_the_providers_own(
    tmp_path: Path, east: FakeUpstream, west: FakeUpstream
) -> None:
    path = _write(tmp_path, _two_deployments(east, west))
    # WEST_KEY unset: a call sent west would carry no key, so the provider is not served...
    only_east = {"EAST_KEY": KEYS["EAST_KEY"]}
    assert load_gateway_config(only_east, path, byok=False).providers == ()
    # ...unless the provider has a key of its own, which that deployment then uses.
    environ = {**only_east, "XR_POOL_API_KEY": "sk-pool-0123456789"}
    (pool,) = load_gateway_config(environ, path, byok=False).providers
    assert [d.api_key for d in pool.deployments] == ["sk-east-0123456789", None]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'base_url = "http://127.0.0.1:1/v1"\nweight = 0\n',
            r"\[\[providers.pool.deployments\]\] #1: 'weight' = 0 is not valid",
        ),
        (
            'base_url = "http://127.0.0.1:1/v1"\nweight = -2.5\n',
            r"\[\[providers.pool.deployments\]\] #1: 'weight' = -2.5 is not valid",
        ),
        (
            'base_url = "http://127.0.0.1:1/v1"\nweight = "heavy"\n',
            r"\[\[providers.pool.deployments\]\] #1: 'weight' = 'heavy' is not a number",
        ),
        ('api_key_env = "EAST_KEY"\n', r"\[\[providers.pool.deployments\]\] #1: 'base_url'"),
        (
            'base_url = "http://127.0.0.1:1/v1"\nurl = "x"\n',
            r"\[\[providers.pool.deployments\]\] #1: unknown deployment setting 'url'",
        ),
    ],
)
def test_a_bad_deployment_is_a_config_error_naming_table_and_field(
    tmp_path: Path, table: str, message: str
) -> None:
    path = _write(tmp_path, f"[providers.pool]\n[[providers.pool.deployments]]\n{table}")
    with pytest.raises(ConfigError, match=message):
        load_gateway_config({}, path, byok=False)


def test_an_unknown_strategy_or_a_negative_cooldown_is_a_config_error(
    tmp_path: Path, east: FakeUpstream, west: FakeUpstream
) -> None:
    path = _write(tmp_path, _two_deployments(east, west, 'strategy = "random"\n'))
    with pytest.raises(ConfigError, match=r"\[providers.pool\]: 'strategy' = 'random'"):
        load_gateway_config(KEYS, path, byok=False)
    path = _write(tmp_path, _two_deployments(east, west))
    with pytest.raises(ConfigError, match=r"XR_POOL_\*: 'cooldown_s' = '-1' is not valid"):
        load_gateway_config({**KEYS, "XR_POOL_COOLDOWN_S": "-1"}, path, byok=False)
    path = _write(tmp_path, '[providers.pool]\ndeployments = "http://127.0.0.1:1/v1"\n')
    with pytest.raises(ConfigError, match=r"\[\[providers.pool.deployments\]\]: deployments"):
        load_gateway_config({}, path, byok=False)


def test_the_docs_example_loads_as_it_says(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "docs" / "providers.md").read_text()
    section = text.split("\n## Deployments\n", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    environ = {"GPT_EAST_KEY": "sk-e-0123456789", "GPT_WEST_KEY": "sk-w-0123456789"}
    (gpt,) = load_gateway_config(environ, _write(tmp_path, example), byok=False).providers
    assert (gpt.name, gpt.strategy, gpt.cooldown_s) == ("gpt", "weighted", 30.0)
    assert [(d.api_key, d.weight) for d in gpt.deployments] == [
        ("sk-e-0123456789", 3.0),
        ("sk-w-0123456789", 1.0),
    ]


def test_a_deployment_without_its_key_is_named_in_the_not_served_warning(
    tmp_path: Path, east: FakeUpstream, west: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    text = _two_deployments(east, west) + (
        f'[[providers.pool.deployments]]\nbase_url = "{east.base_url}"\n'
    )
    path = _write(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="xrouter.config"):
        assert load_gateway_config({"EAST_KEY": KEYS["EAST_KEY"]}, path, byok=False).providers == ()
    (warning,) = [r.getMessage() for r in caplog.records if "pool" in r.getMessage()]
    assert warning.startswith("provider pool is not served: ")
    assert "[[providers.pool.deployments]] #2 has no key: set WEST_KEY (its api_key_env)" in warning
    assert "[[providers.pool.deployments]] #3 has no api_key_env" in warning
    assert "#1" not in warning  # EAST_KEY is set
    assert "XR_POOL_API_KEY" in warning and "sk-east" not in warning
    # With every deployment keyed, nothing to say.
    caplog.clear()
    path = _write(tmp_path, _two_deployments(east, west))
    with caplog.at_level(logging.WARNING, logger="xrouter.config"):
        assert len(load_gateway_config(KEYS, path, byok=False).providers) == 1
    assert not [r for r in caplog.records if "not served" in r.getMessage()]
