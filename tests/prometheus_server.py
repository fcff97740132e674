"""A real Prometheus server for the tests: Debian's `prometheus` binary on a free loopback port,
scraping one target every second, queried through its HTTP API.

`.ci/run` installs the `prometheus` package when the binary is missing. Unlike Redis, a machine
without it skips these tests (issue 11 asks for that): the skip message names the package.

`prometheus_processes(directory)` is the fixture body (a test module wraps it in a fixture with
`yield from`, as conftest.py does for `gateway_processes`): it yields
`start(target, metrics_path="/metrics") -> PrometheusServer` and stops every server it started.
A server's log goes to a file in `directory`; every failure raised here carries its tail, since
"Prometheus never scraped" is only explained by what Prometheus logged.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

READY_TIMEOUT_S = 20.0
LOG_TAIL_CHARS = 4000

Result = list[dict[str, Any]]
StartPrometheus = Callable[..., "PrometheusServer"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _require_prometheus() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "prometheus is not installed (Debian package `prometheus`); .ci/run installs it"
        )
    return binary


def _config(job: str, target: str, metrics_path: str) -> str:
    """One job scraping `target` every second, so a test waits for at most one interval
    once the target is applied (Prometheus 2.42 applies targets on a 5 s tick after start).
    Prometheus reads YAML, and JSON is YAML: no YAML writer needed."""
    scrape = {
        "job_name": job,
        "metrics_path": metrics_path,
        "static_configs": [{"targets": [target]}],
    }
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [scrape],
    }
    return json.dumps(config, indent=2) + "\n"


def values(result: Result) -> list[float]:
    """The sample values of an instant-vector query result, in the API's order."""
    return [float(series["value"][1]) for series in result]


@dataclass
class PrometheusServer:
    """One `prometheus` process on 127.0.0.1:`port`; its output goes to `log_path`."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started_in_s: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """The tail of what Prometheus logged, for failure messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-LOG_TAIL_CHARS:]

    def wait_until_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.base_url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after {timeout_s} s:\n{self.log()}")
            time.sleep(0.05)

    def query(self, promql: str) -> Result:
        """An instant query through `/api/v1/query`: the result's series, each
        `{"metric": {labels}, "value": [time, "value"]}`."""
        response = httpx.get(f"{self.base_url}/api/v1/query", params={"query": promql}, timeout=5)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {response.status_code} {body}")
        result: Result = body["data"]["result"]
        return result

    def targets(self) -> Result:
        """The active scrape targets with their health and last error, for failure messages."""
        response = httpx.get(f"{self.base_url}/api/v1/targets", timeout=5)
        active: Result = response.json()["data"]["activeTargets"]
        return active

    def wait_for(
        self, promql: str, predicate: Callable[[Result], bool], timeout_s: float = 10.0
    ) -> Result:
        """Polls `promql` until `predicate(result)` holds; fails after `timeout_s` with the
        last result, the targets' scrape state and the log."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{promql!r} never satisfied the predicate in {timeout_s} s; last result "
                    f"{result}\ntargets: {self.targets()}\nprometheus log:\n{self.log()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def prometheus_processes(directory: Path) -> Iterator[StartPrometheus]:
    """Yields `start(target, metrics_path="/metrics", job="xrouter") -> PrometheusServer`
    (ready to query); stops every server it started afterwards."""
    binary = _require_prometheus()  # skip before the test starts anything else
    started: list[PrometheusServer] = []

    def start(
        target: str, metrics_path: str = "/metrics", job: str = "xrouter"
    ) -> PrometheusServer:
        home = directory / f"prometheus-{len(started)}"
        home.mkdir()
        config = home / "prometheus.yml"
        config.write_text(_config(job, target, metrics_path))
        port = _free_port()
        log_path = home / "prometheus.log"
        began = time.monotonic()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={home / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=home,
            )
        server = PrometheusServer(port, process, log_path)
        started.append(server)
        server.wait_until_ready()
        server.started_in_s = time.monotonic() - began
        return server

    try:
        yield start
    finally:  # also when the generator is closed rather than resumed, as outside pytest
        for server in started:
            server.stop()
