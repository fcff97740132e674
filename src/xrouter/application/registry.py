"""Model routing and the model catalog.

Routing: public ids are `provider/model` (the model part may itself contain `/`, as in
`openrouter/anthropic/claude-sonnet-4`), or a configured alias of one. Routing never falls
back silently: an unknown provider prefix or alias, or a model its provider refuses up front,
is a `model_not_found`, so a typo never quietly reaches another provider (fallbacks to other
models are explicit chains: `application/fallbacks.py`). A remote provider accepts
any model name: the upstream's own 404 becomes `model_not_found`.

Bare names: an id whose first segment names no provider or alias (`gpt-4o-mini`, or
`Qwen/Qwen2.5-7B` with a slash of its own) is looked up in the catalog by the part after each
provider's prefix. Exactly one provider lists it (configured models, a static catalog, or
discovery): routed there. Several: the default provider when it is one of them, else a
`model_not_found` naming the candidates, so the gateway never picks one silently. None: the
default provider when one is set (it takes the name as its own), else `model_not_found`. An id
whose first segment names a provider keeps the strict rule above: `local/nope` never becomes a
bare name. So clients that strip or reject prefixes (the Agents SDK strips `openai/` and reads
`local/echo` as a provider `local`) send the bare name and reach the same route.

Catalog: `GET /v1/models` lists, per provider, what discovery last found (each provider's own
`list_models`, refreshed in the background every `ttl_s`). Discovery never blocks startup for
longer than its bound, and a failing upstream keeps its last good list.

Shared discovery: with a shared `DiscoveryCache` (Redis), every worker of every instance reads
a provider's list from the cache while it is fresh; when it goes stale, the one worker that
takes the provider's refresh lock asks the upstream and writes the list back, and the others
poll the cache for it (keeping their list meanwhile). So N workers call an upstream's /models
once per `ttl_s`, not N times. A failed discovery writes nothing; a cache that is down makes
each worker discover by itself, as a single process does, until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping

from xrouter.application.ports import CachedModels, CacheUnavailable, DiscoveryCache, Provider
from xrouter.domain.errors import ModelNotFound
from xrouter.domain.models import ModelInfo, ModelRoute, split_model_id

log = logging.getLogger("xrouter.registry")

_MAX_CACHED_ROUTES = 10_000  # ids come from clients: the route cache must stay bounded
# The refresh lock lives as long as the discovery period, within these bounds: long enough for
# a slow upstream's /models, short enough that a refresher that died frees it soon.
_LOCK_MIN_S = 1.0
_LOCK_MAX_S = 60.0
# How often a worker looks for the list another worker is discovering.
_POLL_MIN_S = 0.05
_POLL_MAX_S = 0.5
_DEFAULT_TTL_S = 600.0  # for `refresh()` called before `start_discovery` (tests, tools)


class AmbiguousModel(ModelNotFound):
    """A bare model name that several providers serve: a 404 like any model not served (the
    client named no model the gateway can route), whose message lists the full ids to use."""

    def __init__(self, model: str, candidates: list[str], default_setting: str) -> None:
        super().__init__(model)
        self.message = (
            f"The model '{model}' is served by several providers: {', '.join(candidates)}. "
            f"Name one of them, or set {default_setting} to the provider to prefer."
        )
        self.args = (self.message,)


class LocalDiscovery:
    """The DiscoveryCache of one process: nothing is shared, every refresh discovers."""

    @property
    def shared(self) -> bool:
        return False

    async def read(self, provider: str) -> CachedModels | None:
        return None

    async def write(self, provider: str, models: list[ModelInfo], fresh_s: float) -> None:
        return None

    async def try_lock(self, provider: str, ttl_s: float) -> bool:
        return True

    async def release(self, provider: str) -> None:
        return None


class ModelRegistry:
    def __init__(
        self,
        providers: Iterable[Provider],
        aliases: Mapping[str, str] | None = None,
        *,
        cache: DiscoveryCache | None = None,
        setting_names: Callable[[str], str] = lambda name: name,
        default_provider: str | None = None,
    ) -> None:
        """`cache` shares discovery with the other workers and instances (None: this
        process discovers by itself); `setting_names` gives the operator's name of a
        setting for messages; `default_provider` serves the bare names that no provider, or
        several including it, list (None: those are `model_not_found`)."""
        self._providers = {provider.name: provider for provider in providers}
        self._aliases = dict(aliases or {})
        self._names = setting_names
        if default_provider is not None and default_provider not in self._providers:
            raise ValueError(
                f"{setting_names('default_provider')}={default_provider!r} names no configured "
                f"provider (configured: {', '.join(self._providers) or 'none'})"
            )
        self._default = default_provider
        # Route objects are immutable: cache them so the hot path builds nothing.
        self._routes: dict[str, tuple[ModelRoute, Provider]] = {}
        self._discovered: dict[str, list[ModelInfo]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._cache: DiscoveryCache = cache if cache is not None else LocalDiscovery()
        # Bare name -> the providers listing it; None until needed after the catalog changed.
        self._bare: dict[str, list[str]] | None = None
        self._ttl_s = _DEFAULT_TTL_S
        self._cache_down = False  # so an outage is logged once, not once per refresh

    @property
    def providers(self) -> list[Provider]:
        return list(self._providers.values())

    async def resolve(self, model: str) -> tuple[ModelRoute, Provider]:
        cached = self._routes.get(model)
        if cached is not None:
            return cached
        target = self._aliases.get(model, model)
        parts = split_model_id(target)
        if parts is not None and (parts[0] in self._providers or parts[0] in self._aliases):
            name, upstream_model = parts
        else:
            name, upstream_model = self._bare_route(model, target), target
        provider = self._providers.get(name)
        if provider is None or not provider.knows_model(upstream_model):
            raise ModelNotFound(model)
        # The response echoes what the client asked for (the alias), as OpenAI echoes its
        # own aliases; the route says where it really went.
        route = ModelRoute(provider=name, upstream_model=upstream_model)
        if len(self._routes) < _MAX_CACHED_ROUTES:
            self._routes[model] = (route, provider)
        return route, provider

    def _bare_route(self, model: str, bare: str) -> str:
        """The provider a bare name goes to (the module docstring says how); `model` is what
        the client asked for, for the error."""
        candidates = self._bare_index().get(bare, [])
        if len(candidates) == 1:
            return candidates[0]
        if self._default is not None and (not candidates or self._default in candidates):
            return self._default
        if candidates:
            raise AmbiguousModel(
                model, [f"{name}/{bare}" for name in candidates], self._names("default_provider")
            )
        raise ModelNotFound(model)

    def _bare_index(self) -> dict[str, list[str]]:
        if self._bare is None:
            index: dict[str, list[str]] = {}
            for name, provider in self._providers.items():
                prefix = f"{name}/"
                for info in [*provider.static_models(), *self._discovered.get(name, [])]:
                    if info.id.startswith(prefix):
                        owners = index.setdefault(info.id[len(prefix) :], [])
                        if name not in owners:
                            owners.append(name)
            self._bare = index
        return self._bare

    def _set_discovered(self, name: str, models: list[ModelInfo]) -> None:
        """Keep `name`'s newest list. A bare name's route may change with it: the bare index
        and the cached routes are rebuilt on demand."""
        self._discovered[name] = models
        self._bare = None
        self._routes.clear()

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

    async def refresh(self, ttl_s: float | None = None) -> None:
        """Refresh every provider's list once, at once; keep the last good list on failure.
        `ttl_s`: how long a list found now stays fresh for the other workers (default: the
        one `start_discovery` was given)."""
        await self._refresh_all(self._ttl_s if ttl_s is None else ttl_s)

    async def start_discovery(self, ttl_s: float, startup_timeout_s: float) -> None:
        """Discover now, waiting at most `startup_timeout_s`; then refresh each provider's
        list whenever it is `ttl_s` old, in the background until `aclose`."""
        self._ttl_s = ttl_s
        first = asyncio.ensure_future(self._refresh_all(ttl_s))
        done, _ = await asyncio.wait({first}, timeout=startup_timeout_s)
        if not done:
            log.warning(
                "model discovery is still running after %.1f s (%s); starting without it "
                "(it goes on in the background)",
                startup_timeout_s,
                self._names("discovery_startup_timeout_s"),
            )
        self._refresher = asyncio.create_task(self._refresh_forever(first, ttl_s))

    async def _refresh_forever(self, first: asyncio.Future[dict[str, float]], ttl_s: float) -> None:
        delays = await first
        # One loop per provider: each list is refreshed when it is due, so the workers that
        # share a cache wake together when the shared list goes stale.
        await asyncio.gather(
            *(self._keep_fresh(name, ttl_s, delay) for name, delay in delays.items())
        )

    async def _keep_fresh(self, name: str, ttl_s: float, delay_s: float) -> None:
        while True:
            await asyncio.sleep(delay_s)
            delay_s = await self._refresh_one(name, ttl_s)

    async def _refresh_all(self, ttl_s: float) -> dict[str, float]:
        names = list(self._providers)
        delays = await asyncio.gather(*(self._refresh_one(name, ttl_s) for name in names))
        return dict(zip(names, delays, strict=True))

    async def _refresh_one(self, name: str, ttl_s: float) -> float:
        """Refresh `name`'s list (from the shared cache, or by discovering); return the
        seconds until it is due again."""
        if not self._cache.shared:
            await self._discover(name)
            return ttl_s
        try:
            return await self._refresh_shared(name, ttl_s)
        except CacheUnavailable as exc:
            self._cache_failed(exc)
        except Exception:
            # A bug, not an outage: loud, but the catalog goes on being refreshed.
            log.exception("the shared model catalog failed for %s; discovering locally", name)
        await self._discover(name)
        return ttl_s

    async def _refresh_shared(self, name: str, ttl_s: float) -> float:
        lock_s = min(max(ttl_s, _LOCK_MIN_S), _LOCK_MAX_S)
        cached = await self._cache.read(name)
        self._cache_answered()
        if cached is not None and cached.fresh_for_s > 0:
            self._set_discovered(name, cached.models)
            return cached.fresh_for_s
        if await self._cache.try_lock(name, lock_s):
            return await self._refresh_as_holder(name, ttl_s, lock_s)
        # Another worker is refreshing: until it is done, the stale list is the newest one.
        if cached is not None:
            self._set_discovered(name, cached.models)
        return await self._await_refresher(name, ttl_s, lock_s)

    async def _refresh_as_holder(self, name: str, ttl_s: float, lock_s: float) -> float:
        try:
            # A refresher may have finished between our read and our lock: no second call.
            cached = await self._cache.read(name)
            if cached is not None and cached.fresh_for_s > 0:
                self._set_discovered(name, cached.models)
                return cached.fresh_for_s
            # Bounded by the lock's time, so no second refresher starts while this one runs.
            models = await self._discover(name, bound_s=lock_s)
            if models is not None:  # a failure keeps the cache as it is: nothing to poison
                try:
                    await self._cache.write(name, models, ttl_s)
                except CacheUnavailable as exc:
                    self._cache_failed(exc)  # found and used here; the others find it later
            return ttl_s
        finally:
            # Unreleased (Redis gone), the lock expires by itself after lock_s.
            with contextlib.suppress(CacheUnavailable):
                await self._cache.release(name)

    async def _await_refresher(self, name: str, ttl_s: float, lock_s: float) -> float:
        """Poll the cache for the list another worker is discovering, at most as long as it
        may hold the lock; then keep the list we have and try again when due."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lock_s
        poll_s = min(max(lock_s / 20, _POLL_MIN_S), _POLL_MAX_S)
        while loop.time() < deadline:
            await asyncio.sleep(poll_s)
            cached = await self._cache.read(name)
            if cached is not None and cached.fresh_for_s > 0:
                self._set_discovered(name, cached.models)
                return cached.fresh_for_s
        log.info(
            "no fresh model list for %s from the worker refreshing it within %.1f s; "
            "keeping %d known models",
            name,
            lock_s,
            len(self._discovered.get(name, [])),
        )
        return ttl_s

    async def _discover(self, name: str, bound_s: float | None = None) -> list[ModelInfo] | None:
        """Ask the provider itself; None (the last good list kept) when it fails."""
        deadline = asyncio.timeout(bound_s)
        try:
            async with deadline:
                models = await self._providers[name].list_models()
        except Exception as exc:
            if deadline.expired():
                reason = (
                    f"no answer within {bound_s:.1f} s, the refresh lock's time "
                    f"({self._names('discovery_ttl_s')} within {_LOCK_MIN_S:.0f}-"
                    f"{_LOCK_MAX_S:.0f} s)"
                )
            else:
                reason = type(exc).__name__
            log.warning(
                "model discovery for %s failed (%s); keeping %d known models",
                name,
                reason,
                len(self._discovered.get(name, [])),
            )
            return None
        self._set_discovered(name, models)
        return models

    def _cache_failed(self, exc: CacheUnavailable) -> None:
        if not self._cache_down:
            self._cache_down = True
            log.warning(
                "the shared model catalog is unavailable, each worker discovers models by "
                "itself until it answers again: %s",
                exc,
            )

    def _cache_answered(self) -> None:
        if self._cache_down:
            self._cache_down = False
            log.warning("the shared model catalog answers again; workers share discovery")

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
