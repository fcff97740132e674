"""The incremental SSE parser: framing rules, chunk boundaries anywhere, linear work."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xrouter.adapters.providers.body_limits import LimitExceeded
from xrouter.adapters.providers.sse_reader import SSEEvent, SSEParser


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.close()


def test_data_events_and_event_names() -> None:
    raw = b'data: {"a":1}\n\nevent: response.created\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    assert parse(raw) == [
        SSEEvent(None, '{"a":1}'),
        SSEEvent("response.created", '{"b":2}'),
        SSEEvent(None, "[DONE]"),
    ]


def test_an_event_is_dispatched_by_its_blank_line_not_before() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: one\n") == []
    assert parser.feed(b"\n") == [SSEEvent(None, "one")]


def test_comments_are_skipped_anywhere() -> None:
    raw = (
        b": OPENROUTER PROCESSING\n\n"
        b"data: first\n"
        b": OPENROUTER PROCESSING\n"
        b"data: second line\n\n"
        b":\n\n"
    )
    assert parse(raw) == [SSEEvent(None, "first\nsecond line")]


def test_several_data_lines_are_joined_with_newlines() -> None:
    assert parse(b"data: a\ndata:\ndata: c\n\n") == [SSEEvent(None, "a\n\nc")]


def test_the_space_after_the_colon_is_optional_and_only_one_is_removed() -> None:
    assert parse(b"data:x\n\ndata:  y\n\nevent:e\ndata: z\n\n") == [
        SSEEvent(None, "x"),
        SSEEvent(None, " y"),
        SSEEvent("e", "z"),
    ]


def test_crlf_cr_and_lf_line_endings() -> None:
    expected = [SSEEvent("a", "1"), SSEEvent(None, "2")]
    assert parse(b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n") == expected
    assert parse(b"event: a\rdata: 1\r\rdata: 2\r\r") == expected
    assert parse(b"event: a\ndata: 1\n\ndata: 2\n\n") == expected
    assert parse(b"event: a\r\ndata: 1\r\rdata: 2\n\n") == expected


def test_a_crlf_split_between_chunks_is_one_line_break() -> None:
    # CR ends one chunk and LF starts the next: one line break, not a blank line between.
    assert parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [SSEEvent(None, "a\nb")]


def test_events_split_mid_line_and_mid_utf8_sequence() -> None:
    raw = "data: привет, 世界 🌍\n\n".encode()
    chunks = [raw[i : i + 1] for i in range(len(raw))]
    assert parse(*chunks) == [SSEEvent(None, "привет, 世界 🌍")]


def test_events_without_data_and_unknown_fields_are_dropped() -> None:
    raw = b"event: ping\n\nid: 7\nretry: 100\nfoo: bar\n\ndata: kept\nnonsense\n\n"
    assert parse(raw) == [SSEEvent(None, "kept")]


def test_event_name_resets_after_each_event() -> None:
    assert parse(b"event: a\ndata: 1\n\ndata: 2\n\n") == [SSEEvent("a", "1"), SSEEvent(None, "2")]


def test_a_field_without_colon_has_an_empty_value() -> None:
    assert parse(b"data\n\n") == [SSEEvent(None, "")]


def test_a_leading_byte_order_mark_is_ignored() -> None:
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent(None, "x")]


def test_close_flushes_a_last_event_without_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: last") == []
    assert parser.close() == [SSEEvent(None, "last")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert parse(b"data: a\xffb\n\n") == [SSEEvent(None, "a\ufffdb")]


def test_one_long_event_fed_in_many_small_chunks_costs_linear_time() -> None:
    payload = b"x" * 2_000_000
    raw = b"data: " + payload + b"\n\n"
    chunks = [raw[i : i + 64] for i in range(0, len(raw), 64)]
    parser = SSEParser()
    started = time.perf_counter()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    elapsed = time.perf_counter() - started
    assert events == [SSEEvent(None, payload.decode())]
    # Re-joining the buffer on every chunk would copy ~30 GB here; linear work takes well
    # under a second.
    assert elapsed < 2.0


def test_a_line_growing_past_the_event_limit_is_refused_before_it_is_kept() -> None:
    parser = SSEParser(max_event_bytes=100)
    assert parser.feed(b"data: " + b"x" * 90) == []  # 96 bytes pending: under the limit
    with pytest.raises(LimitExceeded) as caught:
        parser.feed(b"x" * 5)  # 101: refused while the line is still open
    assert (caught.value.limit, caught.value.setting) == (100, "MAX_EVENT_BYTES")


def test_a_complete_line_over_the_limit_in_one_chunk_is_refused() -> None:
    with pytest.raises(LimitExceeded):
        SSEParser(max_event_bytes=100).feed(b"data: " + b"x" * 200 + b"\n\n")


def test_the_limit_counts_every_data_line_of_one_event() -> None:
    parser = SSEParser(max_event_bytes=100)
    parser.feed(b"data: " + b"a" * 40 + b"\n" + b"data: " + b"b" * 40 + b"\n")
    with pytest.raises(LimitExceeded):
        parser.feed(b"data: " + b"c" * 8 + b"\n")  # 46 + 46 + 14 bytes


def test_the_limit_is_per_event_not_per_stream() -> None:
    frame = b"event: e\ndata: " + b"x" * 80 + b"\n\n"  # 94 bytes of fields, under 100
    parser = SSEParser(max_event_bytes=100)
    events = [event for _ in range(50) for event in parser.feed(frame)]
    assert len(events) == 50


def test_an_event_exactly_at_the_limit_passes() -> None:
    parser = SSEParser(max_event_bytes=100)
    assert parser.feed(b"data: " + b"x" * 94 + b"\n\n") == [SSEEvent(None, "x" * 94)]


_TEXT = st.text(
    alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]),
    max_size=30,
)
_EVENT = st.tuples(
    st.one_of(st.none(), _TEXT.filter(lambda name: name != "")),
    st.lists(_TEXT, min_size=1, max_size=4),
)


@given(
    events=st.lists(_EVENT, max_size=6),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    comment=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_split_of_a_stream_yields_the_same_events_as_the_whole(
    events: list[tuple[str | None, list[str]]], newline: str, comment: bool, cuts: list[int]
) -> None:
    text = ""
    for name, lines in events:
        if comment:
            text += ": OPENROUTER PROCESSING" + newline
        if name is not None:
            text += f"event: {name}{newline}"
        text += "".join(f"data: {line}{newline}" for line in lines) + newline
    raw = text.encode()
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    expected = [SSEEvent(name, "\n".join(lines)) for name, lines in events]
    assert parse(raw) == expected
    assert parse(*chunks) == expected
