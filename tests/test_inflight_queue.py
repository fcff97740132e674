"""A provider's in-flight limit as a bounded FIFO wait (LocalInflight, one process).

Unit level: a free slot is taken without suspending; waiters are served in arrival order and
a newcomer never overtakes them; the wait runs out with a 429 naming `max_inflight` and
`queue_timeout_s`; `queue_timeout_s = 0` refuses at once; a waiter cancelled while waiting, or
at the very moment it was handed a slot, leaves no slot behind. Transport level: a cancelled
waiting call frees everything. HTTP level (the real app, a provider configured from the
environment, a fake upstream that holds its answers): calls over the limit reach the upstream
one at a time in arrival order, a wait that runs out is a 429 with Retry-After naming the
settings, and 0 keeps the old fail-fast.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.transport_harness import CHAT, FAKE_NAMES, chat_body
from tests.upstreams import FakeUpstream, Reply, chat_completion
from xrouter.adapters.providers.inflight import LOCAL_LEASE, Lease, LocalInflight
from xrouter.adapters.providers.transport import HttpTransport, TransportSettings
from xrouter.domain.errors import Overloaded


def limiter(max_inflight: int = 1, queue_timeout_s: float = 5.0) -> LocalInflight:
    settings = TransportSettings(
        base_url="http://unused.invalid",
        max_inflight=max_inflight,
        queue_timeout_s=queue_timeout_s,
        overload_retry_after_s=2.0,
        setting_names=FAKE_NAMES,
    )
    return LocalInflight("fake", settings)


def take_without_waiting(limit: LocalInflight) -> Lease:
    """Run `acquire()` one step: it must finish without suspending (no future, no task)."""
    coroutine = limit.acquire()
    try:
        coroutine.send(None)
    except StopIteration as done:
        lease: Lease = done.value
        return lease
    coroutine.close()
    raise AssertionError("acquire() suspended although a slot was free")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- unit level ------------------------------------------------------------------------------


async def test_a_free_slot_is_taken_without_suspending() -> None:
    limit = limiter(max_inflight=2)
    first, second = take_without_waiting(limit), take_without_waiting(limit)
    assert limit.inflight == 2 and limit.waiting == 0
    limit.release(first)
    limit.release(second)
    assert limit.inflight == 0


async def test_waiters_are_served_in_arrival_order_and_newcomers_do_not_overtake() -> None:
    limit = limiter(max_inflight=1)
    held = take_without_waiting(limit)
    served: list[str] = []

    async def call(name: str) -> None:
        lease = await limit.acquire()
        served.append(name)
        await asyncio.sleep(0.01)
        limit.release(lease)

    tasks = [asyncio.create_task(call(name)) for name in ("a", "b", "c")]
    await settle()
    assert limit.waiting == 3 and served == []

    limit.release(held)
    # The slot went to "a"; a newcomer in the same instant must queue behind b and c.
    assert limit.inflight == 1
    late = asyncio.create_task(call("late"))
    await asyncio.gather(*tasks, late)
    assert served == ["a", "b", "c", "late"]
    assert limit.inflight == 0 and limit.waiting == 0


async def test_a_wait_that_runs_out_is_a_429_naming_both_settings() -> None:
    limit = limiter(max_inflight=1, queue_timeout_s=0.1)
    held = take_without_waiting(limit)
    started = time.monotonic()
    with pytest.raises(Overloaded) as caught:
        await limit.acquire()
    waited = time.monotonic() - started
    assert 0.09 <= waited < 1.0
    error = caught.value
    assert error.status == 429 and error.retry_after == 2.0
    assert "XR_FAKE_MAX_INFLIGHT" in error.message and "XR_FAKE_QUEUE_TIMEOUT_S" in error.message
    assert "fake" in error.message and "0.1 s" in error.message
    assert limit.waiting == 0 and limit.inflight == 1
    limit.release(held)
    assert limit.inflight == 0


async def test_queue_timeout_zero_refuses_at_once() -> None:
    limit = limiter(max_inflight=1, queue_timeout_s=0)
    held = take_without_waiting(limit)
    coroutine = limit.acquire()
    with pytest.raises(Overloaded) as caught:
        coroutine.send(None)  # refused in the first step: no wait at all
    assert "XR_FAKE_MAX_INFLIGHT" in caught.value.message
    assert "XR_FAKE_QUEUE_TIMEOUT_S is 0" in caught.value.message
    assert limit.waiting == 0
    limit.release(held)


async def test_a_waiter_cancelled_while_waiting_leaves_the_queue() -> None:
    limit = limiter(max_inflight=1)
    held = take_without_waiting(limit)
    leaving = asyncio.create_task(limit.acquire())
    staying = asyncio.create_task(limit.acquire())
    await settle()
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert limit.waiting == 1
    limit.release(held)
    lease = await staying  # the slot skipped the one that left
    limit.release(lease)
    assert limit.inflight == 0 and limit.waiting == 0


async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    limit = limiter(max_inflight=1)
    held = take_without_waiting(limit)
    unlucky = asyncio.create_task(limit.acquire())
    next_in_line = asyncio.create_task(limit.acquire())
    await settle()
    limit.release(held)  # hands the slot to `unlucky`...
    unlucky.cancel()  # ...which is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    lease = await asyncio.wait_for(next_in_line, 1.0)
    assert limit.inflight == 1
    limit.release(lease)

    # The same with nobody behind: the slot comes back to the pool.
    held = take_without_waiting(limit)
    alone = asyncio.create_task(limit.acquire())
    await settle()
    limit.release(held)
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    assert limit.inflight == 0 and limit.waiting == 0
    take_without_waiting(limit)  # free again, at once


async def test_a_slot_freed_behind_a_cancelled_waiter_is_not_lost() -> None:
    """Cancelled but not yet resumed, a waiter is still in the queue when a newcomer arrives:
    the newcomer must not wait behind it for a slot that is free."""
    limit = limiter(max_inflight=1)
    held = take_without_waiting(limit)
    gone = asyncio.create_task(limit.acquire())
    await settle()
    gone.cancel()
    limit.release(held)  # nobody live is waiting: the slot is free
    newcomer = await asyncio.wait_for(limit.acquire(), 1.0)
    assert newcomer is LOCAL_LEASE
    with pytest.raises(asyncio.CancelledError):
        await gone
    limit.release(newcomer)
    assert limit.inflight == 0 and limit.waiting == 0


# -- transport level -------------------------------------------------------------------------


async def test_a_cancelled_waiting_call_frees_its_place(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(CHAT, Reply.json(chat_completion("slow"), delay_s=0.3))
    settings = TransportSettings(
        base_url=fake_upstream.base_url,
        max_inflight=1,
        trust_env=False,
        setting_names=FAKE_NAMES,
    )
    transport = HttpTransport("fake", settings)
    try:
        holder = asyncio.create_task(transport.post_json("/chat/completions", chat_body(), {}))
        await asyncio.to_thread(fake_upstream.wait_until, lambda up: up.hits(CHAT) == 1)
        waiting_call = asyncio.create_task(
            transport.post_json("/chat/completions", chat_body("never sent"), {})
        )
        stream = transport.stream_events("/chat/completions", chat_body(stream=True), {})
        waiting_stream = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.05)
        waiting_call.cancel()
        waiting_stream.cancel()
        for task in (waiting_call, waiting_stream):
            with pytest.raises(asyncio.CancelledError):
                await task
        await holder
        assert transport.inflight == 0
        reply = await transport.post_json("/chat/completions", chat_body("after"), {})
        assert reply.json()["choices"][0]["message"]["content"] == "after"
        assert fake_upstream.hits(CHAT) == 2  # the cancelled ones never reached it
    finally:
        await transport.aclose()


# -- HTTP level ------------------------------------------------------------------------------


def gateway(
    serve_with: Callable[..., LiveServer], upstream: FakeUpstream, **variables: str
) -> LiveServer:
    container = make_container(discovery=False)
    container.environ.override(
        providers.Object(
            {
                "XR_FAKE_BASE_URL": upstream.base_url,
                "XR_FAKE_ENABLED": "true",
                "XR_FAKE_MAX_RETRIES": "0",
                "XR_FAKE_MAX_INFLIGHT": "1",
                **variables,
            }
        )
    )
    return serve_with(container=container)


def post_in_thread(server: LiveServer, text: str, results: dict[str, httpx.Response]) -> Any:
    def run() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            results[text] = client.post(
                "/v1/responses", json={"model": "fake/gpt-test", "input": text}
            )

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_calls_over_the_limit_reach_the_upstream_one_at_a_time_in_arrival_order(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    # q0 holds the one slot long enough for the others to queue behind it.
    replies = [Reply.json(chat_completion("r0"), delay_s=1.0)]
    replies += [Reply.json(chat_completion(f"r{n}"), delay_s=0.05) for n in range(1, 4)]
    fake_upstream.script(CHAT, replies)
    server = gateway(serve_with, fake_upstream)
    results: dict[str, httpx.Response] = {}
    limiter = next(lim for name, lim in server.container.inflight().limiters if name == "fake")
    threads = []
    for n in range(4):
        threads.append(post_in_thread(server, f"q{n}", results))
        # A definite arrival order: each call has reached the queue (or the upstream) before
        # the next is sent; a fixed sleep was outrun on a loaded machine. A call moving from
        # the queue to the upstream only makes the sum dip for a moment, never overshoot.
        deadline = time.monotonic() + 10
        while limiter.waiting + fake_upstream.hits(CHAT) < n + 1:
            assert time.monotonic() < deadline, f"q{n} never reached the queue"
            time.sleep(0.005)
    for thread in threads:
        thread.join(30)
    assert [results[f"q{n}"].status_code for n in range(4)] == [200] * 4
    arrived = [r.json["messages"][-1]["content"] for r in fake_upstream.requests(CHAT)]
    assert arrived == ["q0", "q1", "q2", "q3"]


def test_a_wait_that_runs_out_is_a_429_with_retry_after_naming_the_settings(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(CHAT, Reply.json(chat_completion("slow"), delay_s=1.0))
    server = gateway(serve_with, fake_upstream, XR_FAKE_QUEUE_TIMEOUT_S="0.2")
    results: dict[str, httpx.Response] = {}
    holder = post_in_thread(server, "hold", results)
    assert fake_upstream.wait_until(lambda up: up.hits(CHAT) == 1)
    started = time.monotonic()
    with server.client() as client:
        refused = client.post("/v1/responses", json={"model": "fake/gpt-test", "input": "x"})
    waited = time.monotonic() - started
    holder.join(10)
    assert refused.status_code == 429, refused.text
    assert 0.15 <= waited < 0.9  # it waited its 0.2 s, not the holder's whole second
    assert refused.headers["retry-after"] == "1"
    message = refused.json()["error"]["message"]
    assert "XR_FAKE_MAX_INFLIGHT" in message and "XR_FAKE_QUEUE_TIMEOUT_S" in message
    assert results["hold"].status_code == 200
    assert fake_upstream.hits(CHAT) == 1


def test_queue_timeout_zero_keeps_the_fail_fast(
    serve_with: Callable[..., LiveServer], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(CHAT, Reply.json(chat_completion("slow"), delay_s=1.0))
    server = gateway(serve_with, fake_upstream, XR_FAKE_QUEUE_TIMEOUT_S="0")
    results: dict[str, httpx.Response] = {}
    holder = post_in_thread(server, "hold", results)
    assert fake_upstream.wait_until(lambda up: up.hits(CHAT) == 1)
    started = time.monotonic()
    with server.client() as client:
        refused = client.post("/v1/responses", json={"model": "fake/gpt-test", "input": "x"})
    assert time.monotonic() - started < 0.5
    holder.join(10)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert "XR_FAKE_QUEUE_TIMEOUT_S is 0" in refused.json()["error"]["message"]
