"""Failover between deployments end to end (issue 14 item 5): the gateway on loopback with a
provider `pool` of two deployments, each a fake upstream on its own port. One answers 503 or
429 or refuses connections; requests through POST /v1/responses and /v1/chat/completions,
stream and not, are served by the other; the failing one is cooled down (not called again
within COOLDOWN_S) and called again after it; with every deployment down the client gets the
last error's status in the OpenAI error envelope, at once. Each attempt's client span names
the deployment it went to."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.test_telemetry import traced, wait_spans
from tests.transport_harness import closed_port
from tests.upstreams import FakeUpstream, Reply
from xrouter.adapters.telemetry.tracing import SpanKind

KEYS = {"FIRST_KEY": "sk-first-0123456789", "SECOND_KEY": "sk-second-0123456789"}
MODEL = "pool/gpt-test"
GENERATIONS = ("/v1/chat/completions", "/v1/responses")
REQUEST_TIMEOUT_S = 10.0


@pytest.fixture
def first() -> Iterator[FakeUpstream]:
    with FakeUpstream(models=("gpt-test",)) as upstream:
        yield upstream


@pytest.fixture
def second() -> Iterator[FakeUpstream]:
    with FakeUpstream(models=("gpt-test",)) as upstream:
        yield upstream


def pool_gateway(
    serve_with: Callable[..., LiveServer],
    tmp_path: Path,
    first_url: str,
    second_url: str,
    *,
    cooldown_s: float,
    protocol: str = "chat",
    tracing: bool = False,
) -> tuple[LiveServer, Any]:
    """The gateway with provider `pool` over two deployments (the first is tried first: the
    default least_inflight strategy starts its turns there)."""
    path = tmp_path / "xrouter.toml"
    path.write_text(
        "[providers.pool]\n"
        f'protocol = "{protocol}"\n'
        f"cooldown_s = {cooldown_s}\n"
        "max_retries = 2\n"
        "[[providers.pool.deployments]]\n"
        f'base_url = "{first_url}"\n'
        'api_key_env = "FIRST_KEY"\n'
        "[[providers.pool.deployments]]\n"
        f'base_url = "{second_url}"\n'
        'api_key_env = "SECOND_KEY"\n'
    )
    container = make_container(config_file=str(path), discovery=False)
    container.environ.override(providers.Object(dict(KEYS)))
    spans = traced(container, dict(KEYS)) if tracing else None
    return serve_with(container=container), spans


def generations(upstream: FakeUpstream) -> int:
    return sum(upstream.hits(path) for path in GENERATIONS)


def ask(client: httpx.Client, route: str, text: str, *, stream: bool) -> httpx.Response:
    """One request through the gateway; a stream is read to its end."""
    if route == "/v1/responses":
        body: dict[str, Any] = {"model": MODEL, "input": text, "stream": stream}
    else:
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream}
    with client.stream("POST", route, json=body, timeout=REQUEST_TIMEOUT_S) as reply:
        reply.read()
    return reply


def answer_text(reply: httpx.Response, route: str, stream: bool) -> str:
    """The text of a successful answer, either API, stream or not."""
    if not stream:
        payload = reply.json()
        if route == "/v1/responses":
            return "".join(
                part["text"]
                for item in payload["output"]
                if item["type"] == "message"
                for part in item["content"]
            )
        return str(payload["choices"][0]["message"]["content"])
    pieces = []
    for line in reply.text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[len("data: ") :])
        if route == "/v1/responses":
            if event.get("type") == "response.output_text.delta":
                pieces.append(event["delta"])
        else:
            for choice in event.get("choices", []):
                pieces.append(choice.get("delta", {}).get("content") or "")
    return "".join(pieces)


EVERY_WAY = [(route, stream) for route in GENERATIONS for stream in (False, True)]


def failing(upstream: FakeUpstream, status: int) -> None:
    """Every generation call to `upstream` fails with `status` (no wait asked before a retry)."""
    for path in GENERATIONS:
        upstream.route(
            path,
            lambda request, status=status: Reply.error(
                status, f"deployment says {status}", headers={"retry-after-ms": "0"}
            ),
        )


# -- one deployment failing ----------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_the_other_deployment_serves_every_api_while_a_failing_one_cools_down(
    serve_with: Callable[..., LiveServer],
    tmp_path: Path,
    first: FakeUpstream,
    second: FakeUpstream,
    status: int,
) -> None:
    failing(first, status)
    server, _ = pool_gateway(serve_with, tmp_path, first.base_url, second.base_url, cooldown_s=60)
    with server.client() as client:
        for n, (route, stream) in enumerate(EVERY_WAY):
            reply = ask(client, route, f"hello {n}", stream=stream)
            assert reply.status_code == 200, reply.text
            assert answer_text(reply, route, stream) == f"hello {n}"
    # The first request tried `first` once and was retried on `second`; `first` then cooled
    # down for 60 s and was not called again.
    assert generations(first) == 1
    assert generations(second) == len(EVERY_WAY)
    assert {r.headers["authorization"] for r in second.received} == {f"Bearer {KEYS['SECOND_KEY']}"}


def test_a_deployment_refusing_connections_is_skipped(
    serve_with: Callable[..., LiveServer], tmp_path: Path, second: FakeUpstream
) -> None:
    refusing = f"http://127.0.0.1:{closed_port()}/v1"
    server, spans = pool_gateway(
        serve_with, tmp_path, refusing, second.base_url, cooldown_s=60, tracing=True
    )
    began = time.monotonic()
    with server.client() as client:
        for n, (route, stream) in enumerate(EVERY_WAY):
            reply = ask(client, route, f"hello {n}", stream=stream)
            assert reply.status_code == 200, reply.text
            assert answer_text(reply, route, stream) == f"hello {n}"
    assert time.monotonic() - began < 5.0  # one connect error and one short backoff
    assert generations(second) == len(EVERY_WAY)
    # One attempt at the refusing port in all: cooled down after it.
    found = wait_spans(spans, 2 * len(EVERY_WAY) + 1)
    calls = [s for s in found if s.kind is SpanKind.CLIENT]
    refused_port = int(refusing.rsplit(":", 1)[1].split("/")[0])
    assert sum(c.attributes["server.port"] == refused_port for c in calls) == 1


def test_a_cooled_down_deployment_is_called_again_after_cooldown(
    serve_with: Callable[..., LiveServer],
    tmp_path: Path,
    first: FakeUpstream,
    second: FakeUpstream,
) -> None:
    cooldown_s = 1.5
    first.script(
        "/v1/chat/completions", Reply.error(503, "a moment", headers={"retry-after-ms": "0"})
    )
    server, _ = pool_gateway(
        serve_with, tmp_path, first.base_url, second.base_url, cooldown_s=cooldown_s
    )
    with server.client() as client:
        failed_at = time.monotonic()
        assert ask(client, "/v1/chat/completions", "one", stream=False).status_code == 200
        assert ask(client, "/v1/chat/completions", "two", stream=True).status_code == 200
        assert time.monotonic() - failed_at < cooldown_s  # both within the cooldown...
        assert generations(first) == 1  # ...so `first` was not called again
        time.sleep(cooldown_s + 0.1 - (time.monotonic() - failed_at))
        replies = [ask(client, "/v1/responses", f"r{n}", stream=False) for n in range(2)]
    assert [r.status_code for r in replies] == [200, 200]
    # Up again: the turns include it (it answers normally now).
    assert generations(first) == 2
    assert generations(second) == 3


# -- every deployment down -----------------------------------------------------------------


@pytest.mark.parametrize(("route", "stream"), EVERY_WAY)
def test_all_deployments_down_is_the_last_error_at_once(
    serve_with: Callable[..., LiveServer],
    tmp_path: Path,
    first: FakeUpstream,
    second: FakeUpstream,
    route: str,
    stream: bool,
) -> None:
    failing(first, 429)
    failing(second, 503)  # tried second: its error is the last
    server, _ = pool_gateway(serve_with, tmp_path, first.base_url, second.base_url, cooldown_s=60)
    with server.client() as client:
        began = time.monotonic()
        replies = [ask(client, route, "anyone?", stream=stream) for _ in range(2)]
        elapsed = time.monotonic() - began
    assert elapsed < 3.0
    for reply in replies:
        # The gateway's status for an upstream 503, in the OpenAI envelope, before any byte
        # of a stream: the client sees a plain HTTP error either way.
        assert reply.status_code == 502, reply.text
        assert reply.headers["content-type"].startswith("application/json")
        error = reply.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}
        assert "deployment says 503" in error["message"]
    # The first request tried each once (no third attempt: both were cooling down); the
    # second request reached no upstream at all.
    assert (generations(first), generations(second)) == (1, 1)


def test_all_down_with_the_last_error_a_429_is_a_429(
    serve_with: Callable[..., LiveServer],
    tmp_path: Path,
    first: FakeUpstream,
    second: FakeUpstream,
) -> None:
    failing(first, 503)
    failing(second, 429)
    server, _ = pool_gateway(serve_with, tmp_path, first.base_url, second.base_url, cooldown_s=60)
    with server.client() as client:
        replies = [ask(client, "/v1/responses", "anyone?", stream=False) for _ in range(2)]
    assert [r.status_code for r in replies] == [429, 429]
    assert all("deployment says 429" in r.json()["error"]["message"] for r in replies)


# -- the attempt's span is the deployment's ------------------------------------------------


def test_each_attempts_span_names_the_deployment_it_went_to(
    serve_with: Callable[..., LiveServer],
    tmp_path: Path,
    first: FakeUpstream,
    second: FakeUpstream,
) -> None:
    failing(first, 503)
    server, spans = pool_gateway(
        serve_with, tmp_path, first.base_url, second.base_url, cooldown_s=60, tracing=True
    )
    with server.client() as client:
        assert ask(client, "/v1/responses", "traced", stream=True).status_code == 200
    found = wait_spans(spans, 3)
    calls = sorted((s for s in found if s.kind is SpanKind.CLIENT), key=lambda s: s.start_ns)
    assert [c.attributes["server.port"] for c in calls] == [first.port, second.port]
    assert [c.attributes["server.address"] for c in calls] == ["127.0.0.1", "127.0.0.1"]
    assert [c.attributes["url.full"] for c in calls] == [
        f"{first.base_url}/chat/completions",
        f"{second.base_url}/chat/completions",
    ]
    assert [c.attributes["http.response.status_code"] for c in calls] == [503, 200]
    assert [c.attributes["xrouter.upstream.attempt"] for c in calls] == [1, 2]
