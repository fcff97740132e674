"""`GET /metrics`: the Prometheus text exposition of every worker's metrics (XR_METRICS).

At the root, like the probes, not under the API prefixes. With several workers the answering
worker adds up its own figures and the others' last written ones (XR_METRICS_DIR, at most
XR_METRICS_FLUSH_S old), so any worker gives the whole process group's totals.
"""

from __future__ import annotations

from litestar import Response as HTTPResponse
from litestar import get
from litestar.handlers import HTTPRouteHandler

from xrouter.adapters.telemetry.prometheus import PROMETHEUS_CONTENT_TYPE
from xrouter.entrypoints.telemetry_runtime import Telemetry


def build_metrics_routes(telemetry: Telemetry) -> list[HTTPRouteHandler]:
    if telemetry.metrics is None:
        return []

    @get(
        "/metrics",
        summary="Metrics in the Prometheus text format",
        description="OpenTelemetry GenAI metrics and the gateway's own (docs/observability.md).",
        include_in_schema=True,
    )
    async def metrics() -> HTTPResponse[bytes]:
        return HTTPResponse(telemetry.prometheus_text(), media_type=PROMETHEUS_CONTENT_TYPE)

    return [metrics]
