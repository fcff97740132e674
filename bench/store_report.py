"""The markdown for issue 10: the cost of storing responses (memory store vs Redis), and the
memory store's tails before and after it fills."""

from __future__ import annotations

import statistics

from loadgen import Recorder, percentile_ms
from store_bench import CONCURRENCY, FILL, VARIANTS, FillResult, StoreResult

NAME = "store"
FILL_NAME = "storefill"
ADDED_P50_TARGET_MS = 0.3
THROUGHPUT_RATIO_TARGET = 0.8


def _p(recorder: Recorder, q: float) -> float:
    return percentile_ms(recorder.latency_ns.get("json", []), q)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def added_p50_ms(result: StoreResult) -> float:
    """Median over repetitions of the Redis store's c=1 p50 minus the memory store's."""
    return _median([_p(r, 50) for r in result.serial["redis"]]) - _median(
        [_p(r, 50) for r in result.serial["memory"]]
    )


def throughput_ratio(result: StoreResult) -> float:
    rates = {v: _median([r.rate("json") for r in result.load[v]]) for v in VARIANTS}
    return rates["redis"] / rates["memory"]


def targets(result: StoreResult) -> list[str]:
    added, ratio = added_p50_ms(result), throughput_ratio(result)
    added_met = "met" if added <= ADDED_P50_TARGET_MS else "NOT met"
    return [
        f"added p50 at c=1, Redis vs memory store: {added:.3f} ms "
        f"(target <= {ADDED_P50_TARGET_MS}: {added_met})",
        f"throughput at c={CONCURRENCY}, Redis / memory store: {ratio:.0%} "
        f"(target >= {THROUGHPUT_RATIO_TARGET:.0%}: "
        f"{'met' if ratio >= THROUGHPUT_RATIO_TARGET else 'NOT met'})",
    ]


def render(result: StoreResult, lines: list[str]) -> list[str]:
    out = [
        "## Storing responses: memory store vs Redis (issue 10)",
        "",
        *lines,
        f"- Redis {result.redis_version} on loopback, no persistence. Every request is a stored "
        "non-stream `local/echo` response (`store` left at its default, true); "
        "runs interleaved memory, redis, memory, redis.",
        "",
        f"| run | c=1 p50 / p99 ms | c={CONCURRENCY} req/s | c={CONCURRENCY} p50 / p99 ms "
        "| CPU ms / request |",
        "|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        for index, (serial, load) in enumerate(
            zip(result.serial[variant], result.load[variant], strict=True)
        ):
            out.append(
                f"| {variant} store, run {index + 1} | {_p(serial, 50):.3f} / {_p(serial, 99):.3f} "
                f"| {load.rate('json'):.0f} | {_p(load, 50):.2f} / {_p(load, 99):.2f} "
                f"| {load.cpu_ms_per_request():.3f} |"
            )
    if result.unstored_serial is not None and result.unstored_load is not None:
        s, c = result.unstored_serial, result.unstored_load
        out.append(
            f"| not stored (`store: false`) | {_p(s, 50):.3f} / {_p(s, 99):.3f} "
            f"| {c.rate('json'):.0f} | {_p(c, 50):.2f} / {_p(c, 99):.2f} "
            f"| {c.cpu_ms_per_request():.3f} |"
        )
    out += ["", *(f"- {line}" for line in targets(result))]
    return out


def render_fill(result: FillResult, lines: list[str]) -> list[str]:
    (b1, b32), (a1, a32) = result.before, result.after
    return [
        "## The memory store's tails as it fills (issue 10)",
        "",
        *lines,
        f"- One gateway process, memory store (`XR_STORE_MAX_RESPONSES={FILL * 2}`): windows on "
        f"an empty store, then {FILL} more stored responses, then the same windows "
        f"({result.stored} stored in all, counting measured requests only). Peak RSS "
        f"{result.rss_mib:.0f} MiB.",
        "",
        "| window | c=1 p50 / p99 ms | c=32 req/s | c=32 p50 / p99 / max ms |",
        "|---|---|---|---|",
        *(
            f"| {label} | {_p(one, 50):.3f} / {_p(one, 99):.3f} | {many.rate('json'):.0f} "
            f"| {_p(many, 50):.2f} / {_p(many, 99):.2f} / {_p(many, 100):.2f} |"
            for label, one, many in (("empty store", b1, b32), ("after the fill", a1, a32))
        ),
    ]
