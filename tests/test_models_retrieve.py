"""`GET /v1/models/{id}` (issue 13, item 6): the model object for an id with slashes (as the
SDK sends it, `%2F`-encoded, and as curl does, plain), aliases and routed-but-unlisted models
included; 404 `model_not_found` in the OpenAI envelope for an unknown model and for one the
caller's key may not use (no oracle)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.test_access_control import SECRET, Keys
from tests.test_openai_sdk import make_client
from tests.upstreams import FakeUpstream


@pytest.fixture
def sdk(server: LiveServer) -> Iterator[openai.OpenAI]:
    with make_client(server) as client:
        yield client


def test_sdk_retrieves_a_listed_model(sdk: openai.OpenAI) -> None:
    listed = {model.id: model for model in sdk.models.list()}
    model = sdk.models.retrieve("local/echo")
    assert model == listed["local/echo"]
    assert model.object == "model"


@pytest.mark.parametrize("path", ["local/echo", "local%2Fecho"])
@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
def test_every_prefix_and_both_spellings_of_the_slash(
    server: LiveServer, prefix: str, path: str
) -> None:
    with server.client() as client:
        reply = client.get(f"{prefix}/models/{path}")
    assert reply.status_code == 200, reply.text
    assert reply.json()["id"] == "local/echo"


@pytest.mark.parametrize("model", ["nowhere/x", "local", "local/echo/extra", "local/nope"])
def test_an_unknown_model_is_404_model_not_found(sdk: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve(model)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.type == "invalid_request_error"
    assert model in caught.value.message


def _fake_gateway(serve_with: Any, upstream: FakeUpstream, **settings: Any) -> LiveServer:
    container = make_container(discovery=False, **settings)
    container.environ.override(
        providers.Object(
            {
                "XR_FAKE_BASE_URL": upstream.base_url,
                "XR_FAKE_ENABLED": "true",
                "XR_FAKE_API_KEY": "sk-operator-key-0123456789",
                "XR_ALIASES": "fast=fake/gpt-4o-mini",
            }
        )
    )
    return serve_with(container=container)


def test_aliases_and_routed_models_are_retrieved(
    serve_with: Any, fake_upstream: FakeUpstream
) -> None:
    server = _fake_gateway(serve_with, fake_upstream)
    with make_client(server) as sdk:
        alias = sdk.models.retrieve("fast")
        # Not listed (discovery off), but served: the provider takes any model name.
        routed = sdk.models.retrieve("fake/some-model")
    assert alias.id == "fast"
    assert alias.owned_by == "alias of fake/gpt-4o-mini"
    assert (routed.id, routed.owned_by) == ("fake/some-model", "fake")
    assert fake_upstream.hits() == 0


def test_a_key_sees_only_its_models(serve_with: Any, fake_upstream: FakeUpstream) -> None:
    server = _fake_gateway(serve_with, fake_upstream, auth="keys", auth_secret=SECRET)
    keys = Keys(server)
    narrow = keys.add("narrow", models=("local/*", "fast"))
    with server.client() as client:
        anonymous = client.get("/v1/models/local/echo")
    with openai.OpenAI(
        base_url=server.base_url + "/v1",
        api_key=narrow,
        _strict_response_validation=True,
        max_retries=0,
    ) as sdk:
        allowed = sdk.models.retrieve("local/echo")
        alias = sdk.models.retrieve("fast")
        refused = []
        for model in ("local/ghost", "fake/gpt-4o-mini", "fake/some-model"):
            with pytest.raises(openai.NotFoundError) as caught:
                sdk.models.retrieve(model)
            refused.append(caught.value.code)
    assert anonymous.status_code == 401
    assert (allowed.id, alias.id) == ("local/echo", "fast")
    # Another key's model and a model that does not exist get the same answer.
    assert refused == ["model_not_found"] * 3
