"""The markdown for issue 5: the gateway relaying to the fake upstream vs calling it directly."""

from __future__ import annotations

from collections.abc import Callable

from loadgen import Recorder, percentile_ms
from relay_bench import CONCURRENCY, GATEWAY_MODEL, UPSTREAM_MODEL, RelayResult

NAME = "upstream"
ADDED_P50_TARGET_MS = 1.5
THROUGHPUT_TARGET = 1000.0
ADDED_TTFB_TARGET_MS = 2.0
Cell = Callable[[str], str]  # column key -> table cell
COLUMNS = (("direct", "upstream directly"), ("gw_chat", "gateway, /v1/chat/completions"),
           ("gw_resp", "gateway, /v1/responses"))  # fmt: skip


def _p(r: Recorder, name: str, q: float, ttfb: bool = False) -> float:
    return percentile_ms((r.ttfb_ns if ttfb else r.latency_ns).get(name, []), q)


def _pp(r: Recorder, name: str, ttfb: bool = False) -> str:
    return f"{_p(r, name, 50, ttfb):.3f} / {_p(r, name, 99, ttfb):.3f}"


def added_p50(result: RelayResult, column: str, kind: str, ttfb: bool = False) -> float:
    """Gateway p50 minus direct p50 at c=1, in ms."""
    s = result.serial
    return _p(s, f"{column}_{kind}", 50, ttfb) - _p(s, f"direct_{kind}", 50, ttfb)


