"""XRouter's own metric instruments: cheap to record, read only when a snapshot is taken.

Why not the OpenTelemetry SDK's instruments: `Histogram.record` costs ~11 µs there (attribute
dicts, locks, views, exemplar filters), and the whole telemetry budget of a request is ~50 µs.
Here a measurement is a dict lookup by the tuple of label values, a `bisect` into the bucket
bounds and one or two in-place additions; nothing is allocated after a series is first seen
(beyond the float a Python addition makes). The SDK is used only to export (`otlp_metrics.py`),
Prometheus reads the same snapshots (`prometheus.py`), and workers share theirs through files
(`metric_files.py`).

Names are OpenTelemetry names (`gen_ai.client.token.usage`), labels OpenTelemetry attribute
names (`gen_ai.provider.name`); a measurement gives its label values as a tuple in the order of
the instrument's `labels`.

Instruments are meant for one event loop: `add`/`record` are not atomic against a thread doing
the same on the same series (an update could be lost, never corrupt the registry), and a
snapshot taken from another thread copies each series table in one C-level call first.
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import Literal

from msgspec import Struct

log = logging.getLogger("xrouter.metrics")

Kind = Literal["counter", "gauge", "histogram"]
Observation = tuple[tuple[str, ...], float]

DEFAULT_MAX_SERIES = 2_000
OVERFLOW_VALUE = "_other"

# Bucket bounds advised by the OpenTelemetry GenAI semantic conventions (seconds / tokens):
# LLM latencies span milliseconds (a cached first token) to minutes (a long reasoning answer).
OPERATION_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TIME_TO_FIRST_TOKEN_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TIME_PER_OUTPUT_TOKEN_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
TOKEN_USAGE_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip


class Series(Struct, frozen=True, array_like=True, gc=False):
    """One label set's state. Counters and gauges use `value`; histograms use `bucket_counts`
    (per bucket, not cumulative: one more than the bounds, the last is above every bound) and
    `sum`. array_like keeps the worker files small; gc=False because nothing here can cycle."""

    labels: tuple[str, ...]
    value: int | float = 0
    bucket_counts: tuple[int, ...] = ()
    sum: int | float = 0

    @property
    def count(self) -> int:
        return sum(self.bucket_counts)


class MetricFamily(Struct, frozen=True, gc=False):
    """One instrument as of a snapshot: its definition and every series it has seen."""

    name: str
    description: str
    unit: str
    kind: Kind
    labels: tuple[str, ...]
    series: tuple[Series, ...]
    bounds: tuple[float, ...] = ()


class MetricsSnapshot(Struct, frozen=True):
    """Every instrument of one process (or a merge of several) at `taken_ns` (Unix time, ns).
    `pid` is the writer's, so a reader can tell a dead worker's gauges from a live one's."""

    pid: int
    taken_ns: int
    families: tuple[MetricFamily, ...]


class Counter:
    """A monotonic sum per label set. Values must not be negative (not checked: the hot path
    pays for no check a caller can do once)."""

    def __init__(self, family: _Definition, max_series: int) -> None:
        self._definition = family
        self._cells: dict[tuple[str, ...], int | float] = {}
        self._limit = _SeriesLimit(family, max_series)

    def add(self, value: float, labels: tuple[str, ...]) -> None:
        cells = self._cells
        try:
            cells[labels] += value
        except KeyError:
            key = self._limit.admit(labels, len(cells))
            cells[key] = cells.get(key, 0) + value

    @property
    def overflowed(self) -> int:
        """Measurements that went to the overflow series because the series limit was met."""
        return self._limit.overflowed

    def family(self) -> MetricFamily:
        series = tuple(Series(labels, value) for labels, value in tuple(self._cells.items()))
        return self._definition.family(series)


