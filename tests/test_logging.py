"""Structured logs and the access line (issue 11 item 4), through a real `xrouter serve`:
XR_LOG_FORMAT=json writes one parseable JSON object per line carrying the request's id; one
access line per request (JSON and stream requests, 4xx and 5xx) unless XR_ACCESS_LOG=false;
and no secret (an upstream key, a BYOK token, a Redis password) reaches any line in either
format."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.log_audit import register_secret
from tests.upstreams import FakeUpstream, RecordedRequest, Reply
from xrouter.application.request_facts import RequestFacts
from xrouter.domain.secrets import MASK, SecretMasker
from xrouter.entrypoints.http.access_log import write_access_line
from xrouter.entrypoints.logging_setup import JsonFormatter, SecretMaskingFilter

KEY = "Zq9xT4mLr8Vb2Nc7Kd1Fh6Gj3Ps5Wy0Ua2Ie4Oo9"
"""The operator's upstream key: no credential shape, only masking by value catches it."""
CLIENT_TOKEN = "Cl7tQw3Er9Ty5Ui1Op8As4Df2Gh6Jk0Lz3Xc7Vb"
REDIS_PASSWORD = "Rp4sSw0rdXy7Qm2Lk9Tz"
CHAT_PATH = "/v1/chat/completions"
LOCAL = {"model": "local/echo", "input": "hello there", "store": False}


def _echo_in_400(request: RecordedRequest) -> Reply:
    secret = request.headers["authorization"].split(" ", 1)[1]
    return Reply.error(400, f"Key {secret} is not valid here", param=f"headers.{secret}")


