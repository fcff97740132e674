"""Fallbacks (issue 14 item 6): a request's `models` list and configured chains. On a 429, a
5xx, a timeout or an unreachable upstream before any output reached the client, the next model
answers; never after output went out. The response names the model that served, the
`x-xrouter-fallback` header names the models given up and why, and the analytics record, the
lifecycle trace and the log list every attempt. A 400 for context length falls back only along
`[context_fallbacks]`. Against two fake OpenAI-compatible upstreams on loopback, through the
official SDK in strict mode, on both APIs, streamed and not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.helpers import captured_log, sse_events, trace, usage_records, wait_for
from tests.test_access_control import SECRET as ACCESS_SECRET
from tests.test_access_control import Keys
from tests.test_openai_sdk import make_client
from tests.test_telemetry import events, one, traced, wait_spans
from tests.upstreams import FakeUpstream, Reply, sse_frame
from xrouter.adapters.telemetry.tracing import SpanKind
from xrouter.domain.lifecycle import Action
from xrouter.entrypoints.env_fields import ConfigError
from xrouter.entrypoints.provider_config import load_gateway_config

CHAT = "/v1/chat/completions"


@pytest.fixture
def alpha() -> Iterator[FakeUpstream]:
    with FakeUpstream(models=("big", "small")) as upstream:
        yield upstream


@pytest.fixture
def beta() -> Iterator[FakeUpstream]:
    with FakeUpstream(models=("backup", "huge")) as upstream:
        yield upstream


def _gateway(
    serve_with: Any,
    tmp_path: Path,
    alpha: FakeUpstream,
    beta: FakeUpstream,
    toml: str = "",
    **settings: Any,
) -> LiveServer:
    """Providers `alpha` and `beta` (no transport retries: each failure is one attempt), and
    the fallback tables of `toml`."""
    config = tmp_path / "xrouter.toml"
    config.write_text(toml)
    container = make_container(config_file=str(config), **settings)
    environ: dict[str, str] = {}
    for name, upstream in (("ALPHA", alpha), ("BETA", beta)):
        environ[f"XR_{name}_BASE_URL"] = upstream.base_url
        environ[f"XR_{name}_API_KEY"] = f"sk-{name.lower()}-0123456789"
        environ[f"XR_{name}_MAX_RETRIES"] = "0"
        environ[f"XR_{name}_FIRST_BYTE_TIMEOUT_S"] = "0.5"
    container.environ.override(providers.Object(environ))
    return serve_with(container=container)


def _generations(upstream: FakeUpstream) -> list[str]:
    return [r.json["model"] for r in upstream.received if r.path.endswith("/completions")]


def _words(text: str) -> list[dict[str, Any]]:
    base = {"id": "c1", "created": 1, "model": "big", "object": "chat.completion.chunk"}
    return [
        {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        for word in text.split()
    ]


TRIGGERS = {
    "rate_limited": (Reply.error(429, "Slow down.", type="rate_limit_error"), 429),
    "upstream_error": (Reply.error(503, "Overloaded.", type="server_error"), 503),
    "timeout": (Reply.stall(), 504),
    "unreachable": (Reply.hang_up(), 502),
}


@pytest.mark.parametrize("reason", sorted(TRIGGERS))
def test_each_trigger_falls_back_to_the_next_model_of_the_request(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream, reason: str
) -> None:
    reply, status = TRIGGERS[reason]
    alpha.script("/v1/chat/completions", reply)
    server = _gateway(serve_with, tmp_path, alpha, beta)
    with make_client(server) as client:
        raw = client.responses.with_raw_response.create(
            model="alpha/big", input="hello there", extra_body={"models": ["beta/backup"]}
        )
    response = raw.parse()
    assert response.status == "completed"
    assert response.output_text == "hello there"
    assert response.model == "beta/backup"  # the model that served
    assert raw.headers["x-xrouter-fallback"] == f"alpha/big;status={status};reason={reason}"
    assert _generations(alpha) == ["big"] and _generations(beta) == ["backup"]
    actions = trace(server, raw.headers["x-request-id"])
    assert actions.count(Action.NEXT_ATTEMPT) == 1
    assert actions.index(Action.NEXT_ATTEMPT) < actions.index(Action.FINISH)


def test_chat_completions_stream_falls_back_and_names_the_serving_model(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    alpha.script(CHAT, Reply.error(500, "Boom.", type="server_error"))
    server = _gateway(serve_with, tmp_path, alpha, beta)
    with (
        make_client(server) as client,
        client.chat.completions.with_streaming_response.create(
            model="alpha/big",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            extra_body={"models": ["beta/backup"]},
        ) as raw,
    ):
        assert raw.headers["x-xrouter-fallback"] == ("alpha/big;status=500;reason=upstream_error")
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert {c.model for c in chunks} == {"beta/backup"}


def test_responses_stream_after_a_fallback_is_one_clean_stream(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    """The failed attempt left nothing on the wire: one `response.created`, numbered from 0,
    naming the model that served."""
    alpha.script(CHAT, Reply.error(429, "Slow down.", type="rate_limit_error"))
    server = _gateway(serve_with, tmp_path, alpha, beta)
    with server.client() as http:
        answer = http.post(
            "/v1/responses",
            json={"model": "alpha/big", "input": "a b", "stream": True, "models": ["beta/backup"]},
        )
    assert answer.status_code == 200
    events, _ = sse_events(answer.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events].count("response.created") == 1
    assert events[0]["response"]["model"] == "beta/backup"
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["model"] == "beta/backup"


def test_no_fallback_once_output_reached_the_client(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    """A stream cut after its first words fails in-band: the next model is never asked."""
    alpha.script(
        CHAT,
        Reply(
            headers={"Content-Type": "text/event-stream"},
            chunks=[sse_frame(f) for f in _words("first words")],
            end="drop",
        ),
    )
    server = _gateway(serve_with, tmp_path, alpha, beta)
    with server.client() as http:
        answer = http.post(
            "/v1/responses",
            json={"model": "alpha/big", "input": "x", "stream": True, "models": ["beta/backup"]},
        )
    events, _ = sse_events(answer.text)
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "firstwords"
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["model"] == "alpha/big"
    assert "x-xrouter-fallback" not in answer.headers
    assert _generations(beta) == []
    assert Action.NEXT_ATTEMPT not in trace(server, answer.headers["x-request-id"])


def test_errors_another_model_cannot_fix_do_not_fall_back(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    alpha.script(CHAT, Reply.error(400, "Bad temperature.", param="temperature"))
    server = _gateway(serve_with, tmp_path, alpha, beta)
    with make_client(server) as client, pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="alpha/big", input="x", extra_body={"models": ["beta/backup"]}
        )
    assert "Bad temperature." in refused.value.message
    assert _generations(beta) == []


def test_every_model_failing_reports_the_last_failure_and_lists_the_others(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    alpha.script(CHAT, Reply.error(429, "Slow down.", type="rate_limit_error"))
    beta.script(CHAT, Reply.error(503, "Down.", type="server_error"))
    server = _gateway(serve_with, tmp_path, alpha, beta)
    with server.client() as http:
        answer = http.post(
            "/v1/responses",
            json={"model": "alpha/big", "input": "x", "models": ["beta/backup"]},
        )
    assert answer.status_code == 502
    assert "Down." in answer.json()["error"]["message"]
    assert answer.headers["x-xrouter-fallback"] == "alpha/big;status=429;reason=rate_limited"


def test_configured_chain_with_analytics_listing_every_attempt(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    toml = '[aliases]\nsmart = "alpha/big"\n\n[fallbacks]\nsmart = ["alpha/small", "beta/backup"]\n'
    alpha.script(
        CHAT,
        [
            Reply.error(503, "Big is down.", type="server_error"),
            Reply.error(429, "Small is busy.", type="rate_limit_error"),
        ],
    )
    server = _gateway(serve_with, tmp_path, alpha, beta, toml)
    with captured_log("xrouter.engine") as lines, make_client(server) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="smart", messages=[{"role": "user", "content": "hi"}]
        )
    completion = raw.parse()
    assert completion.model == "beta/backup"
    assert completion.choices[0].message.content == "hi"
    assert raw.headers["x-xrouter-fallback"] == (
        "smart;status=503;reason=upstream_error, alpha/small;status=429;reason=rate_limited"
    )
    assert _generations(alpha) == ["big", "small"]
    assert any("Small is busy." in line and "trying beta/backup" in line for line in lines.lines)
    wait_for(lambda: bool(usage_records(server, raw.headers["x-request-id"])))
    (record,) = usage_records(server, raw.headers["x-request-id"])
    assert record.model == "beta/backup" and record.model_requested == "smart"
    assert [(a.model, a.provider, a.status, a.reason) for a in record.fallbacks] == [
        ("smart", "alpha", 503, "upstream_error"),
        ("alpha/small", "alpha", 429, "rate_limited"),
    ]


def test_context_length_falls_back_only_along_the_context_chain(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    toml = (
        '[fallbacks]\n"alpha/small" = ["alpha/big"]\n\n'
        '[context_fallbacks]\n"alpha/small" = ["beta/huge"]\n'
    )
    too_long = Reply.error(
        400,
        "This model's maximum context length is 8192 tokens.",
        code="context_length_exceeded",
        param="messages",
    )
    alpha.script(CHAT, too_long)
    server = _gateway(serve_with, tmp_path, alpha, beta, toml)
    with make_client(server) as client:
        raw = client.responses.with_raw_response.create(model="alpha/small", input="long")
    assert raw.parse().model == "beta/huge"
    assert raw.headers["x-xrouter-fallback"] == "alpha/small;status=400;reason=context_length"
    assert _generations(alpha) == ["small"]  # not `big`: that chain is for other failures


def test_a_bad_entry_of_models_is_refused_before_any_upstream_call(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    server = _gateway(serve_with, tmp_path, alpha, beta)
    with server.client() as http:
        unknown = http.post(
            "/v1/responses",
            json={"model": "alpha/big", "input": "x", "models": ["beta/backup", "nowhere/x"]},
        )
        too_many = http.post(
            "/v1/responses",
            json={"model": "alpha/big", "input": "x", "models": [f"beta/m{i}" for i in range(9)]},
        )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "models[1]"
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "models"
    assert _generations(alpha) == [] and _generations(beta) == []


def test_a_model_id_cannot_break_the_header(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    alpha.script(CHAT, Reply.error(503, "Down.", type="server_error"))
    server = _gateway(serve_with, tmp_path, alpha, beta)
    with server.client() as http:
        answer = http.post(
            "/v1/responses",
            json={"model": "alpha/b,ig;x=1", "input": "x", "models": ["beta/backup"]},
        )
    assert answer.status_code == 200
    assert answer.headers["x-xrouter-fallback"] == (
        "alpha/b%2Cig%3Bx%3D1;status=503;reason=upstream_error"
    )
    alpha.script(CHAT, Reply.error(503, "Down.", type="server_error"))
    with server.client() as http:
        long = http.post(
            "/v1/responses",
            json={"model": "alpha/" + "x" * 5000, "input": "x", "models": ["beta/backup"]},
        )
    assert long.status_code == 200
    assert long.headers["x-xrouter-fallback"] == (
        "alpha/" + "x" * 194 + "...;status=503;reason=upstream_error"
    )


def test_models_on_the_wire_is_not_sent_upstream(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    """`models` is the gateway's: the upstream gets a plain request for its one model."""
    server = _gateway(serve_with, tmp_path, alpha, beta)
    with server.client() as http:
        assert (
            http.post(
                CHAT,
                json={
                    "model": "alpha/big",
                    "messages": [{"role": "user", "content": "x"}],
                    "models": ["beta/backup"],
                },
            ).status_code
            == 200
        )
    body = alpha.requests("/v1/chat/completions")[0].json
    assert body["model"] == "big" and "models" not in body