def _table(result: RelayResult) -> list[str]:
    s, c = result.serial, CONCURRENCY

    def row(label: str, cell: Cell) -> list[str]:
        return [label, *(cell(col) for col, _ in COLUMNS)]

    def added(kind: str, ttfb: bool = False) -> Cell:
        return lambda col: "" if col == "direct" else f"{added_p50(result, col, kind, ttfb):.3f}"

    def rate(kind: str) -> Cell:
        return lambda col: f"{result.load[f'{col}_{kind}'].rate(f'{col}_{kind}'):.0f}"

    def load_pp(kind: str, ttfb: bool = False) -> Cell:
        return lambda col: _pp(result.load[f"{col}_{kind}"], f"{col}_{kind}", ttfb)

    def gw_cpu(col: str) -> str:
        if col == "direct":
            return ""
        return " / ".join(
            f"{result.load[f'{col}_{k}'].cpu_ms_per_request():.3f}" for k in ("json", "sse")
        )

    def up_busy(col: str) -> str:
        return " / ".join(
            f"{result.upstream_cpu_s[f'{col}_{k}'] / result.load[f'{col}_{k}'].elapsed_s:.0%}"
            for k in ("json", "sse")
        )

    def client_busy(col: str) -> str:
        return " / ".join(f"{result.load[f'{col}_{k}'].client_busy:.0%}" for k in ("json", "sse"))

    rows = [
        row("JSON, c=1, p50 / p99 (ms)", lambda col: _pp(s, f"{col}_json")),
        row("JSON p50 added by the gateway, c=1 (ms)", added("json")),
        row("SSE whole stream, c=1, p50 / p99 (ms)", lambda col: _pp(s, f"{col}_sse")),
        row("SSE first byte, c=1, p50 / p99 (ms)", lambda col: _pp(s, f"{col}_sse", True)),
        row("SSE first byte p50 added by the gateway, c=1 (ms)", added("sse", True)),
        row(f"JSON, c={c}, req/s", rate("json")),
        row(f"JSON, c={c}, p50 / p99 (ms)", load_pp("json")),
        row(f"SSE, c={c}, streams/s", rate("sse")),
        row(f"SSE first byte, c={c}, p50 / p99 (ms)", load_pp("sse", True)),
        row(f"gateway CPU per request, c={c}, JSON / SSE (ms)", gw_cpu),
        row(f"upstream CPU busy, c={c}, JSON / SSE", up_busy),
        row(f"load generator CPU busy, c={c}, JSON / SSE", client_busy),
        row("answer body, JSON / SSE (bytes)",
            lambda col: f"{result.sizes[f'{col}_json']} / {result.sizes[f'{col}_sse']}"),
    ]  # fmt: skip
    header = ["", *(label for _, label in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _ratio_table(result: RelayResult) -> list[str]:
    """Each gateway column against calling the upstream directly, as ratios."""
    s, c = result.serial, CONCURRENCY

    def ratio(gateway: float, direct: float) -> str:
        return f"{gateway / direct:.2f}x" if direct else "n/a"

    def rate(col: str, kind: str) -> float:
        return result.load[f"{col}_{kind}"].rate(f"{col}_{kind}")

    header = ["gateway / direct", "JSON p50, c=1", "SSE whole-stream p50, c=1",
              "SSE first-byte p50, c=1", f"JSON p99, c={c}", f"JSON req/s, c={c}",
              f"SSE streams/s, c={c}"]  # fmt: skip
    rows = []
    for col, label in COLUMNS[1:]:
        json_p99 = result.load[f"{col}_json"], result.load["direct_json"]
        rows.append([
            label,
            ratio(_p(s, f"{col}_json", 50), _p(s, "direct_json", 50)),
            ratio(_p(s, f"{col}_sse", 50), _p(s, "direct_sse", 50)),
            ratio(_p(s, f"{col}_sse", 50, True), _p(s, "direct_sse", 50, True)),
            ratio(_p(json_p99[0], f"{col}_json", 99), _p(json_p99[1], "direct_json", 99)),
            ratio(rate(col, "json"), rate("direct", "json")),
            ratio(rate(col, "sse"), rate("direct", "sse")),
        ])  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def targets(result: RelayResult) -> list[str]:
    lines = []
    for col, label in COLUMNS[1:]:
        api = label.split(", ")[1]
        added = added_p50(result, col, "json")
        lines.append(
            f"- {api}: added p50 at c=1 {added:.3f} ms (gateway "
            f"{_p(result.serial, f'{col}_json', 50):.3f} ms minus direct "
            f"{_p(result.serial, 'direct_json', 50):.3f} ms) -> target <= "
            f"{ADDED_P50_TARGET_MS:g} ms **{_met(added <= ADDED_P50_TARGET_MS)}**."
        )
    for col, label in COLUMNS[1:]:
        api = label.split(", ")[1]
        rate = result.load[f"{col}_json"].rate(f"{col}_json")
        lines.append(
            f"- {api}: {rate:.0f} req/s at c={CONCURRENCY} (JSON) on one worker -> target >= "
            f"{THROUGHPUT_TARGET:,.0f} req/s "
            f"**{'met' if rate >= THROUGHPUT_TARGET else 'NOT met'}**."
        )
    for col, label in COLUMNS[1:]:
        api = label.split(", ")[1]
        added = added_p50(result, col, "sse", ttfb=True)
        lines.append(
            f"- {api}: added first-byte p50 for streams {added:.3f} ms -> target <= "
            f"{ADDED_TTFB_TARGET_MS:g} ms "
            f"**{'met' if added <= ADDED_TTFB_TARGET_MS else 'NOT met'}**."
        )
    lines.append(
        f"- Gateway peak RSS (VmHWM) over the whole run: {result.rss_mib:.1f} MiB (no target; "
        f"the fake upstream: {result.upstream_rss_mib:.1f} MiB)."
    )
    return lines


def render(result: RelayResult, run_lines: list[str]) -> list[str]:
    """The section's lines (without markers)."""
    return [
        "## Relaying to an upstream (issue 5)",
        "",
        *run_lines,
        f"- Upstream: bench/fake_upstream.py, a raw ASGI app on uvicorn (uvloop, httptools), "
        f"one worker, answering `POST /v1/chat/completions` with a fixed chat.completion "
        f"({result.sizes['direct_json']} bytes) or a chat.completion.chunk stream (role chunk, "
        f"9 content chunks, finish chunk, usage chunk, `data: [DONE]`; "
        f"{result.sizes['direct_sse']} bytes). The gateway: provider `up` "
        f"(`XR_UP_BASE_URL`, `XR_UP_API_KEY`, `XR_UP_MAX_RETRIES=0`, "
        f"`XR_UP_MAX_INFLIGHT=256`, `XR_DISCOVERY=false`), run as `xrouter serve` runs it, "
        f"model `{GATEWAY_MODEL}`; direct "
        f"calls send the same chat body with model `{UPSTREAM_MODEL}`; /v1/responses requests "
        f"send `store: false` (both APIs then do the same work besides the mapping).",
        f"- c=1: all six request kinds interleaved by one client (one keep-alive connection to "
        f"each server), so direct and gateway samples are taken at the same moments; "
        f"c={CONCURRENCY}: one phase per kind. Requests failed: {result.errors}.",
        "",
        *_table(result),
        "",
        "Against calling the upstream directly (latency: gateway / direct, lower is better; "
        "throughput: gateway / direct, higher is better):",
        "",
        *_ratio_table(result),
        "",
        "Targets (issue 5):",
        "",
        *targets(result),
    ]
