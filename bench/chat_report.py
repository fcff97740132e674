"""The markdown for issue 4: Chat Completions beside Responses, and the mapping's own cost."""

from __future__ import annotations

from dataclasses import dataclass

from chat_bench import CONCURRENCY, ChatResult
from loadgen import Recorder, percentile_ms

NAME = "chat"


def _p(r: Recorder, name: str, q: float, ttfb: bool = False) -> float:
    return percentile_ms((r.ttfb_ns if ttfb else r.latency_ns).get(name, []), q)


def _pp(r: Recorder, name: str, ttfb: bool = False) -> str:
    return f"{_p(r, name, 50, ttfb):.3f} / {_p(r, name, 99, ttfb):.3f}"


def _us(ms: float) -> str:
    return f"{ms * 1000:+.0f} µs"


def _cpu_us(r: Recorder) -> float:
    return r.cpu_ms_per_request() * 1000


@dataclass(frozen=True, slots=True)
class Comparison:
    """chat minus responses for one request kind, the A/A noise, and what the in-process
    timings predict, all in µs."""

    label: str
    c1_delta: float  # p50 at c=1
    c1_noise: float  # |p50 of the repeated responses request - p50 of the first|
    cpu_delta: float  # server CPU per request at c=32
    cpu_noise: float  # |difference between the two halves of the responses phase|
    mapping: float  # to_canonical + to_chat_completion (or the ChunkMapper over the stream)
    codec: float  # chat minus responses for decoding the body and encoding the answer

    @property
    def explained(self) -> float:
        return self.mapping + self.codec

    def within(self, delta: float, noise: float) -> bool:
        return delta <= self.explained + noise


def comparisons(result: ChatResult) -> list[Comparison]:
    us, s = result.mapping["us"], result.serial
    decode = us["decode_chat_request"] - us["decode_responses_request"]
    out = []
    for kind, label in (("json", "JSON (non-stream)"), ("sse", "SSE (stream)")):
        resp, chat = f"resp_{kind}", f"chat_{kind}"
        halves = result.halves[resp]
        if kind == "json":
            mapping = us["to_canonical"] + us["to_chat_completion"]
            codec = decode + us["encode_chat_completion"] - us["encode_response"]
        else:
            mapping = us["to_canonical_stream"] + us["chunk_mapper_stream"]
            codec = decode + us["frame_chat_stream"] - us["frame_responses_stream"]
        out.append(
            Comparison(
                label=label,
                c1_delta=(_p(s, chat, 50) - _p(s, resp, 50)) * 1000,
                c1_noise=abs(_p(s, resp + "_again", 50) - _p(s, resp, 50)) * 1000,
                cpu_delta=_cpu_us(result.load(chat)) - _cpu_us(result.load(resp)),
                cpu_noise=abs(_cpu_us(halves[0]) - _cpu_us(halves[1])),
                mapping=mapping,
                codec=codec,
            )
        )
    return out


def _http_table(result: ChatResult) -> list[str]:
    s, c = result.serial, CONCURRENCY
    load = {name: result.load(name) for name in result.halves}

    def aa(name: str, ttfb: bool = False) -> str:
        return _us(_p(s, name + "_again", 50, ttfb) - _p(s, name, 50, ttfb))

    def rate(name: str) -> float:
        return load[name].rate(name)

    def rate_aa(name: str) -> str:
        a, b = (h.rate(name) for h in result.halves[name])
        return f"{(b - a) / a:+.1%}" if a else "n/a"

    def cpu_aa(name: str) -> str:
        a, b = (_cpu_us(h) for h in result.halves[name])
        return f"{b - a:+.1f} µs"

    rows = [
        ["JSON, c=1, p50 / p99 (ms)", _pp(s, "resp_json"), _pp(s, "chat_json"),
         _us(_p(s, "chat_json", 50) - _p(s, "resp_json", 50)), aa("resp_json")],
        ["SSE whole stream, c=1, p50 / p99 (ms)", _pp(s, "resp_sse"), _pp(s, "chat_sse"),
         _us(_p(s, "chat_sse", 50) - _p(s, "resp_sse", 50)), aa("resp_sse")],
        ["SSE first byte, c=1, p50 / p99 (ms)", _pp(s, "resp_sse", True),
         _pp(s, "chat_sse", True),
         _us(_p(s, "chat_sse", 50, True) - _p(s, "resp_sse", 50, True)),
         aa("resp_sse", True)],
        [f"JSON, c={c}, req/s", f"{rate('resp_json'):.0f}", f"{rate('chat_json'):.0f}",
         f"{(rate('chat_json') - rate('resp_json')) / rate('resp_json'):+.1%}",
         rate_aa("resp_json")],
        [f"SSE, c={c}, streams/s", f"{rate('resp_sse'):.0f}", f"{rate('chat_sse'):.0f}",
         f"{(rate('chat_sse') - rate('resp_sse')) / rate('resp_sse'):+.1%}",
         rate_aa("resp_sse")],
        [f"server CPU per JSON request, c={c} (µs)", f"{_cpu_us(load['resp_json']):.1f}",
         f"{_cpu_us(load['chat_json']):.1f}",
         f"{_cpu_us(load['chat_json']) - _cpu_us(load['resp_json']):+.1f} µs",
         cpu_aa("resp_json")],
        [f"server CPU per SSE request, c={c} (µs)", f"{_cpu_us(load['resp_sse']):.1f}",
         f"{_cpu_us(load['chat_sse']):.1f}",
         f"{_cpu_us(load['chat_sse']) - _cpu_us(load['resp_sse']):+.1f} µs",
         cpu_aa("resp_sse")],
        ["answer body, JSON / SSE (bytes)",
         f"{result.sizes['resp_json']} / {result.sizes['resp_sse']}",
         f"{result.sizes['chat_json']} / {result.sizes['chat_sse']}", "", ""],
    ]  # fmt: skip
    header = ["", "/v1/responses", "/v1/chat/completions", "chat minus responses",
              "A/A: responses minus responses"]  # fmt: skip
    return _table(header, rows)


