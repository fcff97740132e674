"""The provider idle timeout: time between events counts, total time and paused time do not."""

from __future__ import annotations

import asyncio

import pytest

from xrouter.application.idle_timeout import IdleTimeout


async def test_expires_after_idle_period() -> None:
    with pytest.raises(TimeoutError):
        async with IdleTimeout(0.05):
            await asyncio.sleep(1)


async def test_touch_keeps_a_long_stream_alive() -> None:
    async with IdleTimeout(0.05) as idle:
        for _ in range(10):  # 0.2 s in all, never 0.05 s without an event
            await asyncio.sleep(0.02)
            idle.touch()
    assert not idle.expired


async def test_paused_time_does_not_count() -> None:
    async with IdleTimeout(0.05) as idle:
        idle.paused = True
        await asyncio.sleep(0.15)
        idle.paused = False
        idle.touch()
    assert not idle.expired


async def test_outer_cancellation_is_not_turned_into_a_timeout() -> None:
    async def body() -> None:
        async with IdleTimeout(10):
            await asyncio.sleep(10)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
