"""GigaChat configuration from XR_GIGACHAT_* variables: defaults, validation errors naming the
variable, when the provider is served, the docs table, and the real composition root serving
GigaChat from the environment alone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from tests.conftest import make_container
from tests.gigachat_fake import (
    AUTH_KEY,
    Certificates,
    GigaChatFake,
    certificates_fixture,  # noqa: F401  (the fixture)
    gigachat_fixture,  # noqa: F401  (the fixture)
)
from xrouter.adapters.providers.gigachat.provider import GigaChatProvider
from xrouter.entrypoints.config import ConfigError
from xrouter.entrypoints.gigachat_config import (
    build_gigachat,
    gigachat_spec,
    gigachat_variables,
    load_gigachat_config,
)

DOCS = Path(__file__).parent.parent / "docs" / "gigachat.md"


def test_nothing_set_means_no_gigachat() -> None:
    assert load_gigachat_config({"XR_OPENAI_API_KEY": "sk-x"}) is None
    assert build_gigachat(None, byok=False) is None


def test_an_authorization_key_alone_uses_the_documented_defaults() -> None:
    config = load_gigachat_config({"XR_GIGACHAT_AUTH_KEY": AUTH_KEY})
    assert config is not None
    settings = gigachat_spec(config, byok=False)
    assert settings.auth_mode == "oauth"
    assert settings.scope == "GIGACHAT_API_PERS"
    assert settings.oauth_url == "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
    assert settings.transport.base_url == "https://gigachat.devices.sberbank.ru/api/v1"
    assert settings.tls.verify is True and settings.tls.ca_bundle is None
    assert settings.transport.max_inflight == 1  # GigaChat's own limit for the scope, PERS
    assert AUTH_KEY not in repr(config) and AUTH_KEY not in repr(settings)


def test_every_variable_parses(certificates: Certificates) -> None:
    config = load_gigachat_config(
        {
            "XR_GIGACHAT_USER": "u",
            "XR_GIGACHAT_PASSWORD": "p",
            "XR_GIGACHAT_SCOPE": "gigachat_api_corp",
            "XR_GIGACHAT_BASE_URL": "https://gigachat.example/api/v1/",
            "XR_GIGACHAT_OAUTH_URL": "https://oauth.example/api/v2/oauth",
            "XR_GIGACHAT_CA_BUNDLE": certificates.ca_file,
            "XR_GIGACHAT_CERT_FILE": certificates.client_cert_file,
            "XR_GIGACHAT_KEY_FILE": certificates.client_key_file,
            "XR_GIGACHAT_MAX_INFLIGHT": "4",
            "XR_GIGACHAT_MODELS": "GigaChat-2, GigaChat-2-Pro",
            "XR_GIGACHAT_READ_TIMEOUT_S": "30",
            "XR_GIGACHAT_MAX_RETRIES": "0",
            "XR_GIGACHAT_ENABLED": "true",
        }
    )
    assert config is not None
    settings = gigachat_spec(config, byok=False)
    transport = settings.transport
    assert settings.auth_mode == "password"
    assert settings.scope == "GIGACHAT_API_CORP"
    assert transport.base_url == "https://gigachat.example/api/v1"
    assert settings.tls.cert == (certificates.client_cert_file, certificates.client_key_file)
    assert (transport.max_inflight, transport.read_timeout_s, transport.max_retries) == (4, 30.0, 0)
    assert tuple(settings.static_models) == ("GigaChat-2", "GigaChat-2-Pro")


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"XR_GIGACHAT_SCOPE": "GIGACHAT_API_FREE"}, ["XR_GIGACHAT_SCOPE", "GIGACHAT_API_B2B"]),
        ({"XR_GIGACHAT_CA_BUNDLE": "/no/such/ca.pem"}, ["XR_GIGACHAT_CA_BUNDLE", "no such"]),
        ({"XR_GIGACHAT_VERIFY_SSL": "maybe"}, ["XR_GIGACHAT_VERIFY_SSL"]),
        ({"XR_GIGACHAT_MAX_INFLIGHT": "0"}, ["XR_GIGACHAT_MAX_INFLIGHT"]),
        ({"XR_GIGACHAT_BASE_URL": "gigachat.local"}, ["XR_GIGACHAT_BASE_URL"]),
        ({"XR_GIGACHAT_API_KEY": "s3cret-value"}, ["XR_GIGACHAT_API_KEY", "XR_GIGACHAT_AUTH_KEY"]),
        ({"XR_GIGACHAT_USER": "u"}, ["XR_GIGACHAT_USER", "XR_GIGACHAT_PASSWORD"]),
        ({"XR_GIGACHAT_CERT_FILE": __file__}, ["XR_GIGACHAT_CERT_FILE", "XR_GIGACHAT_KEY_FILE"]),
        ({"XR_GIGACHAT_AUTH_KEY": "k", "XR_GIGACHAT_ACCESS_TOKEN": "t"},
         ["XR_GIGACHAT_AUTH_KEY", "XR_GIGACHAT_ACCESS_TOKEN"]),
        ({"XR_GIGACHAT_VERIFY_SSL": "false", "XR_GIGACHAT_CA_BUNDLE": __file__},
         ["XR_GIGACHAT_VERIFY_SSL", "XR_GIGACHAT_CA_BUNDLE"]),
    ],
)  # fmt: skip
def test_bad_configuration_names_the_variable(environ: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_gigachat_config(environ)
    for name in names:
        assert name in str(caught.value)
    assert "s3cret-value" not in str(caught.value)


def test_an_unreadable_ca_bundle_stops_startup_naming_the_variable(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    config = load_gigachat_config(
        {"XR_GIGACHAT_AUTH_KEY": "k", "XR_GIGACHAT_CA_BUNDLE": str(bogus)}
    )
    with pytest.raises(ConfigError, match="XR_GIGACHAT_CA_BUNDLE"):
        build_gigachat(config, byok=False)


def test_when_gigachat_is_served(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    no_credentials = load_gigachat_config({"XR_GIGACHAT_SCOPE": "GIGACHAT_API_B2B"})
    assert build_gigachat(no_credentials, byok=False) is None
    assert "XR_GIGACHAT_AUTH_KEY" in caplog.text
    byok = build_gigachat(no_credentials, byok=True)
    assert isinstance(byok, GigaChatProvider) and byok.name == "gigachat"
    disabled = load_gigachat_config({"XR_GIGACHAT_AUTH_KEY": "k", "XR_GIGACHAT_ENABLED": "0"})
    assert build_gigachat(disabled, byok=False) is None
    caplog.clear()
    insecure = load_gigachat_config(
        {"XR_GIGACHAT_ACCESS_TOKEN": "tok-secret-1", "XR_GIGACHAT_VERIFY_SSL": "false"}
    )
    assert isinstance(build_gigachat(insecure, byok=False), GigaChatProvider)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("verification is DISABLED" in r.getMessage() for r in warnings)
    assert "tok-secret-1" not in caplog.text


def test_docs_list_every_variable_with_its_default() -> None:
    text = DOCS.read_text()
    for name, default, _ in gigachat_variables():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}`")), None)
        assert row is not None, f"{name} is missing from docs/gigachat.md"
        assert f"`{default}`" in row, f"{name}: the docs do not show the default {default}"


def test_the_composition_root_serves_gigachat_from_the_environment(
    serve_with: Any, gigachat: GigaChatFake, certificates: Certificates
) -> None:
    environ = {
        "XR_GIGACHAT_AUTH_KEY": gigachat.auth_key,
        "XR_GIGACHAT_SCOPE": gigachat.scope,
        "XR_GIGACHAT_OAUTH_URL": gigachat.oauth_url,
        "XR_GIGACHAT_BASE_URL": gigachat.base_url,
        "XR_GIGACHAT_CA_BUNDLE": certificates.ca_file,
        "XR_GIGACHAT_MAX_RETRIES": "0",
    }
    container = make_container()
    container.environ.override(providers.Object(environ))
    server = serve_with(container=container)
    with server.client() as client:
        listed = client.get("/v1/models").json()["data"]
        answer = client.post(
            "/v1/responses", json={"model": "gigachat/GigaChat-2", "input": "from env"}
        )
    assert {"gigachat/GigaChat-2", "gigachat/GigaChat-2-Max"} <= {m["id"] for m in listed}
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"][0]["content"][0]["text"] == "from env"
    assert gigachat.oauth.hits(gigachat.OAUTH) == 1
