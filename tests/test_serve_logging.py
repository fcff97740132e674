"""`xrouter serve` logs at XR_LOG_LEVEL: the app leaves logging to its host, so the level the
operator sets is the level that acts (Litestar's own default would pin the root at INFO)."""

from __future__ import annotations

import time
from typing import Any

import httpx

BODY = {"model": "local/echo", "input": "hello", "store": False}


def _wait_for(gateway: Any, text: str, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in gateway.log():
            return True
        time.sleep(0.05)
    return False


def test_debug_level_reaches_the_log(start_gateway: Any) -> None:
    gateway = start_gateway(XR_LOG_LEVEL="DEBUG")
    answer = httpx.post(f"{gateway.base_url}/v1/responses", json=BODY, timeout=5)
    assert answer.status_code == 200
    # The engine's per-response line is DEBUG.
    assert _wait_for(gateway, f"response {answer.json()['id']} model=local/echo"), gateway.log()


def test_warning_level_keeps_info_lines_out(start_gateway: Any) -> None:
    gateway = start_gateway(XR_LOG_LEVEL="WARNING")
    answer = httpx.post(f"{gateway.base_url}/v1/responses", json=BODY, timeout=5)
    assert answer.status_code == 200
    time.sleep(0.3)
    assert "ready; API under" not in gateway.log()
    assert "model=local/echo" not in gateway.log()
