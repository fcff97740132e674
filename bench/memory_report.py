"""The markdown for issue 5's memory test: gateway RSS while relaying long streams."""

from __future__ import annotations

from memory_bench import (
    LENGTHS,
    PADDED,
    SAMPLE_S,
    SLOW_CHUNKS,
    SLOW_PAUSE_S,
    SLOW_RCVBUF,
    SLOW_READ,
    StreamRun,
)

NAME = "memory"
MIB = 1024 * 1024
# Buffering would add at least the bytes buffered; the verdict allows half of them, as the
# peak moves by a few MiB between identical runs (allocator).
BUFFERED_SHARE = 0.5


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _find(
    runs: list[StreamRun], api: str, chunks: int, pad: int = 0, client: str = "fast"
) -> StreamRun | None:
    for run in runs:
        if (run.api, run.chunks, run.pad, run.client) == (api, chunks, pad, client):
            return run
    return None


def _table(runs: list[StreamRun]) -> list[str]:
    header = ["API", "client", "content chunks", "text (MiB)", "upstream stream (MiB)",
              "to the client (MiB)", "client time (s)", "RSS before (MiB)",
              "peak RSS growth (MiB)", "growth per chunk (bytes)", "RSS after (MiB)",
              "gateway CPU per 1,000 chunks (ms)", "complete"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in runs:
        api = "/v1/chat/completions" if r.api == "chat" else "/v1/responses"
        pad = f" (+{r.pad} B padding each)" if r.pad else ""
        lines.append("| " + " | ".join([
            api, r.client, f"{r.chunks:,}{pad}", f"{r.text_bytes / MIB:.2f}",
            f"{r.upstream_bytes / MIB:.1f}", f"{r.client_bytes / MIB:.1f}", f"{r.client_s:.2f}",
            _mib(r.before_kib), _mib(r.growth_kib), f"{r.growth_kib * 1024 / r.chunks:.0f}",
            _mib(r.after_kib), f"{r.cpu_ms_per_1000_chunks:.1f}", "yes" if r.complete else "NO",
        ]) + " |")  # fmt: skip
    return lines


def cpu_per_1000_chunks(runs: list[StreamRun], api: str) -> float | None:
    """The gateway's CPU per 1,000 relayed chunks on the longest plain stream, fast client."""
    run = _find(runs, api, LENGTHS[-1])
    return None if run is None else run.cpu_ms_per_1000_chunks


def findings(runs: list[StreamRun]) -> list[str]:
    lines = []
    longest = LENGTHS[-1]
    for api in ("chat", "responses"):
        cpu = cpu_per_1000_chunks(runs, api)
        if cpu is not None:
            lines.append(
                f"- {api}: gateway CPU {cpu:.1f} ms per 1,000 relayed chunks ({longest:,}-chunk "
                f"stream, fast client)."
            )
    for api in ("chat", "responses"):
        steps = [r for c in LENGTHS if (r := _find(runs, api, c)) is not None]
        if not steps:
            continue
        last = steps[-1]
        per_chunk = last.growth_kib * 1024 / last.chunks
        lines.append(
            f"- {api}: peak growth "
            + ", ".join(f"{_mib(r.growth_kib)} MiB at {r.chunks:,}" for r in steps)
            + f" chunks. It grows with the length: {per_chunk:.0f} bytes per chunk at "
            f"{longest:,} chunks, against {last.text_bytes / last.chunks:.1f} bytes of text and "
            f"{last.upstream_bytes / last.chunks:.0f} bytes of upstream stream per chunk "
            f"({last.growth_kib * 1024 / max(last.text_bytes, 1):.1f}x the text, "
            f"{last.growth_kib * 1024 / last.upstream_bytes:.2f}x the upstream stream)."
        )
    plain, padded = _find(runs, "chat", PADDED[0]), _find(runs, "chat", *PADDED)
    if plain is not None and padded is not None:
        extra = padded.upstream_bytes - plain.upstream_bytes
        ok = padded.growth_kib - plain.growth_kib < BUFFERED_SHARE * extra / 1024
        lines.append(
            f"- Padded control (chat, {PADDED[0]:,} chunks): {extra / MIB:.1f} MiB more upstream "
            f"bytes, same text: growth {_mib(padded.growth_kib)} MiB against "
            f"{_mib(plain.growth_kib)} MiB -> the upstream stream is "
            f"**{'not buffered' if ok else 'BUFFERED'}** (buffering it would add about "
            f"{extra / MIB:.0f} MiB)."
        )
    for api in ("chat", "responses"):
        fast, slow = _find(runs, api, SLOW_CHUNKS), _find(runs, api, SLOW_CHUNKS, client="slow")
        if fast is None or slow is None:
            continue
        ok = slow.growth_kib - fast.growth_kib < BUFFERED_SHARE * slow.client_bytes / 1024
        lines.append(
            f"- Slow client ({api}, {SLOW_CHUNKS:,} chunks): read in {slow.client_s:.2f} s "
            f"instead of {fast.client_s:.2f} s; growth {_mib(slow.growth_kib)} MiB against "
            f"{_mib(fast.growth_kib)} MiB with the fast client -> backpressure "
            f"**{'holds' if ok else 'does NOT hold'}** (holding the "
            f"{slow.client_bytes / MIB:.1f} MiB answer would add at least that much)."
        )
    return lines


def render(runs: list[StreamRun], run_lines: list[str]) -> list[str]:
    """The section's lines (without markers)."""
    return [
        "## Memory while relaying a stream (issue 5)",
        "",
        *run_lines,
        f"- One stream at a time through the gateway (provider `up`, the fake upstream writing "
        f"as fast as it can), `stream: true` only (a non-stream answer is one object by "
        f"design); /v1/responses with `store: false`. The gateway's VmRSS is sampled every "
        f'{SAMPLE_S * 1000:.0f} ms from a thread of the client; "RSS before" and "RSS after" '
        f"are read once it has stopped moving. Growth = peak during the stream minus before. "
        f"Gateway CPU: its user + system time from sending the request to the settled RSS after, "
        f"divided by the content chunks. "
        f"One untimed {LENGTHS[0]:,}-chunk stream per API first (warm-up).",
        f"- Fast client: reads 64 KiB at a time, no pause. Slow client: SO_RCVBUF "
        f"{SLOW_RCVBUF // 1024} KiB, reads {SLOW_READ // 1024} KiB then sleeps "
        f"{SLOW_PAUSE_S * 1000:g} ms (at most about "
        f"{SLOW_READ / SLOW_PAUSE_S / 1e6:.1f} MB/s).",
        "",
        *_table(runs),
        "",
        *findings(runs),
    ]