def test_the_trace_lists_every_attempt(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    """One client span per model tried, each naming its model; a `fallback` span event per
    skipped model, and the skipped ones on the server span."""
    alpha.script(CHAT, Reply.error(429, "Slow down.", type="rate_limit_error"))
    config = tmp_path / "xrouter.toml"
    config.write_text("")
    container = make_container(config_file=str(config))
    environ: dict[str, str] = {}
    for name, upstream in (("ALPHA", alpha), ("BETA", beta)):
        environ[f"XR_{name}_BASE_URL"] = upstream.base_url
        environ[f"XR_{name}_API_KEY"] = f"sk-{name.lower()}-0123456789"
        environ[f"XR_{name}_MAX_RETRIES"] = "0"
    container.environ.override(providers.Object(environ))
    spans = traced(container, environ)
    server = serve_with(container=container)
    with server.client() as http:
        answer = http.post(
            "/v1/responses", json={"model": "alpha/big", "input": "x", "models": ["beta/backup"]}
        )
    assert answer.status_code == 200
    found = wait_spans(spans, 3)
    root = one(found, SpanKind.SERVER)
    calls = sorted((s for s in found if s.kind is SpanKind.CLIENT), key=lambda s: s.start_ns)
    assert [c.attributes["gen_ai.request.model"] for c in calls] == ["big", "backup"]
    assert [c.attributes["server.port"] for c in calls] == [alpha.port, beta.port]
    assert events(root).count("fallback") == 1
    assert events(root).index("fallback") < events(root).index("done")
    assert root.attributes["xrouter.fallbacks"] == ("alpha/big;status=429;reason=rate_limited",)
    assert root.attributes["gen_ai.provider.name"] == "beta"


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[fallbacks]\n"alpha/big" = "beta/backup"\n', "'alpha/big' must be a list of model ids"),
        ('[fallbacks]\n"alpha/big" = ["alpha/big"]\n', "lists itself"),
        ('fallbacks = ["x"]\n', "[fallbacks] must be a table"),
        ("[context_fallbacks]\nsmart = [1]\n", "[context_fallbacks] 'smart'"),
    ],
)
def test_a_wrong_chain_stops_the_gateway_naming_it(tmp_path: Path, toml: str, named: str) -> None:
    config = tmp_path / "xrouter.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as stopped:
        load_gateway_config({}, str(config), byok=False)
    assert named in str(stopped.value) and str(config) in str(stopped.value)


