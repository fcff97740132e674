"""The markdown for issue 12: what gateway keys with limits cost on Redis, with the targets:
added p50 at c=1 <= 0.3 ms and c=32 throughput >= 85 % of XR_AUTH=none."""

from __future__ import annotations

import math

from auth_bench import CONCURRENCY, KEY_LIMITS, MODEL, ROUNDS, VARIANTS, AuthResult, VariantResult
from loadgen import Recorder, merged, percentile_ms

NAME = "auth"
ADDED_P50_TARGET_MS = 0.3
THROUGHPUT_RATIO_TARGET = 0.85


def _p(recorder: Recorder, q: float) -> float:
    return percentile_ms(recorder.latency_ns.get("json", []), q)


def _serial(runs: VariantResult) -> Recorder:
    return merged(runs.serial)


def _load(runs: VariantResult) -> Recorder:
    return merged(runs.load)


def added_p50_ms(result: AuthResult) -> float:
    """`keys`' c=1 p50 over all its samples minus `none`'s (interleaved request by request,
    so the two saw the same machine)."""
    keys, none = result.variants["keys"], result.variants["none"]
    return _p(_serial(keys), 50) - _p(_serial(none), 50)


def throughput_ratio(result: AuthResult) -> float:
    """`keys`' c=32 req/s over all its slices, over the same for `none`."""
    keys, none = result.variants["keys"], result.variants["none"]
    return _load(keys).rate("json") / _load(none).rate("json")


def _round_spread(result: AuthResult) -> tuple[str, str]:
    """Per round: the added p50 and the throughput ratio, as "min .. max" texts."""
    keys, none = result.variants["keys"], result.variants["none"]
    added = [_p(a, 50) - _p(b, 50) for a, b in zip(keys.serial, none.serial, strict=True)]
    ratios = [a.rate("json") / b.rate("json") for a, b in zip(keys.load, none.load, strict=True)]
    return (
        f"{min(added):+.3f} .. {max(added):+.3f} ms",
        f"{min(ratios):.0%} .. {max(ratios):.0%}",
    )


def targets(result: AuthResult) -> list[str]:
    """The two targets, met or not and by how much (the margin to the target)."""
    added, ratio = added_p50_ms(result), throughput_ratio(result)
    added_range, ratio_range = _round_spread(result)
    added_met = "met" if added <= ADDED_P50_TARGET_MS else "NOT met"
    ratio_met = "met" if ratio >= THROUGHPUT_RATIO_TARGET else "NOT met"
    return [
        f"added p50 at c=1, `keys` over `none`: {added:+.3f} ms (per round {added_range}; "
        f"target <= {ADDED_P50_TARGET_MS} ms: **{added_met}**, "
        f"{abs(ADDED_P50_TARGET_MS - added):.3f} ms {'under' if added_met == 'met' else 'over'})",
        f"throughput at c={CONCURRENCY}, `keys` / `none`: {ratio:.1%} (per round {ratio_range}; "
        f"target >= {THROUGHPUT_RATIO_TARGET:.0%}: **{ratio_met}**, "
        f"{abs(ratio - THROUGHPUT_RATIO_TARGET) * 100:.1f} points "
        f"{'above' if ratio_met == 'met' else 'under'})",
    ]


def _per_request_ms(seconds: float, recorder: Recorder) -> float:
    count = recorder.count("json")
    return seconds * 1000 / count if count else math.nan


