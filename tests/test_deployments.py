"""Deployments: several base URLs behind one provider, chosen per attempt, cooled down on
failure (adapters/providers/deployments.py and the transport that uses it)."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.upstreams import FakeUpstream, Reply
from xrouter.adapters.providers.deployments import Deployment, DeploymentSelector
from xrouter.adapters.providers.transport import HttpTransport, TransportSettings
from xrouter.domain.errors import GatewayError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _three(weights: tuple[float, ...] = (1.0, 1.0, 1.0)) -> list[Deployment]:
    return [Deployment(f"http://127.0.0.1:{9000 + i}/v1", weight=w) for i, w in enumerate(weights)]


def test_least_inflight_takes_turns_and_prefers_the_idle() -> None:
    selector = DeploymentSelector(_three())
    assert [selector.pick() for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    selector.started(0)
    selector.started(1)
    assert selector.pick() == 2
    selector.ended(0)
    selector.ended(1)


def test_weighted_spreads_by_weight_with_a_fixed_seed() -> None:
    selector = DeploymentSelector(
        _three((1.0, 3.0, 0.5)), strategy="weighted", rng=random.Random(7)
    )
    counts = Counter(selector.pick() for _ in range(9000))
    assert 1800 < counts[0] < 2200
    assert 5700 < counts[1] < 6300
    assert 800 < counts[2] < 1200


def test_latency_tries_unmeasured_then_prefers_the_fastest() -> None:
    selector = DeploymentSelector(_three(), strategy="latency")
    selector.succeeded(0, 0.5)
    selector.succeeded(1, 0.1)
    assert selector.pick() == 2  # never measured
    selector.succeeded(2, 0.9)
    assert [selector.pick() for _ in range(3)] == [1, 1, 1]


def test_cooldown_skips_a_failed_deployment_until_it_recovers() -> None:
    clock = FakeClock()
    selector = DeploymentSelector(_three()[:2], cooldown_s=10.0, clock=clock)
    selector.failed(0, RuntimeError("down"))
    assert [selector.pick() for _ in range(3)] == [1, 1, 1]
    clock.now += 10.0
    assert {selector.pick() for _ in range(2)} == {0, 1}


def test_all_cooling_down_gives_none_and_keeps_the_last_error() -> None:
    clock = FakeClock()
    selector = DeploymentSelector(_three()[:2], cooldown_s=5.0, clock=clock)
    first, last = RuntimeError("a"), RuntimeError("b")
    selector.failed(0, first)
    selector.failed(1, last)
    assert selector.pick() is None and not selector.any_up()
    assert selector.last_error is last
    clock.now += 5.0
    assert selector.any_up()


def test_a_deployment_key_stays_out_of_its_repr() -> None:
    assert "sk-secret" not in repr(Deployment("http://127.0.0.1:1/v1", api_key="sk-secret"))


# -- over HTTP ------------------------------------------------------------------------------


@pytest.fixture
def upstreams() -> Iterator[list[FakeUpstream]]:
    with FakeUpstream() as a, FakeUpstream() as b, FakeUpstream() as c:
        yield [a, b, c]


def _transport(servers: list[FakeUpstream], **settings: object) -> HttpTransport:
    deployments = tuple(
        Deployment(server.base_url, api_key=f"sk-{i}") for i, server in enumerate(servers)
    )
    return HttpTransport(
        "pool",
        TransportSettings(
            base_url=deployments[0].base_url,
            deployments=deployments,
            backoff_initial_s=0.01,
            backoff_max_s=0.01,
            **settings,  # type: ignore[arg-type]
        ),
    )


BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
HEADERS = {"authorization": "Bearer sk-provider"}


async def test_requests_spread_over_deployments_each_with_its_key(
    upstreams: list[FakeUpstream],
) -> None:
    transport = _transport(upstreams)
    try:
        for _ in range(6):
            await transport.post_json("/chat/completions", BODY, HEADERS)
        async for _event in transport.stream_events(
            "/chat/completions", BODY.replace(b"}]}", b'}], "stream": true}'), HEADERS
        ):
            pass
    finally:
        await transport.aclose()
    hits = [server.hits("/v1/chat/completions") for server in upstreams]
    assert sorted(hits) == [2, 2, 3]
    for i, server in enumerate(upstreams):
        assert {r.headers["authorization"] for r in server.received} == {f"Bearer sk-{i}"}


async def test_a_failing_deployment_is_cooled_down_and_its_traffic_moves(
    upstreams: list[FakeUpstream],
) -> None:
    bad, good = upstreams[0], upstreams[1]
    bad.route("/v1/chat/completions", lambda request: Reply.error(503, "overloaded"))
    transport = _transport([bad, good], cooldown_s=60.0)
    try:
        for _ in range(5):
            reply = await transport.post_json("/chat/completions", BODY, HEADERS)
            assert reply.status == 200
    finally:
        await transport.aclose()
    assert bad.hits("/v1/chat/completions") == 1  # then cooled down; the retry went to `good`
    assert good.hits("/v1/chat/completions") == 5


async def test_all_deployments_failing_fails_fast_with_the_last_error(
    upstreams: list[FakeUpstream],
) -> None:
    for server in upstreams[:2]:
        server.route("/v1/chat/completions", lambda request: Reply.error(503, "overloaded"))
    transport = _transport(upstreams[:2], cooldown_s=60.0, max_retries=5)
    try:
        began = time.monotonic()
        with pytest.raises(GatewayError) as first:
            await transport.post_json("/chat/completions", BODY, HEADERS)
        with pytest.raises(GatewayError) as second:
            await transport.post_json("/chat/completions", BODY, HEADERS)
        assert time.monotonic() - began < 2.0
    finally:
        await transport.aclose()
    assert "overloaded" in str(first.value) and str(second.value) == str(first.value)
    assert sum(server.hits("/v1/chat/completions") for server in upstreams[:2]) == 2