class Histogram:
    """Explicit-bucket histogram per label set: a value lands in the first bucket whose bound
    is >= the value (Prometheus `le` semantics), or in the last one above every bound."""

    def __init__(self, family: _Definition, max_series: int) -> None:
        self._definition = family
        self._bounds = family.bounds
        # A cell is [count per bucket..., sum]: one list, updated in place.
        self._cells: dict[tuple[str, ...], list[float]] = {}
        self._limit = _SeriesLimit(family, max_series)

    def record(self, value: float, labels: tuple[str, ...]) -> None:
        cell = self._cells.get(labels)
        if cell is None:
            cell = self._new_cell(labels)
        cell[bisect_left(self._bounds, value)] += 1
        cell[-1] += value

    def _new_cell(self, labels: tuple[str, ...]) -> list[float]:
        key = self._limit.admit(labels, len(self._cells))
        cell = self._cells.get(key)
        if cell is None:
            cell = [0] * (len(self._bounds) + 1)
            cell.append(0)  # the sum: stays an int while only ints are recorded
            self._cells[key] = cell
        return cell

    @property
    def overflowed(self) -> int:
        """Measurements that went to the overflow series because the series limit was met."""
        return self._limit.overflowed

    def family(self) -> MetricFamily:
        series = tuple(
            Series(labels, bucket_counts=tuple(int(n) for n in cell[:-1]), sum=cell[-1])
            for labels, cell in tuple(self._cells.items())
        )
        return self._definition.family(series)


class _Observed:
    """An instrument read from a callback at snapshot time (in-flight gauges, store counters).
    A failing callback loses its family for that snapshot, never the whole scrape."""

    def __init__(
        self,
        family: _Definition,
        callback: Callable[[], Iterable[Observation]],
        max_series: int,
    ) -> None:
        self._definition = family
        self._callback = callback
        self._limit = _SeriesLimit(family, max_series)

    def family(self) -> MetricFamily:
        cells: dict[tuple[str, ...], int | float] = {}
        try:
            for labels, value in self._callback():
                key = labels if labels in cells else self._limit.admit(labels, len(cells))
                cells[key] = cells.get(key, 0) + value
        except Exception:
            log.exception("metric callback for %s failed; its series are left out", self._name)
            cells = {}
        return self._definition.family(tuple(Series(k, v) for k, v in cells.items()))

    @property
    def _name(self) -> str:
        return self._definition.name


class _Definition(Struct, frozen=True):
    name: str
    description: str
    unit: str
    kind: Kind
    labels: tuple[str, ...]
    bounds: tuple[float, ...] = ()

    def family(self, series: tuple[Series, ...]) -> MetricFamily:
        return MetricFamily(
            self.name, self.description, self.unit, self.kind, self.labels, series, self.bounds
        )


class _SeriesLimit:
    """The cardinality bound of one instrument. Label values come from clients (a model name,
    for one), so an attacker could otherwise grow memory without bound with made-up values:
    past `max_series` label sets, any new one is recorded under a single overflow series whose
    every label is "_other" (OpenTelemetry's cardinality-limit idea, with Prometheus-friendly
    labels). The first overflow is logged once per instrument at WARNING; `overflowed` counts
    the measurements sent there. Runs only the first time a label set is seen (and, past the
    limit, for every measurement of an unseen one)."""

    def __init__(self, definition: _Definition, max_series: int) -> None:
        self._definition = definition
        self._max_series = max_series
        self.overflow = (OVERFLOW_VALUE,) * len(definition.labels)
        self.overflowed = 0

    def admit(self, labels: tuple[str, ...], known: int) -> tuple[str, ...]:
        """The key to record `labels` under, given `known` series so far."""
        expected = self._definition.labels
        if type(labels) is not tuple or len(labels) != len(expected):
            raise ValueError(
                f"metric {self._definition.name} takes a tuple of {len(expected)} label values "
                f"{expected}, got {labels!r}"
            )
        if not all(type(value) is str for value in labels):
            raise TypeError(
                f"metric {self._definition.name}: label values must be str, got {labels!r}"
            )
        # One series is kept free for the overflow, so the table never exceeds max_series.
        if known < self._max_series - 1:
            return labels
        if self.overflowed == 0:
            log.warning(
                "metric %s reached %d series; further label sets are recorded as %r",
                self._definition.name,
                self._max_series,
                OVERFLOW_VALUE,
            )
        self.overflowed += 1
        return self.overflow


