"""Model routing and the model catalog.

Routing: public ids are `provider/model` (the model part may itself contain `/`, as in
`openrouter/anthropic/claude-sonnet-4`), or a configured alias of one. Routing never falls
back: an unknown provider prefix or alias, or a model its provider refuses up front, is a
`model_not_found`, so a typo never quietly reaches another provider. A remote provider accepts
any model name: the upstream's own 404 becomes `model_not_found`.

Catalog: `GET /v1/models` lists, per provider, what discovery last found (each provider's own
`list_models`, refreshed in the background every `ttl_s`). Discovery never blocks startup for
longer than its bound, and a failing upstream keeps its last good list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from xrouter.application.ports import Provider
from xrouter.domain.errors import ModelNotFound
from xrouter.domain.models import ModelInfo, ModelRoute, split_model_id

log = logging.getLogger("xrouter.registry")

_MAX_CACHED_ROUTES = 10_000  # ids come from clients: the route cache must stay bounded


class ModelRegistry:
    def __init__(
        self, providers: Iterable[Provider], aliases: Mapping[str, str] | None = None
    ) -> None:
        self._providers = {provider.name: provider for provider in providers}
        self._aliases = dict(aliases or {})
        # Route objects are immutable: cache them so the hot path builds nothing.
        self._routes: dict[str, tuple[ModelRoute, Provider]] = {}
        self._discovered: dict[str, list[ModelInfo]] = {}
        self._refresher: asyncio.Task[None] | None = None

    @property
    def providers(self) -> list[Provider]:
        return list(self._providers.values())

    async def resolve(self, model: str) -> tuple[ModelRoute, Provider]:
        cached = self._routes.get(model)
        if cached is not None:
            return cached
        target = self._aliases.get(model, model)
        parts = split_model_id(target)
        if parts is None:
            raise ModelNotFound(model)
        provider = self._providers.get(parts[0])
        if provider is None or not provider.knows_model(parts[1]):
            raise ModelNotFound(model)
        # The response echoes what the client asked for (the alias), as OpenAI echoes its
        # own aliases; the route says where it really went.
        route = ModelRoute(provider=parts[0], upstream_model=parts[1])
        if len(self._routes) < _MAX_CACHED_ROUTES:
            self._routes[model] = (route, provider)
        return route, provider

    async def list_models(self) -> list[ModelInfo]:
        """Static models, then discovered ones not already listed, then aliases."""
        models: list[ModelInfo] = []
        seen: set[str] = set()
        for name, provider in self._providers.items():
            for info in [*provider.static_models(), *self._discovered.get(name, [])]:
                if info.id not in seen:
                    seen.add(info.id)
                    models.append(info)
        models.extend(
            ModelInfo(id=alias, owned_by=f"alias of {target}")
            for alias, target in self._aliases.items()
        )
        return models

    async def refresh(self) -> None:
        """Ask every provider for its models, at once; keep the last good list on failure."""
        names = list(self._providers)
        results = await asyncio.gather(
            *(self._providers[name].list_models() for name in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "model discovery for %s failed (%s); keeping %d known models",
                    name,
                    type(result).__name__,
                    len(self._discovered.get(name, [])),
                )
            else:
                self._discovered[name] = result

    async def start_discovery(self, ttl_s: float, startup_timeout_s: float) -> None:
        """Discover now, waiting at most `startup_timeout_s`; then refresh every `ttl_s` in
        the background until `aclose`."""
        first = asyncio.ensure_future(self.refresh())
        done, _ = await asyncio.wait({first}, timeout=startup_timeout_s)
        if not done:
            log.warning(
                "model discovery is still running after %.1f s; starting without it "
                "(it goes on in the background)",
                startup_timeout_s,
            )
        self._refresher = asyncio.create_task(self._refresh_forever(first, ttl_s))

    async def _refresh_forever(self, first: asyncio.Future[None], ttl_s: float) -> None:
        await first
        while True:
            await asyncio.sleep(ttl_s)
            await self.refresh()

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