def _variant_rows(result: AuthResult) -> list[str]:
    none = result.variants["none"]
    none_p50, none_rate = _p(_serial(none), 50), _load(none).rate("json")
    none_cpu = _load(none).cpu_ms_per_request()
    rows = [
        f"| variant | c=1 p50 / p99 ms | added c=1 p50 ms | c={CONCURRENCY} req/s | of `none` "
        f"| c={CONCURRENCY} p50 / p99 ms | gateway CPU ms / req, c=1 | gateway CPU ms / req, "
        f"c={CONCURRENCY} | added gateway CPU ms / req | redis-server CPU ms / req, "
        f"c={CONCURRENCY} | Redis commands / req, c={CONCURRENCY} "
        f"| requests answered 200 (c=1 + c={CONCURRENCY}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        runs = result.variants[variant]
        serial, load = _serial(runs), _load(runs)
        rows.append(
            f"| {variant} | {_p(serial, 50):.3f} / {_p(serial, 99):.3f} "
            f"| {_p(serial, 50) - none_p50:+.3f} | {load.rate('json'):.0f} "
            f"| {load.rate('json') / none_rate:.0%} | {_p(load, 50):.2f} / {_p(load, 99):.2f} "
            f"| {serial.cpu_ms_per_request():.3f} | {load.cpu_ms_per_request():.3f} "
            f"| {load.cpu_ms_per_request() - none_cpu:+.3f} "
            f"| {_per_request_ms(runs.redis_cpu_s, load):.3f} | {_redis_calls(runs)} "
            f"| {serial.count('json') + load.count('json')} |"
        )
    return rows


def _redis_calls(runs: VariantResult) -> str:
    """Redis commands per request over the c=32 slices, by command ("info" is the bench's own
    reading of the counts, left out)."""
    count = _load(runs).count("json")
    calls = {k: v for k, v in runs.redis_calls.items() if k != "info" and v > 0}
    if not count or not calls:
        return "-"
    parts = [f"{name} {n / count:.2f}" for name, n in sorted(calls.items(), key=lambda c: -c[1])]
    return f"{sum(calls.values()) / count:.2f} ({', '.join(parts)})"


def _round_rows(result: AuthResult) -> list[str]:
    header = " / ".join(VARIANTS)
    rows = [
        f"| round | c=1 p50 ms: {header} | c={CONCURRENCY} req/s: {header} |",
        "|---|---|---|",
    ]
    for index in range(ROUNDS):
        p50s = " / ".join(f"{_p(result.variants[v].serial[index], 50):.3f}" for v in VARIANTS)
        rates = " / ".join(f"{result.variants[v].load[index].rate('json'):.0f}" for v in VARIANTS)
        rows.append(f"| {index + 1} | {p50s} | {rates} |")
    return rows


def render(result: AuthResult, lines: list[str]) -> list[str]:
    removed = ", ".join(result.removed_env) if result.removed_env else "none"
    limits = " ".join(KEY_LIMITS)
    return [
        "## Gateway keys with limits against no access control, on Redis (issue 12)",
        "",
        *lines,
        f"- Redis {result.redis_version} on loopback, no persistence, one redis-server for "
        "both gateways. Requests: non-stream `POST /v1/responses`, model "
        f"`{MODEL}` (the local provider: no upstream), `store` left at its default (true), so "
        "every response is saved in Redis too (XR_STORAGE=redis).",
        "- Variants, one gateway process each, both running side by side on CPU 0: `none` "
        "XR_AUTH=none, no key sent; `keys` XR_AUTH=keys with XR_AUTH_SECRET and one key "
        f"({result.key_id}) made before the gateways start by `xrouter keys create bench "
        f"{limits} --json` on the same Redis, its secret sent as `Authorization: Bearer`: "
        "every limit on (each request authenticated, admitted by the limiter's Lua script, a "
        "concurrency lease taken and released, tokens charged), none ever reached. Other "
        "settings at their defaults (metrics and the access log on, for both). Settings "
        f"inherited from the shell and removed first: {removed}.",
        f"- Checked: before measuring, `keys` answered {result.unauthenticated_status} to a "
        "request without the key and 200 with it, with `x-ratelimit-limit-requests: "
        f"{result.limit_header}`; every measured request answered 200 ({result.errors} did not; "
        "any 401 or 429 would have stopped the run as invalid).",
        f"- CPU time taken by the hypervisor while measuring (steal, `/proc/stat`, both CPUs): "
        f"{result.steal:.0%}. This is a virtual machine: its host can take its CPUs while its "
        "load average says it is idle, and a run with much steal is slower throughout.",
        "- Interleaved, so that other load on a shared machine falls on both alike: at c=1 one "
        "keep-alive connection to each gateway, requests alternating none, keys (keys, none "
        f"every other round); at c={CONCURRENCY} one slice per gateway per round, "
        f"{ROUNDS} rounds.",
        "- CPU: the gateway process's user + system time (`/proc`) over its share of the "
        "phase, per request; redis-server's over each gateway's c=32 slices, per request. "
        "Redis commands: the calls of each command (`INFO commandstats`) over the same slices, "
        "per request (a Lua script is one `evalsha`).",
        "",
        *_variant_rows(result),
        "",
        f"Per round (c=1 p50 of each variant's share of the round; c={CONCURRENCY} req/s of its "
        "slice):",
        "",
        *_round_rows(result),
        "",
        *(f"- {line}" for line in targets(result)),
    ]
