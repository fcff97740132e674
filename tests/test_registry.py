"""Model routing (aliases, no fallback) and the discovered catalog."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes import ScriptedProvider
from xrouter.application.registry import ModelRegistry
from xrouter.domain.errors import ModelNotFound
from xrouter.domain.models import ModelInfo


class DiscoveringProvider(ScriptedProvider):
    """Discovery that can fail or hang, counted."""

    def __init__(
        self, name: str, found: list[str], *, fail: bool = False, delay_s: float = 0.0
    ) -> None:
        super().__init__([], name=name)
        self.found = found
        self.fail = fail
        self.discovery_delay_s = delay_s
        self.discoveries = 0

    async def list_models(self) -> list[ModelInfo]:
        self.discoveries += 1
        await asyncio.sleep(self.discovery_delay_s)
        if self.fail:
            raise ConnectionError("upstream down")
        return [ModelInfo(id=f"{self.name}/{m}", owned_by=self.name) for m in self.found]


async def test_aliases_and_nested_model_ids_route_without_fallback() -> None:
    openrouter = ScriptedProvider([], name="openrouter")
    registry = ModelRegistry([openrouter], aliases={"smart": "openrouter/anthropic/claude"})
    route, provider = await registry.resolve("smart")
    assert provider is openrouter
    assert (route.provider, route.upstream_model) == ("openrouter", "anthropic/claude")
    route, _ = await registry.resolve("openrouter/meta/llama-3")
    assert route.upstream_model == "meta/llama-3"
    for unknown in ("nope/x", "dumb", "openrouter", "/x"):
        with pytest.raises(ModelNotFound):
            await registry.resolve(unknown)


async def test_discovery_merges_static_models_and_keeps_the_last_good_list() -> None:
    up = DiscoveringProvider("up", ["a", "b"])
    registry = ModelRegistry([up], aliases={"fast": "up/a"})
    await registry.refresh()
    ids = [m.id for m in await registry.list_models()]
    assert ids == ["up/model", "up/a", "up/b", "fast"]
    up.fail = True
    await registry.refresh()
    assert [m.id for m in await registry.list_models()] == ids


async def test_a_hanging_upstream_does_not_block_startup_beyond_the_bound() -> None:
    slow = DiscoveringProvider("slow", ["m"], delay_s=5)
    down = DiscoveringProvider("down", ["m"], fail=True)
    registry = ModelRegistry([slow, down])
    loop = asyncio.get_running_loop()
    started = loop.time()
    await registry.start_discovery(ttl_s=0.05, startup_timeout_s=0.1)
    assert loop.time() - started < 1
    ids = [m.id for m in await registry.list_models()]
    assert ids == ["slow/model", "down/model"]  # static models still listed
    await asyncio.sleep(0.01)
    await registry.aclose()


async def test_background_refresh_runs_every_ttl() -> None:
    up = DiscoveringProvider("up", ["a"])
    registry = ModelRegistry([up])
    await registry.start_discovery(ttl_s=0.02, startup_timeout_s=1)
    await asyncio.sleep(0.15)
    await registry.aclose()
    assert up.discoveries >= 3
    count = up.discoveries
    await asyncio.sleep(0.05)
    assert up.discoveries == count  # stopped by aclose
