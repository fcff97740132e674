"""The analytics summary: request outcomes grouped into rows of counts, tokens and latencies.

Pure: the admin route and `xrouter usage` read the records from the analytics sink and hand
them here, so both print the same figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal, get_args

from msgspec import Struct

from xrouter.application.outcome import RequestOutcome

GroupBy = Literal["model", "provider", "day", "api", "status"]
GROUP_BY: Final[tuple[str, ...]] = get_args(GroupBy)
NONE_KEY: Final = "-"
"""The key of records without the grouped value (a request refused before routing)."""


class UsageRow(Struct, kw_only=True):
    """One group's figures. Latencies are in seconds; a percentile is None when no record
    of the group has the value (no first token: every request failed before one)."""

    key: str
    requests: int
    failed: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    duration_p50_s: float | None
    duration_p95_s: float | None


def _model(record: RequestOutcome) -> str:
    # A request that was never routed (unknown model, refused at ingest) still says what
    # was asked for: that is what an operator looks for.
    return record.model or record.model_requested or NONE_KEY


def _day(record: RequestOutcome) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(record.finished_at))


def _status(record: RequestOutcome) -> str:
    if record.status != "failed":
        return record.status
    return f"failed/{record.failed_stage or NONE_KEY}/{record.error_type or NONE_KEY}"


_KEYS: Final[dict[str, Callable[[RequestOutcome], str]]] = {
    "model": _model,
    "provider": lambda record: record.provider or NONE_KEY,
    "day": _day,
    "api": lambda record: record.api,
    "status": _status,
}


def summarize(records: Iterable[RequestOutcome], by: GroupBy) -> list[UsageRow]:
    """One row per value of `by`: the busiest first (days in date order)."""
    key_of = _KEYS[by]
    groups: dict[str, list[RequestOutcome]] = {}
    for record in records:
        groups.setdefault(key_of(record), []).append(record)
    rows = [row(key, group) for key, group in groups.items()]
    if by == "day":
        rows.sort(key=lambda r: r.key)
    else:
        rows.sort(key=lambda r: (-r.requests, r.key))
    return rows


def row(key: str, records: Sequence[RequestOutcome]) -> UsageRow:
    """The figures of `records` under `key` (also the total line: `row("total", all)`)."""
    ttft = sorted(r.ttft_s for r in records if r.ttft_s is not None)
    durations = sorted(r.duration_s for r in records)
    return UsageRow(
        key=key,
        requests=len(records),
        failed=sum(1 for r in records if r.status == "failed"),
        input_tokens=sum(r.input_tokens or 0 for r in records),
        output_tokens=sum(r.output_tokens or 0 for r in records),
        cached_tokens=sum(r.cached_tokens or 0 for r in records),
        reasoning_tokens=sum(r.reasoning_tokens or 0 for r in records),
        ttft_p50_s=percentile(ttft, 50),
        ttft_p95_s=percentile(ttft, 95),
        duration_p50_s=percentile(durations, 50),
        duration_p95_s=percentile(durations, 95),
    )


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest rank: a value some record really had (no interpolation between two)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


class UsageSummary(Struct, kw_only=True):
    """What `GET /admin/usage` answers and `xrouter usage` prints."""

    object: str = "usage.summary"
    since: float
    """Unix time (seconds) the records start at."""
    by: str
    sink: str
    """Where the records came from: `memory`, `redis` or `off`."""
    records: int
    cut: bool = False
    """True when there were more records than one read returns: the oldest were left out."""
    dropped: int | None = None
    """Records this process dropped (queue full) since it started; None when read directly."""
    failed: int | None = None
    """Records this process failed to write since it started; None when read directly."""
    rows: list[UsageRow]
    total: UsageRow


def summary(
    records: Sequence[RequestOutcome],
    by: GroupBy,
    *,
    since: float,
    sink: str,
    cut: bool = False,
    dropped: int | None = None,
    failed: int | None = None,
) -> UsageSummary:
    return UsageSummary(
        since=since,
        by=by,
        sink=sink,
        records=len(records),
        cut=cut,
        dropped=dropped,
        failed=failed,
        rows=summarize(records, by),
        total=row("total", records),
    )
