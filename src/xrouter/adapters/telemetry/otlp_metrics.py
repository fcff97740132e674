"""A metrics snapshot as the OpenTelemetry SDK's `MetricsData`, for an OTLP exporter.

XRouter records with its own instruments (`metrics.py`) and uses the SDK only here, off the
request path: `OTLPMetricExporter().export(to_metrics_data(...))` sends what `/metrics` shows.
Everything is cumulative since `start_ns` (the process start), as the snapshot is.
"""

from __future__ import annotations

from typing import cast

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from xrouter.adapters.telemetry.metrics import MetricFamily, MetricsSnapshot, Series

# OTLP's histogram min and max are optional and we do not track them (two comparisons per
# measurement for a figure a cumulative histogram rarely needs); the protobuf encoder leaves
# a None field unset, though the SDK's dataclass is annotated float.
_UNSET = cast(float, None)


def to_metrics_data(
    snapshot: MetricsSnapshot,
    resource: Resource,
    scope_name: str,
    start_ns: int,
    now_ns: int,
) -> MetricsData:
    """Counters -> monotonic cumulative `Sum`, gauges -> `Gauge`, histograms -> `Histogram`
    with explicit bounds, cumulative. Label values become attribute dicts. Families with no
    series are left out (OTLP has no use for a metric without points)."""
    metrics = [_metric(family, start_ns, now_ns) for family in snapshot.families if family.series]
    scope = ScopeMetrics(scope=InstrumentationScope(scope_name), metrics=metrics, schema_url="")
    return MetricsData(
        resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope], schema_url="")]
    )


def _metric(family: MetricFamily, start_ns: int, now_ns: int) -> Metric:
    data: Sum | Gauge | Histogram
    if family.kind == "histogram":
        data = Histogram(
            data_points=[
                _histogram_point(family, series, start_ns, now_ns) for series in family.series
            ],
            aggregation_temporality=AggregationTemporality.CUMULATIVE,
        )
    elif family.kind == "gauge":
        data = Gauge(
            data_points=[
                NumberDataPoint(_attributes(family, series), 0, now_ns, series.value)
                for series in family.series
            ]
        )
    else:
        data = Sum(
            data_points=[
                NumberDataPoint(_attributes(family, series), start_ns, now_ns, series.value)
                for series in family.series
            ],
            aggregation_temporality=AggregationTemporality.CUMULATIVE,
            is_monotonic=True,
        )
    return Metric(name=family.name, description=family.description, unit=family.unit, data=data)


def _histogram_point(
    family: MetricFamily, series: Series, start_ns: int, now_ns: int
) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes=_attributes(family, series),
        start_time_unix_nano=start_ns,
        time_unix_nano=now_ns,
        count=series.count,
        sum=series.sum,
        bucket_counts=list(series.bucket_counts),
        explicit_bounds=list(family.bounds),
        min=_UNSET,
        max=_UNSET,
    )


def _attributes(family: MetricFamily, series: Series) -> dict[str, str]:
    return dict(zip(family.labels, series.labels, strict=True))