def test_a_background_response_falls_back_too(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    """Answered at once (in progress, first model); polled, it completed on the next one."""
    alpha.script(CHAT, Reply.error(503, "Down.", type="server_error"))
    server = _gateway(serve_with, tmp_path, alpha, beta)
    body = {"model": "alpha/big", "input": "late", "background": True, "models": ["beta/backup"]}
    with server.client() as http:
        accepted = http.post("/v1/responses", json=body).json()
        assert accepted["status"] in ("queued", "in_progress")

        def finished() -> bool:
            got = http.get(f"/v1/responses/{accepted['id']}").json()
            return bool(got["status"] == "completed")

        wait_for(finished)
        final = http.get(f"/v1/responses/{accepted['id']}").json()
    assert final["model"] == "beta/backup"
    assert final["output"][0]["content"][0]["text"] == "late"


def test_a_gateway_key_cannot_reach_a_model_through_a_fallback(
    serve_with: Any, tmp_path: Path, alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    """A key for alpha's models only: naming beta in `models` is a 403 before any call, and
    beta in a configured chain is left out of this key's chain (the failure stands)."""
    toml = '[fallbacks]\n"alpha/big" = ["beta/backup", "alpha/small"]\n'
    server = _gateway(
        serve_with, tmp_path, alpha, beta, toml, auth="keys", auth_secret=ACCESS_SECRET
    )
    key = Keys(server).add("alpha-only", models=("alpha/*",))
    auth = {"authorization": f"Bearer {key}"}
    with server.client() as http:
        refused = http.post(
            "/v1/responses",
            json={"model": "alpha/big", "input": "x", "models": ["beta/backup"]},
            headers=auth,
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["param"] == "models[0]"
        assert _generations(alpha) == [] and _generations(beta) == []
        alpha.script(CHAT, Reply.error(503, "Down.", type="server_error"))
        served = http.post("/v1/responses", json={"model": "alpha/big", "input": "y"}, headers=auth)
    assert served.status_code == 200
    assert served.json()["model"] == "alpha/small"  # beta/backup skipped: not for this key
    assert served.headers["x-xrouter-fallback"] == "alpha/big;status=503;reason=upstream_error"
    assert _generations(beta) == []
