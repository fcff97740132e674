"""The tiktoken counter: exact under its limit, bounded and estimated over it, and never
holding the event loop (issue 9, item 1: a 200 MB text aborted the process inside tiktoken)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import pytest

from xrouter.adapters.tokenizers.tiktoken_counter import TiktokenCounter, input_text
from xrouter.domain.responses import InputItem
from xrouter.entrypoints.config import ConfigError, Settings

# Ends in a newline, so cl100k splits the repetition at the same place every time and the
# exact count of `UNIT * n` is `n * tokens(UNIT)` (checked below, not assumed).
UNIT = "The quick brown fox jumps over the lazy dog, then naps under an old oak tree.\n"
ESTIMATE_TOLERANCE = 0.01
"""How far the estimate of a uniform text may be from the exact count."""


@pytest.fixture(scope="module")
def counter() -> TiktokenCounter:
    return TiktokenCounter()


def _exact(counter: TiktokenCounter, text: str) -> int:
    return len(counter._encoding.encode_ordinary(text))


async def _max_tick_gap(work: Any) -> tuple[Any, float, float]:
    """Run `work` beside a task ticking every millisecond: (result, seconds taken, longest gap
    between ticks). A blocked event loop shows as a long gap."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    result = await work
    elapsed = time.perf_counter() - started
    stop.set()
    await ticker
    return result, elapsed, max(gaps, default=elapsed)


def test_the_unit_repeats_into_an_exactly_known_count(counter: TiktokenCounter) -> None:
    assert _exact(counter, UNIT * 1000) == 1000 * _exact(counter, UNIT)


async def test_a_200_mb_text_counts_in_bounded_time_without_blocking_the_loop(
    counter: TiktokenCounter,
) -> None:
    repeats = 200_000_000 // len(UNIT)
    text = UNIT * repeats
    exact = repeats * _exact(counter, UNIT)

    tokens, elapsed, longest_gap = await _max_tick_gap(counter.count_text(text))

    # Uncapped, tiktoken takes ~10 s and gigabytes here; capped, ~0.1 s in a thread.
    assert elapsed < 5.0
    assert longest_gap < 0.25
    assert abs(tokens - exact) <= exact * ESTIMATE_TOLERANCE


async def test_a_large_input_is_counted_off_the_loop_and_bounded(
    counter: TiktokenCounter,
) -> None:
    repeats = 50_000_000 // len(UNIT)
    items = [
        InputItem(type="message", role="user", content=UNIT * (repeats // 2)),
        InputItem(type="message", role="user", content=[{"type": "input_text", "text": UNIT}]),
        InputItem(type="message", role="user", content=UNIT * (repeats // 2)),
    ]
    tokens, elapsed, longest_gap = await _max_tick_gap(counter.count_input("Be brief.", items))

    assert elapsed < 5.0
    assert longest_gap < 0.25
    exact = _exact(counter, "Be brief.\n") + (repeats // 2 * 2 + 1) * _exact(counter, UNIT)
    assert abs(tokens - exact) <= exact * ESTIMATE_TOLERANCE


async def test_under_the_limit_the_count_is_exact(counter: TiktokenCounter) -> None:
    text = "Привет! 你好. Hello, world: 12345 " * 3000  # ~100k chars, counted in a thread
    assert await counter.count_text(text) == _exact(counter, text)
    assert await counter.count_text("short") == _exact(counter, "short")


async def test_over_the_limit_the_input_head_is_the_joined_text_s_head() -> None:
    """Counting pieces never builds the whole text, yet counts what joining would give."""
    counter = TiktokenCounter(max_chars=50)
    items = [
        InputItem(type="message", role="user", content="alpha beta gamma " * 2),
        InputItem(type="function_call", call_id="c1", name="lookup", arguments='{"q": "x"}'),
        InputItem(type="message", role="user", content="漢字 " * 40),
    ]
    joined = input_text("Answer in one line.", items)
    head = joined[:50]
    head_tokens = _exact(counter, head)
    expected = head_tokens + math.ceil((len(joined) - 50) / (50 / head_tokens))

    assert await counter.count_input("Answer in one line.", items) == expected
    assert counter.count_sync(joined) == expected
    assert expected != _exact(counter, joined)  # the estimate is what acted


def test_the_limit_is_a_setting_that_refuses_nonsense() -> None:
    assert Settings.from_env({}).tokenizer_max_chars == 1_000_000
    assert Settings.from_env({"XR_TOKENIZER_MAX_CHARS": "2000"}).tokenizer_max_chars == 2000
    with pytest.raises(ConfigError, match="XR_TOKENIZER_MAX_CHARS"):
        Settings.from_env({"XR_TOKENIZER_MAX_CHARS": "0"})
    with pytest.raises(ValueError, match="max_chars"):
        TiktokenCounter(max_chars=0)


def test_the_gateway_counts_usage_with_the_configured_limit(
    serve_with: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """XR_TOKENIZER_MAX_CHARS reaches the counter the gateway uses: English first, CJK after
    the limit, so the estimate (at the English ratio) is far below the exact count; the log
    line saying so names the setting as the operator sets it."""
    caplog.set_level(logging.INFO, logger="xrouter.adapters.tokenizers.tiktoken_counter")
    server = serve_with(tokenizer_max_chars=100)
    prompt = "word " * 20 + "漢" * 2000
    counter = TiktokenCounter()
    head_tokens = _exact(counter, prompt[:100])
    estimate = head_tokens + math.ceil((len(prompt) - 100) / (100 / head_tokens))

    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": "local/echo", "input": prompt})

    assert reply.status_code == 200, reply.text
    usage = reply.json()["usage"]
    assert usage["input_tokens"] == estimate
    assert usage["input_tokens"] < _exact(counter, prompt)
    estimated = [r.getMessage() for r in caplog.records if "estimated" in r.getMessage()]
    assert estimated and all("(limit XR_TOKENIZER_MAX_CHARS)" in line for line in estimated)
