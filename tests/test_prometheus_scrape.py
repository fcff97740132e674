"""A real Prometheus scrapes `GET /metrics` and its HTTP API returns the request count the test
sent (issue 11's acceptance). The first test checks the fixture itself against a static
exporter, so a failure of the second one is XRouter's, not the harness's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.prometheus_server import StartPrometheus, prometheus_processes, values
from tests.test_workers import serving

# Prometheus 2.42 applies discovered targets on a fixed 5 s tick, so the first sample lands
# 5-7 s after start (measured: 5.2-6.0 s); 15 s leaves room for one missed tick.
SCRAPE_TIMEOUT_S = 15.0

DEMO_EXPOSITION = (
    b"# HELP demo_requests_total Requests the demo exporter has seen.\n"
    b"# TYPE demo_requests_total counter\n"
    b"demo_requests_total 7\n"
)


class _DemoExporter(BaseHTTPRequestHandler):
    """Answers `GET /metrics` with a fixed exposition, like any exporter Prometheus knows."""

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(DEMO_EXPOSITION)))
        self.end_headers()
        self.wfile.write(DEMO_EXPOSITION)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per scrape would only bury a failure's output


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[StartPrometheus]:
    """`start(target, metrics_path="/metrics") -> PrometheusServer` (tests/prometheus_server.py)."""
    yield from prometheus_processes(tmp_path)


@pytest.fixture
def demo_exporter() -> Iterator[str]:
    """A static exporter on a free loopback port; yields its `host:port`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DemoExporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_prometheus_scrapes_a_static_exporter_and_answers_queries(
    prometheus: StartPrometheus, demo_exporter: str
) -> None:
    server = prometheus(demo_exporter, job="demo")

    result = server.wait_for("demo_requests_total", lambda r: r != [], SCRAPE_TIMEOUT_S)

    assert values(result) == [7.0]
    assert result[0]["metric"] == {
        "__name__": "demo_requests_total",
        "instance": demo_exporter,
        "job": "demo",
    }


def test_prometheus_counts_the_responses_requests_xrouter_served(
    prometheus: StartPrometheus,
) -> None:
    sent = 7
    with serving({"XR_LOG_LEVEL": "WARNING"}) as (base, _output):
        for _ in range(sent):
            response = httpx.post(
                f"{base}/v1/responses",
                json={"model": "local/echo", "input": "hi"},
                timeout=10,
            )
            assert response.status_code == 200, response.text
        metrics = httpx.get(f"{base}/metrics", timeout=5)
        assert metrics.status_code == 200, f"GET /metrics answered {metrics.status_code}"
        server = prometheus(base.removeprefix("http://"))

        promql = 'sum(xrouter_requests_total{route="POST /v1/responses"})'
        result = server.wait_for(promql, lambda r: values(r) == [float(sent)], SCRAPE_TIMEOUT_S)

        assert values(result) == [float(sent)]
        by_status = server.query(
            'sum by (status) (xrouter_requests_total{route="POST /v1/responses"})'
        )
        assert [series["metric"] for series in by_status] == [{"status": "200"}]
