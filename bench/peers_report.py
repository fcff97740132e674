"""The markdown for issue 16's peer comparison: the table (medians of the repetitions), the
ratios XRouter/Portkey and XRouter/LiteLLM, the report-only XRouter rows, and the targets."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from peers import CONCURRENCY, EXTRAS, PEERS, REPETITIONS, Figures, PeerResult

NAME = "peers"
BUSY_LOAD = 0.5  # a 1-minute load average above this before the run: other work was running


@dataclass(frozen=True)
class Row:
    """One figure of the table: its label, how to print it, and whether lower is better."""

    label: str
    text: Callable[[Figures], str]
    value: Callable[[Figures], float]
    lower_is_better: bool = True


def _num(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


ROWS = (
    Row("added p50, non-stream, c=1", lambda f: f"{_num(f.added_p50_ms, 2)} ms",
        lambda f: f.added_p50_ms),
    Row(f"throughput, c={CONCURRENCY}, one core", lambda f: f"{_num(f.rps, 0)} req/s",
        lambda f: f.rps, lower_is_better=False),
    Row(f"p99 / p50 at c={CONCURRENCY}",
        lambda f: f"{_num(f.p99_ms, 1)} / {_num(f.p50_ms, 1)} ms", lambda f: f.p99_ms),
    Row("added first byte of a stream, c=1", lambda f: f"{_num(f.added_ttfb_ms, 2)} ms",
        lambda f: f.added_ttfb_ms),
    Row("CPU per 1,000 relayed stream chunks", lambda f: f"{_num(f.cpu_ms_per_1k_chunks, 1)} ms",
        lambda f: f.cpu_ms_per_1k_chunks),
    Row("start to first 200", lambda f: f"{_num(f.startup_s, 2)} s", lambda f: f.startup_s),
    Row("idle / peak RSS", lambda f: f"{_num(f.idle_rss_mib, 0)} / {_num(f.peak_rss_mib, 0)} MiB",
        lambda f: f.idle_rss_mib),
)  # fmt: skip


def _ratio(ours: float, theirs: float) -> str:
    if math.isnan(ours) or math.isnan(theirs) or theirs == 0:
        return "n/a"
    return f"{ours / theirs:.2f}x"


def table(result: PeerResult) -> list[str]:
    """Figure by gateway, then XRouter's ratio to each peer (for RSS: idle RSS)."""
    present = {n: f for n in PEERS if (f := result.median(n)) is not None}
    ours = present.get("XRouter")
    peers = [n for n in present if n != "XRouter"] if ours is not None else []
    head = ["figure", *present, *(f"XRouter / {p}" for p in peers)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        cells = [row.label, *(row.text(f) for f in present.values())]
        if ours is not None:
            cells += [_ratio(row.value(ours), row.value(present[p])) for p in peers]
        out.append("| " + " | ".join(cells) + " |")
    return out


def extras_table(result: PeerResult) -> list[str]:
    """XRouter's report-only rows (Redis storage, keys) next to its default."""
    rows = {n: f for n in ("XRouter", *EXTRAS) if (f := result.median(n)) is not None}
    if len(rows) < 2:
        return []
    out = ["| figure | " + " | ".join(rows) + " |", "|" + "---|" * (len(rows) + 1)]
    for row in ROWS:
        out.append(f"| {row.label} | " + " | ".join(row.text(f) for f in rows.values()) + " |")
    return out


def _check(ok: bool) -> str:
    return "met" if ok else "**missed**"


def targets(result: PeerResult) -> list[str]:
    """Issue 16's targets, each met or missed and by how much: against Portkey in this run, and
    the ratio targets also against LiteLLM; the absolute ones on XRouter's own figures."""
    ours = result.median("XRouter")
    if ours is None:
        return ["XRouter was not measured: no target can be checked."]
    lines = []
    for peer in ("Portkey", "LiteLLM"):
        theirs = result.median(peer)
        if theirs is None:
            lines.append(f"Against {peer}: not measured ({result.skipped.get(peer, '?')}).")
            continue
        pairs = (
            ("added p50 at c=1 <= 0.5x", ours.added_p50_ms, theirs.added_p50_ms, 0.5, True),
            (f"throughput at c={CONCURRENCY} >= 2x", ours.rps, theirs.rps, 2.0, False),
            ("CPU per 1,000 chunks <= 0.5x", ours.cpu_ms_per_1k_chunks,
             theirs.cpu_ms_per_1k_chunks, 0.5, True),
        )  # fmt: skip
        for label, a, b, bound, lower in pairs:
            ratio = a / b if b else math.nan
            ok = ratio <= bound if lower else ratio >= bound
            lines.append(
                f"{label} {peer}: {ratio:.2f}x, {_check(ok)}"
                + ("" if ok else f" (needs {bound * b:,.2f}, has {a:,.2f})")
            )
    spread = ours.p99_ms / ours.p50_ms
    absolute = (
        (f"p99 <= 2x p50 at c={CONCURRENCY}", f"{spread:.2f}x", spread <= 2.0),
        ("added first stream byte <= 1 ms", f"{ours.added_ttfb_ms:.2f} ms",
         ours.added_ttfb_ms <= 1.0),
        ("start to first 200 <= 0.5 s", f"{ours.startup_s:.2f} s", ours.startup_s <= 0.5),
        ("idle RSS <= 64 MiB", f"{ours.idle_rss_mib:.0f} MiB", ours.idle_rss_mib <= 64),
    )  # fmt: skip
    lines += [f"{label}: {value}, {_check(ok)}" for label, value, ok in absolute]
    return lines


def _repetitions(result: PeerResult) -> list[str]:
    """Every repetition's figures, so that the spread behind each median shows."""
    out = []
    for name, runs in result.runs.items():
        for row in ROWS:
            values = ", ".join(row.text(f) for f in runs)
            out.append(f"| {name} | {row.label} | {values} |")
    return ["| gateway | figure | repetitions |", "|---|---|---|", *out]


def render(result: PeerResult, run_lines: list[str]) -> list[str]:
    errors = {name: sum(f.errors for f in runs) for name, runs in result.runs.items()}
    busy = {name: max(f.client_busy for f in runs) for name, runs in result.runs.items()}
    out = [
        "## Peer comparison (issue 16)",
        "",
        *run_lines,
        f"- CPU steal during the run (all CPUs, /proc/stat): {result.steal:.1%}; the run took "
        f"{result.elapsed_s:.0f} s.",
        f"- Peers: {'; '.join(f'{k}: {v}' for k, v in result.versions.items())}. Installed "
        "into throwaway environments under ~/.cache/xrouter-bench by bench/peer_install.py "
        "(why these versions: its docstring).",
        f"- {REPETITIONS} repetitions, interleaved (each gateway started, measured and "
        "stopped in turn); each figure is the median of its repetitions. Requests: "
        "OpenAI-compatible chat completions to the same fake upstream (bench/fake_upstream.py); "
        "how each gateway is configured: bench/peer_gateways.py; what each figure is: "
        "bench/peers.py.",
        f"- Requests not answered 200 (or streams not complete): "
        f"{', '.join(f'{k} {v:.0f}' for k, v in errors.items())}. Load generator's busiest "
        f"share of its core at c={CONCURRENCY}: "
        f"{', '.join(f'{k} {v:.0%}' for k, v in busy.items())}.",
    ]
    if result.load_before > BUSY_LOAD:
        out.append(
            f"- **The machine was busy**: 1-minute load average {result.load_before:.2f} on "
            f"{os.cpu_count()} CPUs before the run started. Only the ratios within this run "
            "mean much; rerun on a quiet machine for absolute figures."
        )
    out += [f"- Not measured: {name}: {why}" for name, why in result.skipped.items()]
    out += [
        "- Configuration: XRouter as `xrouter serve` runs with nothing set (telemetry on: "
        "metrics and access log); Portkey as its README starts it (log console on), routed by "
        "its `x-portkey-provider` / `x-portkey-custom-host` headers; LiteLLM's proxy with a "
        "model list and a master key, LITELLM_LOCAL_MODEL_COST_MAP=True (no price-list "
        "download at start).",
        "",
        *table(result),
        "",
        "Ratio columns: XRouter's figure over the peer's (for p99 / p50: the p99s; for RSS: "
        "idle). Portkey's stream first byte includes a fixed 25 ms wait in its stream relay.",
        "",
        "Targets (issue 16, ratios within this one run):",
        "",
    ]
    out += [f"- {line}" for line in targets(result)]
    extras = extras_table(result)
    if extras:
        out += ["", "XRouter with Redis storage, and with `XR_AUTH=keys` (report only):", ""]
        out += extras
    out += ["", "Every repetition:", "", *_repetitions(result)]
    return out
