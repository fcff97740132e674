"""A finished generation leaves no reference cycle behind.

Reference counting frees an object the moment its last reference goes; an object in a cycle
waits for the cycle collector. A generation holds the request, the provider call and the
response builder with all its output: left in a cycle, every finished request's objects pile
up until a collection, get promoted to older generations, and make the collections that
do run longer (docs/benchmarks.md, "Issue 9: the cost of robustness").
"""

from __future__ import annotations

import asyncio
import gc

from tests.fakes import Harness, ScriptedProvider, build_harness
from xrouter.application.generation import Generation
from xrouter.domain import events as ev
from xrouter.domain.provider_events import Finish, TextDelta
from xrouter.domain.responses import ResponseRequest

HELLO = [TextDelta("Hello "), TextDelta("there "), TextDelta("world"), Finish()]


def _request(stream: bool) -> ResponseRequest:
    return ResponseRequest(model="fake/model", input="say hello", stream=stream)


async def _finished(harness: Harness) -> None:
    """Until every generation task has run its last line."""
    tasks = [generation.task for generation in harness.engine.running if generation.task]
    await asyncio.gather(*tasks)
    assert not harness.engine.running


def _generations_alive() -> int:
    return sum(isinstance(obj, Generation) for obj in gc.get_objects())


async def test_a_finished_generation_is_freed_without_the_cycle_collector() -> None:
    harness = build_harness(ScriptedProvider(HELLO))
    await harness.create.run(_request(stream=False), request_id="warm-up")
    await _finished(harness)
    gc.collect()
    before = _generations_alive()
    gc.disable()
    try:
        response = await harness.create.run(_request(stream=False), request_id="json")
        execution = await harness.create.start(_request(stream=True), request_id="stream")
        events = [event async for event in execution.events()]
        del execution
        await _finished(harness)
        left = _generations_alive() - before
    finally:
        gc.enable()
    assert response.status == "completed"
    assert isinstance(events[-1], ev.ResponseCompleted)
    assert left == 0, f"{left} finished generations are held by a reference cycle"