class MetricsRegistry:
    """Creates instruments and takes snapshots of them. Registering the same name again with
    the same definition returns the existing instrument (wiring may run twice); a different
    definition under a taken name is a programming error."""

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES, pid: int | None = None) -> None:
        if max_series < 2:
            raise ValueError("max_series must be at least 2 (one series is the overflow)")
        self._max_series = max_series
        self._pid = os.getpid() if pid is None else pid
        self._instruments: dict[str, tuple[_Definition, Counter | Histogram | _Observed]] = {}

    def counter(self, name: str, description: str, unit: str, labels: tuple[str, ...]) -> Counter:
        definition = _Definition(name, description, unit, "counter", tuple(labels))
        instrument = self._existing(definition)
        if instrument is None:
            instrument = Counter(definition, self._max_series)
            self._instruments[name] = (definition, instrument)
        if not isinstance(instrument, Counter):
            raise TypeError(f"metric {name} is registered but is not a counter")
        return instrument

    def histogram(
        self,
        name: str,
        description: str,
        unit: str,
        labels: tuple[str, ...],
        buckets: Sequence[float],
    ) -> Histogram:
        # Bounds keep their type: CPython compares int with int (token counts) and float with
        # float (seconds) on a fast path, int with float on a slow one (~40 % of a record).
        bounds = tuple(buckets)
        if not all(type(bound) in (int, float) for bound in bounds):
            raise TypeError(f"histogram {name}: bucket bounds must be int or float")
        if not bounds or any(a >= b for a, b in pairwise(bounds)):
            raise ValueError(f"histogram {name}: buckets must be non-empty and increasing")
        if bounds[-1] == float("inf"):
            bounds = bounds[:-1]  # +Inf is implied: the last bucket is above every bound
        definition = _Definition(name, description, unit, "histogram", tuple(labels), bounds)
        instrument = self._existing(definition)
        if instrument is None:
            instrument = Histogram(definition, self._max_series)
            self._instruments[name] = (definition, instrument)
        if not isinstance(instrument, Histogram):
            raise TypeError(f"metric {name} is registered but is not a histogram")
        return instrument

    def observe(
        self,
        name: str,
        description: str,
        unit: str,
        kind: Literal["counter", "gauge"],
        labels: tuple[str, ...],
        callback: Callable[[], Iterable[Observation]],
    ) -> None:
        """Registers an instrument whose values `callback` gives when a snapshot is taken:
        (label values, value) pairs; a counter's values are running totals, not increments.
        The callback runs on the snapshot path only, so it may walk a structure."""
        definition = _Definition(name, description, unit, kind, tuple(labels))
        if name in self._instruments:
            raise ValueError(f"metric {name} is already registered")
        self._instruments[name] = (definition, _Observed(definition, callback, self._max_series))

    def snapshot(self) -> MetricsSnapshot:
        families = tuple(instrument.family() for _, instrument in self._instruments.values())
        return MetricsSnapshot(self._pid, time.time_ns(), families)

    def _existing(self, definition: _Definition) -> Counter | Histogram | _Observed | None:
        registered = self._instruments.get(definition.name)
        if registered is None:
            return None
        if registered[0] != definition:
            raise ValueError(
                f"metric {definition.name} is already registered as {registered[0]!r}, "
                f"not {definition!r}"
            )
        return registered[1]


def merge(snapshots: Sequence[MetricsSnapshot]) -> MetricsSnapshot:
    """Adds several processes' snapshots series by series (same name, same label values):
    counters, gauges, histogram buckets, sums and counts are summed. The result carries the
    first snapshot's pid (put your own first) and the latest time. A family whose definition
    differs from the first one seen under its name (a worker of another version during a
    rolling restart, say) is left out with a warning rather than mixed in."""
    if not snapshots:
        return MetricsSnapshot(os.getpid(), time.time_ns(), ())
    definitions: dict[str, MetricFamily] = {}
    tables: dict[str, dict[tuple[str, ...], Series]] = {}
    for snapshot in snapshots:
        for family in snapshot.families:
            first = definitions.get(family.name)
            if first is None:
                definitions[family.name] = family
                tables[family.name] = {series.labels: series for series in family.series}
                continue
            if (first.kind, first.labels, first.bounds, first.unit) != (
                family.kind,
                family.labels,
                family.bounds,
                family.unit,
            ):
                log.warning(
                    "metric %s from pid %d differs from the first definition; left out",
                    family.name,
                    snapshot.pid,
                )
                continue
            table = tables[family.name]
            for series in family.series:
                known = table.get(series.labels)
                table[series.labels] = series if known is None else _add(known, series)
    families = tuple(
        MetricFamily(
            family.name,
            family.description,
            family.unit,
            family.kind,
            family.labels,
            tuple(tables[name].values()),
            family.bounds,
        )
        for name, family in definitions.items()
    )
    return MetricsSnapshot(
        snapshots[0].pid, max(snapshot.taken_ns for snapshot in snapshots), families
    )


def _add(a: Series, b: Series) -> Series:
    return Series(
        a.labels,
        a.value + b.value,
        tuple(x + y for x, y in zip(a.bucket_counts, b.bucket_counts, strict=True)),
        a.sum + b.sum,
    )
