"""`xrouter serve --workers N`: refused on the per-process memory store, and on Redis every
worker shares the stored responses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.log_audit import SESSION_AUDIT
from tests.redis_servers import RedisServer

XROUTER = str(Path(sys.executable).parent / "xrouter")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[tuple[str, list[str]]]:
    """`xrouter serve ARGS` until /ready answers 200; yields its base URL and a list that
    holds the process's whole output once it has stopped (after the block); the environment's
    secrets and that output go to the log audit (tests/log_audit.py)."""
    SESSION_AUDIT.add_env(env)
    port = _free_port()
    process = subprocess.Popen(
        [XROUTER, "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "XR_DISCOVERY": "false", **env},
    )
    base = f"http://127.0.0.1:{port}"
    output: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "did not start"
            time.sleep(0.05)
        yield base, output
    finally:
        process.terminate()
        output.append(process.communicate(timeout=20)[0].decode(errors="replace"))
        SESSION_AUDIT.add_text(output[-1])


def test_several_workers_on_the_memory_store_are_refused_with_what_to_set() -> None:
    env = {**os.environ, "XR_STORAGE": "memory"}
    result = subprocess.run(
        [XROUTER, "serve", "--workers", "2", "--port", str(_free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 2
    assert "XR_STORAGE=redis" in result.stderr and "XR_REDIS_URL" in result.stderr
    assert "previous_response_id" in result.stderr


def test_redis_without_a_url_is_a_configuration_error() -> None:
    env = {**os.environ, "XR_STORAGE": "redis"}
    env.pop("XR_REDIS_URL", None)
    result = subprocess.run([XROUTER, "serve"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "XR_REDIS_URL" in result.stderr


def test_two_workers_on_redis_share_every_stored_response(redis_server: RedisServer) -> None:
    env = {"XR_STORAGE": "redis", "XR_REDIS_URL": redis_server.url, "XR_LOG_LEVEL": "WARNING"}
    with serving(env, "--workers", "2") as (base, _):
        # A fresh connection per request: the kernel spreads them over both workers, so a
        # response stored by one worker is read back by the other in some of these turns.
        previous = None
        for turn in range(12):
            body = {"model": "local/echo", "input": f"turn {turn}"}
            if previous is not None:
                body["previous_response_id"] = previous
            created = httpx.post(f"{base}/v1/responses", json=body, timeout=10)
            assert created.status_code == 200, created.text
            previous = created.json()["id"]
            fetched = httpx.get(f"{base}/v1/responses/{previous}", timeout=10)
            assert fetched.status_code == 200, fetched.text
        items = httpx.get(f"{base}/v1/responses/{previous}/input_items", timeout=10).json()
        assert items["data"][0]["content"][0]["text"] == "turn 11"
        assert httpx.delete(f"{base}/v1/responses/{previous}", timeout=10).status_code == 200
        assert httpx.get(f"{base}/v1/responses/{previous}", timeout=10).status_code == 404
        ready = httpx.get(f"{base}/ready", timeout=5).json()
        assert ready == {"status": "ready", "redis": "ok"}


def test_the_redis_password_never_reaches_the_log(redis_factory: Any) -> None:
    password = "correct-horse-battery-staple-42"
    redis = redis_factory("--requirepass", "another-password-entirely")
    env = {
        "XR_STORAGE": "redis",
        "XR_REDIS_URL": f"redis://:{password}@127.0.0.1:{redis.port}/0",
        "XR_LOG_LEVEL": "DEBUG",
    }
    with serving(env) as (base, output):
        assert httpx.get(f"{base}/ready", timeout=5).json()["redis"] == "unavailable"
        stored = httpx.post(f"{base}/v1/responses", json={"model": "local/echo", "input": "x"})
        assert stored.status_code == 200
        lookup = httpx.get(f"{base}/v1/responses/{stored.json()['id']}")
        assert lookup.status_code == 503 and password not in lookup.text
    assert "redis://***@127.0.0.1" in output[0]
    assert password not in output[0]


def _requests_total(metrics_text: str, route: str) -> float:
    prefix = f'xrouter_requests_total{{route="{route}"'
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith(prefix)
    )


def test_two_workers_add_up_on_one_metrics_page(redis_server: RedisServer, tmp_path: Path) -> None:
    """Each worker writes its figures to XR_METRICS_DIR; whichever worker answers /metrics adds
    the others' to its own, so every scrape gives the whole server's count."""
    env = {
        "XR_STORAGE": "redis",
        "XR_REDIS_URL": redis_server.url,
        "XR_LOG_LEVEL": "WARNING",
        "XR_METRICS_DIR": str(tmp_path),
        "XR_METRICS_FLUSH_S": "0.1",
    }
    (tmp_path / "worker-1.msgpack").write_bytes(b"a previous run's file")
    with serving(env, "--workers", "2") as (base, _):
        for turn in range(20):
            body = {"model": "local/echo", "input": f"turn {turn}", "store": False}
            assert httpx.post(f"{base}/v1/responses", json=body, timeout=10).status_code == 200
        deadline = time.monotonic() + 10
        totals: list[float] = []
        while len(totals) < 6:
            text = httpx.get(f"{base}/metrics", timeout=5).text
            total = _requests_total(text, "POST /v1/responses")
            if total == 20:
                totals.append(total)
            assert time.monotonic() < deadline, f"last total {total}"
            time.sleep(0.05)
        assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".msgpack") != []
        workers = [p for p in tmp_path.iterdir() if p.name.startswith("worker-")]
        assert len(workers) == 2, workers  # the previous run's file was cleared at start
