"""Bare model names (issue 14, item 7): an id without a provider prefix resolves when exactly
one provider lists it (discovery or configured models), or through XR_DEFAULT_PROVIDER; an
ambiguous one is a 404 `model_not_found` naming the candidates; an id with a slash of its own
(`Qwen/Qwen2.5-7B`) is a bare name when its first segment names no provider. Through the
official SDK in strict mode, on both APIs and on `GET /v1/models/{id}`, against fake upstreams
on loopback that record the model they were asked for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.test_openai_sdk import make_client
from tests.test_registry import DiscoveringProvider
from tests.upstreams import FakeUpstream
from xrouter.application.registry import ModelRegistry
from xrouter.domain.errors import ModelNotFound
from xrouter.domain.models import ModelRoute

SHARED = "gpt-4o-mini"
SLASHED = "Qwen/Qwen2.5-7B"


@pytest.fixture
def alpha() -> Iterator[FakeUpstream]:
    with FakeUpstream(models=(SHARED, SLASHED, "alpha-only")) as upstream:
        yield upstream


@pytest.fixture
def beta() -> Iterator[FakeUpstream]:
    with FakeUpstream(models=(SHARED, "beta-only")) as upstream:
        yield upstream


def _gateway(
    serve_with: Any, alpha: FakeUpstream, beta: FakeUpstream, **settings: Any
) -> LiveServer:
    """Two providers, `alpha` and `beta`, that both list SHARED (discovery on, as by
    default), plus `local`."""
    container = make_container(**settings)
    environ = {"XR_ALPHA_ENABLED": "true", "XR_BETA_ENABLED": "true"}
    for name, upstream in (("ALPHA", alpha), ("BETA", beta)):
        environ[f"XR_{name}_BASE_URL"] = upstream.base_url
        environ[f"XR_{name}_API_KEY"] = f"sk-{name.lower()}-0123456789"
    container.environ.override(providers.Object(environ))
    return serve_with(container=container)


def _asked(upstream: FakeUpstream) -> list[str]:
    """The model of every generation request the upstream received."""
    return [
        r.json["model"]
        for r in upstream.received
        if r.path.endswith(("/completions", "/responses"))
    ]


def test_a_name_one_provider_lists_goes_there_on_both_apis(
    serve_with: Any, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    server = _gateway(serve_with, alpha, beta)
    with make_client(server) as sdk:
        chat = sdk.chat.completions.create(
            model="beta-only", messages=[{"role": "user", "content": "hello beta"}]
        )
        response = sdk.responses.create(model="alpha-only", input="hello alpha")
        streamed = "".join(
            event.delta
            for event in sdk.responses.create(model="alpha-only", input="streamed", stream=True)
            if event.type == "response.output_text.delta"
        )
    # The answer echoes the name asked for; the upstream got its own model name.
    assert (chat.model, chat.choices[0].message.content) == ("beta-only", "hello beta")
    assert (response.model, response.output_text, streamed) == (
        "alpha-only",
        "hello alpha",
        "streamed",
    )
    assert _asked(beta) == ["beta-only"]
    assert _asked(alpha) == ["alpha-only", "alpha-only"]


def test_an_id_with_its_own_slash_is_a_bare_name(
    serve_with: Any, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    server = _gateway(serve_with, alpha, beta)
    with make_client(server) as sdk:
        chat = sdk.chat.completions.create(
            model=SLASHED, messages=[{"role": "user", "content": "hi qwen"}]
        )
        retrieved = sdk.models.retrieve(SLASHED)
        listed = {model.id: model for model in sdk.models.list()}
        # A first segment that names a provider keeps the strict rule: no bare lookup.
        with pytest.raises(openai.NotFoundError) as strict:
            sdk.responses.create(model="local/alpha-only", input="x")
    with server.client() as client:
        plain = client.get(f"/v1/models/{SLASHED}")
    assert chat.model == SLASHED
    assert _asked(alpha) == [SLASHED]
    # The entry the list shows for the model it routes to, under the id asked for.
    assert retrieved == listed[f"alpha/{SLASHED}"].model_copy(update={"id": SLASHED})
    assert plain.status_code == 200 and plain.json()["id"] == SLASHED
    assert strict.value.code == "model_not_found"


def test_an_ambiguous_name_is_404_listing_the_candidates(
    serve_with: Any, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    server = _gateway(serve_with, alpha, beta)
    refusals: list[openai.NotFoundError] = []
    with make_client(server) as sdk:
        for call in (
            lambda: sdk.chat.completions.create(
                model=SHARED, messages=[{"role": "user", "content": "x"}]
            ),
            lambda: sdk.responses.create(model=SHARED, input="x"),
            lambda: sdk.models.retrieve(SHARED),
        ):
            with pytest.raises(openai.NotFoundError) as caught:
                call()
            refusals.append(caught.value)
        # The full ids still route, each to its own provider.
        sdk.responses.create(model=f"beta/{SHARED}", input="x")
    for refusal in refusals:
        assert (refusal.status_code, refusal.code) == (404, "model_not_found")
        assert f"alpha/{SHARED}, beta/{SHARED}" in refusal.message
        assert "XR_DEFAULT_PROVIDER" in refusal.message
    assert _asked(alpha) == []
    assert _asked(beta) == [SHARED]


@pytest.mark.parametrize("model", ["nope", "nowhere/x", "local"])
def test_an_unknown_name_stays_404(
    serve_with: Any, alpha: FakeUpstream, beta: FakeUpstream, model: str
) -> None:
    server = _gateway(serve_with, alpha, beta)
    with make_client(server) as sdk, pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.create(model=model, input="x")
    assert caught.value.code == "model_not_found"
    assert f"'{model}'" in caught.value.message
    assert _asked(alpha) == _asked(beta) == []


def test_the_default_provider_takes_ambiguous_and_unlisted_names(
    serve_with: Any, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    server = _gateway(serve_with, alpha, beta, default_provider="beta")
    with make_client(server) as sdk:
        shared = sdk.responses.create(model=SHARED, input="x")
        unlisted = sdk.chat.completions.create(
            model="unlisted-model", messages=[{"role": "user", "content": "x"}]
        )
        only = sdk.responses.create(model="alpha-only", input="x")  # listed once: not default
        retrieved = sdk.models.retrieve(SHARED)
        listed = {model.id: model for model in sdk.models.list()}
    assert (shared.model, unlisted.model, only.model) == (SHARED, "unlisted-model", "alpha-only")
    assert _asked(beta) == [SHARED, "unlisted-model"]
    assert _asked(alpha) == ["alpha-only"]
    assert retrieved == listed[f"beta/{SHARED}"].model_copy(update={"id": SHARED})


def test_configured_models_make_bare_names_without_discovery(
    serve_with: Any, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    container = make_container(discovery=False)
    container.environ.override(
        providers.Object(
            {
                "XR_ALPHA_ENABLED": "true",
                "XR_ALPHA_BASE_URL": alpha.base_url,
                "XR_ALPHA_API_KEY": "sk-alpha-0123456789",
                "XR_ALPHA_MODELS": "configured-one",
            }
        )
    )
    server = serve_with(container=container)
    with make_client(server) as sdk:
        response = sdk.responses.create(model="configured-one", input="x")
        with pytest.raises(openai.NotFoundError):
            sdk.responses.create(model="alpha-only", input="x")  # not discovered, not listed
    assert response.model == "configured-one"
    assert _asked(alpha) == ["configured-one"]


def test_a_bare_local_name_is_the_listed_model_under_the_name_asked(server: LiveServer) -> None:
    """What an Agents SDK client needs: it strips `openai/` and reads `local/echo` as a
    provider `local`, so it sends `echo`."""
    with make_client(server) as sdk:
        listed = {model.id: model for model in sdk.models.list()}
        retrieved = sdk.models.retrieve("echo")
        response = sdk.responses.create(model="echo", input="Hello bare")
    assert retrieved.id == "echo"
    assert (retrieved.owned_by, retrieved.created) == (
        listed["local/echo"].owned_by,
        listed["local/echo"].created,
    )
    assert "echo" not in listed  # the list stays one entry per model
    assert (response.model, response.output_text) == ("echo", "Hello bare")


def test_a_default_provider_that_is_not_configured_stops_startup() -> None:
    container = make_container(default_provider="ghost")
    with pytest.raises(ValueError, match="XR_DEFAULT_PROVIDER='ghost' names no configured"):
        container.catalog()


async def test_a_bare_route_follows_discovery() -> None:
    """A route found for a bare name is not kept past the catalog it came from: when a second
    provider starts listing the name, it becomes ambiguous; when the first stops, it moves."""
    first = DiscoveringProvider("first", ["m"])
    second = DiscoveringProvider("second", [])
    registry = ModelRegistry([first, second])
    await registry.refresh()
    route, _ = await registry.resolve("m")
    assert route == ModelRoute(provider="first", upstream_model="m")
    second.found = ["m"]
    await registry.refresh()
    with pytest.raises(ModelNotFound, match="first/m, second/m"):
        await registry.resolve("m")
    first.found = []
    await registry.refresh()
    route, _ = await registry.resolve("m")
    assert route == ModelRoute(provider="second", upstream_model="m")