def _mapping_table(result: ChatResult) -> list[str]:
    us = result.mapping["us"]
    events, chunks = result.mapping["events"], result.mapping["chunks"]
    rows = [
        ["`Codec.decode_chat_request` (chat body)", us["decode_chat_request"]],
        ["`Codec.decode_response_request` (responses body, for comparison)",
         us["decode_responses_request"]],
        ["`chat_mapping.to_canonical` (non-stream request)", us["to_canonical"]],
        ["`chat_mapping.to_canonical` (stream request)", us["to_canonical_stream"]],
        ["`chat_mapping.to_chat_completion`", us["to_chat_completion"]],
        ["`Codec.encode` of the chat.completion", us["encode_chat_completion"]],
        ["`Codec.encode` of the Response (for comparison)", us["encode_response"]],
        [f"`ChunkMapper.map` over one stream ({events} events -> {chunks} chunks)",
         us["chunk_mapper_stream"]],
        ["`ChunkMapper.map`, per event", us["chunk_mapper_stream"] / events],
        [f"`SSEWriter.chat_frame` over the {chunks} chunks", us["frame_chat_stream"]],
        [f"`SSEWriter.frame` over the {events} events (for comparison)",
         us["frame_responses_stream"]],
    ]  # fmt: skip
    return _table(["function (in-process, median of 7 loops)", "µs per call"],
                  [[name, f"{value:.2f}"] for name, value in rows])  # fmt: skip


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _verdicts(result: ChatResult) -> list[str]:
    lines = []
    for cmp in comparisons(result):
        for what, delta, noise in (
            ("p50 at c=1", cmp.c1_delta, cmp.c1_noise),
            (f"server CPU per request at c={CONCURRENCY}", cmp.cpu_delta, cmp.cpu_noise),
        ):
            verdict = "within" if cmp.within(delta, noise) else "NOT within"
            lines.append(
                f"- {cmp.label}, {what}: chat minus responses {delta:+.1f} µs; the mapping "
                f"explains {cmp.mapping:.1f} µs, codec differences {cmp.codec:+.1f} µs (total "
                f"{cmp.explained:+.1f} µs); A/A noise {noise:.1f} µs -> **{verdict}** what the "
                "mapping explains plus noise."
            )
    return lines


def render(result: ChatResult, run_lines: list[str]) -> list[str]:
    """The section's lines (without markers)."""
    return [
        "## Chat Completions beside Responses (issue 4)",
        "",
        *run_lines,
        f"- Requests: `POST /v1/responses` (`store: false`) and `POST /v1/chat/completions` "
        f"(one user message; streams ask `stream_options.include_usage`), model `local/echo`, "
        f"the same input text. c=1: all six request kinds interleaved on one keep-alive "
        f"connection; c={CONCURRENCY}: one phase per kind, run twice at half the duration, "
        f"alternating the APIs. A/A: the responses request repeated under a second name (c=1) "
        f"or its two half-phases compared (c={CONCURRENCY}): the noise of the comparison.",
        f"- Requests failed: {result.errors}; peak RSS {result.rss_mib:.1f} MiB.",
        "",
        *_http_table(result),
        "",
        "The adapter's own work, timed in-process (`bench/mapping_cost.py`) on the same "
        "request and on the gateway's own answer:",
        "",
        *_mapping_table(result),
        "",
        'Is the HTTP-level difference within what the mapping explains? ("codec differences": '
        "decoding the chat body instead of the responses body, and encoding chat chunks or a "
        "chat.completion instead of Responses events or a Response, which is cheaper for chat)",
        "",
        *_verdicts(result),
    ]
