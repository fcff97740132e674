"""Which telemetry the environment asks for: metrics (XR_METRICS), traces and OTLP export
(the standard OTEL_* variables), and the objects that record them.

- Metrics are on by default and served at `GET /metrics`; with OTEL_EXPORTER_OTLP_ENDPOINT (or
  OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) they are also pushed over OTLP every
  OTEL_METRIC_EXPORT_INTERVAL ms, unless OTEL_METRICS_EXPORTER=none.
- Traces are recorded when there is somewhere to send them: an OTLP endpoint
  (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), unless
  OTEL_TRACES_EXPORTER=none. Sampling: OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default
  parentbased_always_on). Batching: OTEL_BSP_*.
- OTEL_SDK_DISABLED=true turns traces and OTLP export off (`/metrics` stays: XR_METRICS).
- OTEL_SERVICE_NAME (default `xrouter`) and OTEL_RESOURCE_ATTRIBUTES name the resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from xrouter import __version__
from xrouter.entrypoints.env_fields import ConfigError

CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


@dataclass(frozen=True, slots=True)
class TelemetryChoice:
    """What to record and where to send it, decided from the environment alone."""

    traces: bool
    otlp_metrics: bool
    capture_content: bool
    service_name: str


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("true", "1", "yes", "on")


def _exporter(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "otlp").strip().lower() or "otlp"
    if value not in ("otlp", "none"):
        raise ConfigError(
            f"{name}={value!r} is not supported: XRouter exports with `otlp` (HTTP/protobuf) "
            "or not at all (`none`); Prometheus needs no exporter, it scrapes GET /metrics."
        )
    return value


def telemetry_choice(environ: Mapping[str, str]) -> TelemetryChoice:
    disabled = _flag(environ, "OTEL_SDK_DISABLED")
    endpoint = bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())

    def wanted(kind: str) -> bool:
        if disabled or _exporter(environ, f"OTEL_{kind}_EXPORTER") == "none":
            return False
        return endpoint or bool(environ.get(f"OTEL_EXPORTER_OTLP_{kind}_ENDPOINT", "").strip())

    return TelemetryChoice(
        traces=wanted("TRACES"),
        otlp_metrics=wanted("METRICS"),
        capture_content=_flag(environ, CAPTURE_CONTENT),
        service_name=environ.get("OTEL_SERVICE_NAME", "").strip() or "xrouter",
    )


def service_resource(choice: TelemetryChoice) -> object:
    """The OTel SDK resource (service name and version, plus OTEL_RESOURCE_ATTRIBUTES).
    Imported here: only export needs the SDK."""
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": choice.service_name, "service.version": __version__})


def check_protocols(environ: Mapping[str, str], choice: TelemetryChoice) -> None:
    """OTLP over HTTP/protobuf is what XRouter sends; refuse anything else with what to do."""
    for signal, wanted in (("TRACES", choice.traces), ("METRICS", choice.otlp_metrics)):
        protocol = (
            environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if wanted and protocol != "http/protobuf":
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: XRouter exports "
                "OTLP over http/protobuf only (the gRPC exporter is not included); point "
                "OTEL_EXPORTER_OTLP_ENDPOINT at the collector's OTLP/HTTP port, usually 4318."
            )
