"""Model routing: `provider/model` ids to the provider that serves them.

Routing never falls back: an id whose provider prefix is unknown, or that its provider does
not serve, is a `model_not_found`, so a typo never quietly reaches another provider.
"""

from __future__ import annotations

from collections.abc import Iterable

from xrouter.application.ports import Provider
from xrouter.domain.errors import ModelNotFound
from xrouter.domain.models import ModelInfo, ModelRoute, split_model_id


class ModelRegistry:
    def __init__(self, providers: Iterable[Provider]) -> None:
        self._providers = {provider.name: provider for provider in providers}
        # Route objects are immutable: cache them so the hot path builds nothing.
        self._routes: dict[str, tuple[ModelRoute, Provider]] = {}

    async def resolve(self, model: str) -> tuple[ModelRoute, Provider]:
        cached = self._routes.get(model)
        if cached is not None:
            return cached
        parts = split_model_id(model)
        if parts is None:
            raise ModelNotFound(model)
        provider = self._providers.get(parts[0])
        if provider is None or not provider.knows_model(parts[1]):
            raise ModelNotFound(model)
        resolved = (ModelRoute(model=model, provider=parts[0], upstream_model=parts[1]), provider)
        if len(self._routes) < 10_000:  # bounded: ids come from clients
            self._routes[model] = resolved
        return resolved

    async def list_models(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        for provider in self._providers.values():
            models.extend(await provider.list_models())
        return models
