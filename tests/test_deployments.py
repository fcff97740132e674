"""Deployments: several base URLs behind one provider, chosen per attempt, cooled down on
failure (adapters/providers/deployments.py and the transport that uses it)."""

from __future__ import annotations

import random
import ssl
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import trustme

from tests.transport_harness import closed_port
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


# -- a retry avoids the deployment that just failed (issue 14 item 5) ----------------------


async def test_without_cooldown_a_retry_still_avoids_the_deployment_that_just_failed(
    upstreams: list[FakeUpstream],
) -> None:
    # `latency` prefers a deployment never measured, and a failure measures nothing: without
    # `avoid`, every retry would go straight back to `bad` (cooldown 0 keeps it up).
    bad, good = upstreams[0], upstreams[1]
    bad.route("/v1/chat/completions", lambda request: Reply.error(503, "overloaded"))
    transport = _transport([bad, good], cooldown_s=0.0, strategy="latency", max_retries=1)
    try:
        for _ in range(3):
            assert (await transport.post_json("/chat/completions", BODY, HEADERS)).status == 200
        stream = BODY.replace(b"}]}", b'}], "stream": true}')
        events = [e async for e in transport.stream_events("/chat/completions", stream, HEADERS)]
        assert events
    finally:
        await transport.aclose()
    # Each call tried `bad` first (still up), then `good`: one retry each, never `bad` twice.
    assert bad.hits("/v1/chat/completions") == 4
    assert good.hits("/v1/chat/completions") == 4


async def test_a_single_deployment_is_retried_even_though_it_just_failed(
    upstreams: list[FakeUpstream],
) -> None:
    only = upstreams[0]
    only.script("/v1/chat/completions", Reply.error(503, "once"))
    transport = _transport([only], cooldown_s=0.0, max_retries=1)
    try:
        assert (await transport.post_json("/chat/completions", BODY, HEADERS)).status == 200
    finally:
        await transport.aclose()
    assert only.hits("/v1/chat/completions") == 2


def test_avoid_is_ignored_when_nothing_else_is_up() -> None:
    clock = FakeClock()
    selector = DeploymentSelector(_three(), cooldown_s=10.0, clock=clock)
    selector.failed(1, RuntimeError("down"))
    selector.failed(2, RuntimeError("down"))
    assert selector.pick(avoid=0) == 0
    zero = DeploymentSelector(_three()[:2], cooldown_s=0.0, clock=clock)
    zero.failed(0, RuntimeError("down"))
    assert [zero.pick(avoid=0) for _ in range(3)] == [1, 1, 1]


# -- load spread by strategy (deterministic: fixed seed, simulated latencies) ----------------


def test_least_inflight_keeps_concurrent_calls_level_and_fills_the_emptiest() -> None:
    selector = DeploymentSelector(_three())
    # 30 calls open at once: 10 each.
    opened = [selector.pick() for _ in range(30)]
    for index in opened:
        assert index is not None
        selector.started(index)
    assert [selector.inflight(i) for i in range(3)] == [10, 10, 10]
    # Deployment 0's calls end: the next 10 all go there, until it is level again.
    for _ in range(10):
        selector.ended(0)
    refill = []
    for _ in range(10):
        index = selector.pick()
        assert index is not None
        selector.started(index)
        refill.append(index)
    assert refill == [0] * 10
    assert [selector.inflight(i) for i in range(3)] == [10, 10, 10]


def test_least_inflight_spreads_concurrent_calls_when_one_deployment_is_slow() -> None:
    # A simulated workload: each step a call starts, and calls end after their deployment's
    # service time (in steps). A deployment twice as slow holds its calls twice as long and so
    # gets about half the calls of each fast one.
    selector = DeploymentSelector(_three())
    service = (2, 2, 4)
    ending: list[tuple[int, int]] = []  # (step it ends, deployment)
    picks: Counter[int] = Counter()
    for step in range(1200):
        for done in [e for e in ending if e[0] == step]:
            ending.remove(done)
            selector.ended(done[1])
        index = selector.pick()
        assert index is not None
        selector.started(index)
        picks[index] += 1
        ending.append((step + service[index], index))
    assert picks[0] == picks[1]
    assert abs(picks[2] * 2 - picks[0]) <= picks[0] // 10  # half of a fast one's, within 10 %


def test_weighted_spreads_in_proportion_over_the_deployments_that_are_up() -> None:
    clock = FakeClock()
    selector = DeploymentSelector(
        _three((2.0, 1.0, 1.0)),
        strategy="weighted",
        cooldown_s=10.0,
        clock=clock,
        rng=random.Random(11),
    )
    selector.failed(0, RuntimeError("down"))
    counts = Counter(selector.pick() for _ in range(4000))
    assert counts[0] == 0  # cooling down: no share at all
    assert 1850 < counts[1] < 2150 and 1850 < counts[2] < 2150  # the rest split 1:1
    clock.now += 10.0
    counts = Counter(selector.pick() for _ in range(4000))
    assert 1850 < counts[0] < 2150  # back, with half of the traffic (weight 2 of 4)


