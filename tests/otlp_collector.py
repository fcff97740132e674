"""A small fake OpenTelemetry Collector: OTLP/HTTP protobuf on loopback, decoded for asserts.

Accepts POST /v1/traces and /v1/metrics (gzip-compressed or not), keeps each decoded request,
and lets a test wait for them. `stop()` closes the listening socket, so exporters see
connection refused, the way a dead collector looks (a connection kept alive from before is
closed at its next request); `start()` listens again on the same port.
`status` makes it answer with an error (503 triggers the exporter's retries).
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class FakeOtlpCollector:
    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.changed = threading.Condition()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeOtlpCollector:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def spans(self) -> list[Any]:
        """Every span received so far, flattened across requests, resources and scopes."""
        with self.changed:
            return [
                span
                for request in self.traces
                for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans
            ]

    def wait_for(self, predicate: Callable[[FakeOtlpCollector], bool], timeout_s: float) -> bool:
        """Wait (bounded) until `predicate(self)` holds; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
            return True

    def _receive(self, path: str, body: bytes, headers: dict[str, str]) -> bytes | None:
        if path == "/v1/traces":
            traces = ExportTraceServiceRequest.FromString(body)
            response: bytes = ExportTraceServiceResponse().SerializeToString()
            with self.changed:
                self.traces.append(traces)
                self.headers.append(headers)
                self.changed.notify_all()
            return response
        if path == "/v1/metrics":
            metrics = ExportMetricsServiceRequest.FromString(body)
            response = ExportMetricsServiceResponse().SerializeToString()
            with self.changed:
                self.metrics.append(metrics)
                self.headers.append(headers)
                self.changed.notify_all()
            return response
        return None


def _handler_for(collector: FakeOtlpCollector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if collector._server is None:  # stopped: a kept-alive connection dies too
                self.close_connection = True
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if collector.status != 200:
                self._answer(collector.status, b"")
                return
            headers = {key.lower(): value for key, value in self.headers.items()}
            response = collector._receive(self.path, body, headers)
            if response is None:
                self._answer(404, b"")
            else:
                self._answer(200, response)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