def _lines(gateway: Any, until: Callable[[list[str]], bool], timeout_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [line for line in gateway.log().splitlines() if line.strip()]
        if until(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _json_lines(gateway: Any, count_access: int) -> list[dict[str, Any]]:
    lines = _lines(gateway, lambda ls: sum('"xrouter.access"' in x for x in ls) >= count_access)
    return [json.loads(line) for line in lines]  # every line parses


def _access(records: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    found = [
        r for r in records if r["logger"] == "xrouter.access" and r["request_id"] == request_id
    ]
    assert len(found) == 1, records
    return found[0]


def test_json_lines_carry_the_request_id_and_the_access_fields(
    start_gateway: Any, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(CHAT_PATH, Reply.error(500, "upstream broke"))
    gateway = start_gateway(
        XR_LOG_FORMAT="json",
        XR_UP_BASE_URL=fake_upstream.base_url,
        XR_UP_API_KEY="k",
        XR_UP_MAX_RETRIES="0",
    )
    url = f"{gateway.base_url}/v1/responses"
    plain = httpx.post(url, json=LOCAL, headers={"x-request-id": "mine-1"}, timeout=5)
    stream = httpx.post(url, json={**LOCAL, "stream": True}, timeout=5)
    missing = httpx.post(url, json={**LOCAL, "model": "nowhere/x"}, timeout=5)
    failed = httpx.post(url, json={**LOCAL, "model": "up/gpt-test"}, timeout=5)
    assert (plain.status_code, stream.status_code, missing.status_code) == (200, 200, 404)
    assert failed.status_code >= 500
    assert plain.headers["x-request-id"] == "mine-1"

    records = _json_lines(gateway, 4)  # /ready polls are DEBUG lines, not counted here
    for record in records:
        assert {"time", "level", "logger", "message", "trace_id", "span_id"} <= record.keys()
        assert record["time"].endswith("+00:00")

    line = _access(records, "mine-1")
    assert line["level"] == "INFO"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/v1/responses", 200)
    assert (line["model"], line["provider"]) == ("local/echo", "local")
    assert line["input_tokens"] > 0 and line["output_tokens"] > 0
    assert line["latency_ms"] > 0 and "ttft_ms" not in line
    assert "POST /v1/responses 200" in line["message"]

    line = _access(records, stream.headers["x-request-id"])
    assert line["status"] == 200 and line["model"] == "local/echo"
    assert 0 < line["ttft_ms"] <= line["latency_ms"]
    assert line["output_tokens"] > 0

    assert _access(records, missing.headers["x-request-id"])["status"] == 404

    line = _access(records, failed.headers["x-request-id"])
    assert line["status"] == failed.status_code and line["provider"] == "up"
    # The engine's own warning about the failure carries the same request id.
    assert any(
        r["request_id"] == failed.headers["x-request-id"] and r["logger"] == "xrouter.engine"
        for r in records
        if "request_id" in r
    ), records


def test_text_access_line(start_gateway: Any) -> None:
    gateway = start_gateway()
    reply = httpx.post(f"{gateway.base_url}/v1/responses", json=LOCAL, timeout=5)
    rid = reply.headers["x-request-id"]
    lines = _lines(gateway, lambda ls: any(rid in x for x in ls))
    [line] = [x for x in lines if f"request_id={rid}" in x]
    assert "xrouter.access: POST /v1/responses 200 " in line
    assert "model=local/echo provider=local" in line and "input_tokens=" in line


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_access_log_off(start_gateway: Any, log_format: str) -> None:
    gateway = start_gateway(XR_ACCESS_LOG="false", XR_LOG_FORMAT=log_format)
    reply = httpx.post(f"{gateway.base_url}/v1/responses", json=LOCAL, timeout=5)
    assert reply.status_code == 200
    time.sleep(0.3)
    log = gateway.log()
    assert "ready; API under" in log  # the log does run
    assert "xrouter.access" not in log and reply.headers["x-request-id"] not in log


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_any_line(
    start_gateway: Any,
    fake_upstream: FakeUpstream,
    redis_factory: Callable[..., Any],
    log_format: str,
) -> None:
    register_secret(CLIENT_TOKEN, "CLIENT_TOKEN of tests/test_logging.py")  # only in headers
    fake_upstream.route(CHAT_PATH, _echo_in_400)
    redis = redis_factory("--requirepass", REDIS_PASSWORD)
    redis_url = redis.url.replace("redis://", f"redis://:{REDIS_PASSWORD}@", 1)
    common = {
        "XR_LOG_FORMAT": log_format,
        "XR_LOG_LEVEL": "DEBUG",
        "XR_UP_BASE_URL": fake_upstream.base_url,
        "XR_UP_MAX_RETRIES": "0",
    }
    keyed = start_gateway(**common, XR_UP_API_KEY=KEY, XR_STORAGE="redis", XR_REDIS_URL=redis_url)
    byok = start_gateway(**common, XR_BYOK="true")
    replies = []
    for stream in (False, True):
        body = {"model": "up/gpt-test", "input": "x", "stream": stream}
        replies.append(httpx.post(f"{keyed.base_url}/v1/responses", json=body, timeout=5))
        replies.append(
            httpx.post(
                f"{byok.base_url}/v1/responses",
                json=body,
                headers={"authorization": f"Bearer {CLIENT_TOKEN}"},
                timeout=5,
            )
        )
    stored = httpx.post(f"{keyed.base_url}/v1/responses", json=LOCAL | {"store": True}, timeout=5)
    assert stored.status_code == 200  # went through the password-protected Redis
    assert [r.status_code for r in replies] == [400, 400, 400, 400]
    assert [r.request.headers.get("authorization") for r in replies][1::2] == [
        f"Bearer {CLIENT_TOKEN}"
    ] * 2
    assert fake_upstream.requests(CHAT_PATH)[0].headers["authorization"] == f"Bearer {KEY}"
    for gateway, count in ((keyed, 3), (byok, 2)):
        rid = (
            replies[-1].headers["x-request-id"]
            if gateway is byok
            else stored.headers["x-request-id"]
        )
        lines = _lines(gateway, lambda ls, rid=rid: any(rid in x and "access" in x for x in ls))
        assert sum("xrouter.access" in x and "/v1/responses" in x for x in lines) == count
        assert any("not valid here" in x for x in lines), lines  # the failures were logged
        if log_format == "json":
            for line in lines:
                json.loads(line)
        text = "\n".join(lines)
        for secret in (KEY, CLIENT_TOKEN, REDIS_PASSWORD):
            assert secret not in text


def test_json_access_fields_are_masked_like_the_message() -> None:
    """A secret in an access line's values (a path quoting a key) is masked in its JSON
    fields too, not only in its message."""
    log = logging.getLogger("xrouter.access.test")
    facts = RequestFacts("req_1", model=f"m-{KEY}", provider="up")
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretMaskingFilter(SecretMasker([KEY])))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        write_access_line(log, "GET", f"/v1/responses/{KEY}", 404, 1.0, None, facts)
    finally:
        log.removeHandler(handler)
    [line] = lines
    record = json.loads(line)
    assert KEY not in line
    assert record["path"] == f"/v1/responses/{MASK}" and record["model"] == f"m-{MASK}"
