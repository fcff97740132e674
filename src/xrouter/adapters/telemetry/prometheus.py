"""A metrics snapshot in the Prometheus text exposition format (0.0.4).

Names follow OpenTelemetry's Prometheus compatibility rules, so a dashboard built for another
OTel-instrumented GenAI service finds the same names here: characters outside
`[a-zA-Z0-9_:]` become `_` (runs collapsed), the unit becomes a suffix (`s` -> `_seconds`,
`By` -> `_bytes`, `{token}`-style annotations dropped, `1` -> `_ratio` on gauges only), and
counters end in `_total`. Histograms are `_bucket{le=...}` (cumulative, ending at `+Inf`),
`_sum` and `_count`.
"""

from __future__ import annotations

import math
import re

from xrouter.adapters.telemetry.metrics import MetricFamily, MetricsSnapshot, Series

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]+")
_ANNOTATION = re.compile(r"\{[^}]*\}")
_UNDERSCORES = re.compile(r"__+")

# UCUM units as the OTel specification (and the Collector's translator) spell them out.
_UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tebibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "%": "percent",
}
_PER_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}


def render_prometheus(snapshot: MetricsSnapshot) -> bytes:
    """The whole exposition, one family after another in the snapshot's order."""
    lines: list[str] = []
    for family in snapshot.families:
        _render_family(family, lines)
    return ("\n".join(lines) + "\n").encode() if lines else b""


def prometheus_name(name: str, unit: str, kind: str) -> str:
    """The Prometheus metric name of an OTel instrument (without `_bucket`/`_sum`/`_count`)."""
    base = _sanitize_name(name)
    suffix = _unit_suffix(unit, kind)
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if kind == "counter" and not base.endswith("_total"):
        base += "_total"
    return base


def prometheus_label(name: str) -> str:
    """An OTel attribute name as a Prometheus label name (`gen_ai.provider.name` ->
    `gen_ai_provider_name`); a leading digit gets `key_`, and a leading `__` (reserved for
    Prometheus itself) gets `key` in front."""
    label = _INVALID_LABEL.sub("_", name)
    if not label or label[0].isdigit():
        return "key_" + label
    if label.startswith("__"):
        return "key" + label
    return label


def _render_family(family: MetricFamily, lines: list[str]) -> None:
    name = prometheus_name(family.name, family.unit, family.kind)
    lines.append(f"# HELP {name} {_escape_help(family.description)}")
    lines.append(f"# TYPE {name} {family.kind}")
    label_names = tuple(prometheus_label(label) for label in family.labels)
    if family.kind != "histogram":
        for series in family.series:
            lines.append(f"{name}{_labels(label_names, series.labels)} {_number(series.value)}")
        return
    bounds = (*(_number(bound) for bound in family.bounds), "+Inf")
    for series in family.series:
        _render_histogram(name, label_names, bounds, series, lines)


def _render_histogram(
    name: str,
    label_names: tuple[str, ...],
    bounds: tuple[str, ...],
    series: Series,
    lines: list[str],
) -> None:
    # The label pairs are escaped once per series, not once per bucket line: a scrape of a
    # few hundred series has thousands of bucket lines.
    pairs = _pairs(label_names, series.labels)
    prefix = f"{name}_bucket{{{pairs}," if pairs else f"{name}_bucket{{"
    cumulative = 0
    for bound, count in zip(bounds, series.bucket_counts, strict=True):
        cumulative += count
        lines.append(f'{prefix}le="{bound}"}} {cumulative}')
    labels = f"{{{pairs}}}" if pairs else ""
    lines.append(f"{name}_sum{labels} {_number(series.sum)}")
    lines.append(f"{name}_count{labels} {cumulative}")


def _sanitize_name(name: str) -> str:
    sanitized = _INVALID_NAME.sub("_", name)
    sanitized = _UNDERSCORES.sub("_", sanitized)
    if not sanitized or sanitized[0].isdigit():
        sanitized = "_" + sanitized
    return sanitized


def _unit_suffix(unit: str, kind: str) -> str:
    unit = _ANNOTATION.sub("", unit).strip()
    if unit == "1":
        return "ratio" if kind == "gauge" else ""
    if not unit:
        return ""
    main, _, per = unit.partition("/")
    words = [_UNITS.get(main, main)] if main else []
    if per:
        words += ["per", _PER_UNITS.get(per, per)]
    return _sanitize_name("_".join(words)).strip("_")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    pairs = _pairs(names, values)
    return "{" + pairs + "}" if pairs else ""


def _pairs(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(
        f'{name}="{_escape_value(value)}"' for name, value in zip(names, values, strict=True)
    )


def _escape_value(value: str) -> str:
    if "\\" not in value and '"' not in value and "\n" not in value:
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """Integers as integers (token counts read as counts); floats as Go's ParseFloat reads
    them (`+Inf`, `-Inf`, `NaN`, repr otherwise)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
