"""Fake adapters: plain classes implementing the application's ports, no I/O.

Users of XRouter can build the same use cases with these in their own tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from xrouter.adapters.storage.memory import InMemoryResponseStore
from xrouter.adapters.telemetry.lifecycle import RecordingLifecycleListener
from xrouter.adapters.telemetry.usage import InMemoryUsageLedger
from xrouter.application.create_response import CreateResponse
from xrouter.application.engine import EngineSettings, ExecutionEngine
from xrouter.application.get_response import GetResponse
from xrouter.application.ports import GenerationRequest, ModelCatalog
from xrouter.application.registry import ModelRegistry
from xrouter.domain.models import ModelInfo
from xrouter.domain.provider_events import ProviderEvent
from xrouter.domain.responses import InputItem
from xrouter.domain.secrets import SecretMasker
from xrouter.entrypoints.config import env_name


class FixedClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.time = start
        self._ns = itertools.count(1)

    def now(self) -> float:
        return self.time

    def monotonic_ns(self) -> int:
        return next(self._ns)


class SequentialIds:
    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._counter):04d}"


class WordCounter:
    """Counts whitespace-separated words: predictable numbers for assertions."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    async def count_input(self, instructions: str | None, items: Sequence[InputItem]) -> int:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        words = len((instructions or "").split())
        for item in items:
            if isinstance(item.content, str):
                words += len(item.content.split())
            if isinstance(item.output, str):
                words += len(item.output.split())
        return words

    async def count_text(self, text: str) -> int:
        return len(text.split())


@dataclass(frozen=True)
class Wait:
    """A script step: pause this long (math.inf: until cancelled), like a silent upstream."""

    seconds: float


@dataclass
class ScriptedProvider:
    """Yields `script` (events, exceptions to raise, `Wait` pauses), with an optional pause
    before every step."""

    script: list[ProviderEvent | Exception | Wait]
    name: str = "fake"
    delay_s: float = 0.0
    calls: list[GenerationRequest] = field(default_factory=list)
    closed: bool = False

    def knows_model(self, upstream_model: str) -> bool:
        return True

    def static_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=f"{self.name}/model", owned_by="tests")]

    async def list_models(self) -> list[ModelInfo]:
        return self.static_models()

    async def aclose(self) -> None:
        self.closed = True

    async def stream(self, call: GenerationRequest) -> AsyncIterator[list[ProviderEvent]]:
        self.calls.append(call)
        for step in self.script:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if isinstance(step, Wait):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Exception):
                raise step
            else:
                yield [step]


class SlowCatalog:
    """Wraps a catalog and takes `delay_s` to resolve: a slow ingest stage."""

    def __init__(self, inner: ModelCatalog, delay_s: float) -> None:
        self._inner = inner
        self._delay_s = delay_s

    async def resolve(self, model: str):  # type: ignore[no-untyped-def]
        await asyncio.sleep(self._delay_s)
        return await self._inner.resolve(model)

    async def list_models(self) -> list[ModelInfo]:
        return await self._inner.list_models()

    def __getattr__(self, name: str) -> object:
        # The app also drives discovery and shutdown on its catalog: pass those through.
        return getattr(self._inner, name)


@dataclass
class Harness:
    """The use cases wired to fakes, and the fakes to look at."""

    engine: ExecutionEngine
    create: CreateResponse
    get: GetResponse
    store: InMemoryResponseStore
    listener: RecordingLifecycleListener
    usage: InMemoryUsageLedger
    provider: ScriptedProvider


def build_harness(
    provider: ScriptedProvider,
    *,
    counter: WordCounter | None = None,
    catalog_delay_s: float = 0.0,
    masker: SecretMasker | None = None,
    **settings: float,
) -> Harness:
    store = InMemoryResponseStore()
    listener = RecordingLifecycleListener()
    usage = InMemoryUsageLedger()
    catalog: ModelCatalog = ModelRegistry([provider])
    if catalog_delay_s:
        catalog = SlowCatalog(catalog, catalog_delay_s)
    engine = ExecutionEngine(
        catalog=catalog,
        counter=counter or WordCounter(),
        store=store,
        clock=FixedClock(),
        ids=SequentialIds(),
        lifecycle_listener=listener,
        outcome_sink=usage,
        settings=EngineSettings(**{"setting_names": env_name, **settings}),  # type: ignore[arg-type]
        masker=masker,
    )
    get = GetResponse(store, engine.running)
    return Harness(engine, CreateResponse(engine), get, store, listener, usage, provider)