def test_weighted_with_a_fixed_seed_is_reproducible() -> None:
    def run() -> list[int | None]:
        selector = DeploymentSelector(
            _three((1.0, 3.0, 0.5)), strategy="weighted", rng=random.Random(3)
        )
        return [selector.pick() for _ in range(200)]

    assert run() == run()


def test_latency_moves_traffic_when_the_fastest_slows_down() -> None:
    selector = DeploymentSelector(_three()[:2], strategy="latency")
    selector.succeeded(0, 0.1)
    selector.succeeded(1, 0.2)
    picks = []
    # Deployment 0 now answers in 0.5 s: its average (smoothing 0.3) goes 0.1 -> 0.22, above
    # deployment 1's 0.2 after one slow answer; 1 then serves while it stays the faster.
    latency = {0: 0.5, 1: 0.2}
    for _ in range(6):
        index = selector.pick()
        assert index is not None
        picks.append(index)
        selector.succeeded(index, latency[index])
    assert picks == [0, 1, 1, 1, 1, 1]


# -- each attempt is the deployment's: its proxy, its TLS, its host in messages --------------


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


async def test_each_deployment_goes_through_the_proxy_its_own_url_gets(
    upstreams: list[FakeUpstream], proxy_env: pytest.MonkeyPatch
) -> None:
    direct, proxied, proxy = upstreams
    # Everything plain-http goes through `proxy` (the fake answers as the upstream would),
    # except `direct`'s origin; the first deployment must not decide for the second.
    proxy_env.setenv("HTTP_PROXY", proxy.origin)
    proxy_env.setenv("NO_PROXY", direct.origin)
    transport = _transport([direct, proxied], max_retries=0)
    try:
        for _ in range(2):
            assert (await transport.post_json("/chat/completions", BODY, HEADERS)).status == 200
    finally:
        await transport.aclose()
    assert direct.hits("/v1/chat/completions") == 1
    assert proxied.hits() == 0
    assert [r.path for r in proxy.received] == [f"{proxied.base_url}/chat/completions"]


async def test_a_deployment_that_fails_is_named_by_its_own_host(
    upstreams: list[FakeUpstream], proxy_env: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    transport = HttpTransport(
        "pool",
        TransportSettings(
            base_url=upstreams[0].base_url,
            deployments=(
                Deployment(upstreams[0].base_url),
                Deployment(f"http://127.0.0.1:{port}/v1"),
            ),
            max_retries=0,
        ),
    )
    try:
        await transport.post_json("/chat/completions", BODY, HEADERS)  # the first deployment
        with pytest.raises(GatewayError) as caught:
            await transport.post_json("/chat/completions", BODY, HEADERS)  # the second
    finally:
        await transport.aclose()
    assert f"127.0.0.1:{port}" in caught.value.message
    assert f":{upstreams[0].port}" not in caught.value.message


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_an_https_deployment_after_a_plain_http_one_keeps_the_tls_settings(
    upstreams: list[FakeUpstream], ca: trustme.CA, proxy_env: pytest.MonkeyPatch
) -> None:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    with FakeUpstream(tls=server) as secure:
        # The CA is not in the default trust store: only `verify=False`, applied to the https
        # deployment too (not decided from the first, plain one), lets the call through.
        transport = HttpTransport(
            "pool",
            TransportSettings(
                base_url=upstreams[0].base_url,
                deployments=(Deployment(upstreams[0].base_url), Deployment(secure.base_url)),
                verify=False,
                max_retries=0,
            ),
        )
        try:
            for _ in range(2):
                reply = await transport.post_json("/chat/completions", BODY, HEADERS)
                assert reply.status == 200
        finally:
            await transport.aclose()
        assert secure.hits("/v1/chat/completions") == 1
    assert upstreams[0].hits("/v1/chat/completions") == 1


def test_latency_spreads_concurrent_calls_whose_time_grows_with_load() -> None:
    # Simulated: a deployment answers in base * (1 + its calls open) and each call stays open
    # 6 steps. Weighing the average by the calls open keeps every deployment measured: none is
    # starved by an average that rose in a busy spell, the fastest takes the largest share.
    selector = DeploymentSelector(_three(), strategy="latency")
    base = (0.1, 0.2, 0.4)
    ending: list[tuple[int, int]] = []
    picks: Counter[int] = Counter()
    for step in range(3000):
        for done in [e for e in ending if e[0] == step]:
            ending.remove(done)
            selector.ended(done[1])
        index = selector.pick()
        assert index is not None
        selector.succeeded(index, base[index] * (1 + selector.inflight(index)))
        selector.started(index)
        if step >= 1500:  # the second half: the steady state
            picks[index] += 1
        ending.append((step + 6, index))
    assert picks[0] > picks[1] > picks[2] > 1500 // 10
    assert picks[0] < 1500 * 0.6
