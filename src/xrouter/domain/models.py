"""Model identity: public ids are `provider/model`, resolved to a route before generation."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct


class ModelRoute(Struct, frozen=True):
    """Where one public model id goes: which provider, and the model name it knows. The id
    the client asked for is echoed from the request, not from here."""

    provider: str
    upstream_model: str


class ModelInfo(Struct, frozen=True):
    """One entry of `GET /v1/models` (the OpenAI list shape)."""

    id: str
    owned_by: str
    created: int = 0
    object: Literal["model"] = "model"
    context_length: int | None = None
    """The model's context window in tokens, where a catalog or the upstream's `/models`
    says (OpenRouter's `context_length`, vLLM's `max_model_len`); null otherwise."""


class ModelList(Struct):
    data: list[ModelInfo]
    object: Literal["list"] = "list"


def split_model_id(model: str) -> tuple[str, str] | None:
    """`"local/echo"` -> `("local", "echo")`; None when there is no provider prefix."""
    provider, sep, name = model.partition("/")
    if not sep or not provider or not name:
        return None
    return provider, name
