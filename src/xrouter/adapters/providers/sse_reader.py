"""An incremental parser of server-sent events, fed with bytes exactly as they come off the wire.

It follows the WHATWG event-stream rules: UTF-8, lines ended by CRLF, LF or CR; lines starting
with `:` are comments (OpenRouter's `: OPENROUTER PROCESSING` keep-alives); `field: value` with
one optional space after the colon; several `data:` lines of one event joined with "\\n"; a
blank line dispatches the event; an event without data is dropped. `id:` and `retry:` are
ignored: no upstream we call resumes streams.

Chunks may split an event anywhere, even inside a line or a UTF-8 sequence. Work is linear in
the input: each chunk is scanned once, and a partial line is kept as a list of pieces joined
only when its end arrives.

One deviation, on purpose: `close()` dispatches an event whose blank line never came (the spec
drops it). The transport calls `close()` only after a clean end of the body, so the event is
complete as the upstream meant it; some upstreams omit the last blank line.
"""

from __future__ import annotations

import codecs
import re
from typing import NamedTuple

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class SSEEvent(NamedTuple):
    """One server-sent event: its `event:` name (None when absent) and its joined data."""

    event: str | None
    data: str


class SSEParser:
    """Turns a stream of byte chunks into `SSEEvent`s: `feed()` each chunk, `close()` at the end."""

    __slots__ = (
        "_data",
        "_decoder",
        "_event",
        "_has_data",
        "_partial",
        "_skip_lf",
        "_started",
    )

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial: list[str] = []
        """Pieces of the current, unfinished line."""
        self._skip_lf = False
        """The last chunk ended with CR: a LF starting the next one belongs to that CRLF."""
        self._started = False
        self._event: str | None = None
        self._data: list[str] = []
        self._has_data = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by `chunk` (often none, sometimes several)."""
        return self._feed_text(self._decoder.decode(chunk))

    def close(self) -> list[SSEEvent]:
        """Flush at the end of the stream: a last line and event without their line breaks."""
        events = self._feed_text(self._decoder.decode(b"", final=True))
        if self._partial:
            line = "".join(self._partial)
            self._partial.clear()
            self._line(line, events)
        self._line("", events)
        return events

    def _feed_text(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not text:
            return events
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        start = 0
        for match in _LINE_BREAK.finditer(text):
            piece = text[start : match.start()]
            if self._partial:
                self._partial.append(piece)
                piece = "".join(self._partial)
                self._partial.clear()
            self._line(piece, events)
            start = match.end()
        if start < len(text):
            self._partial.append(text[start:])
        elif text.endswith("\r"):
            self._skip_lf = True
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            if self._has_data:
                events.append(SSEEvent(self._event, "\n".join(self._data)))
            self._event = None
            self._data.clear()
            self._has_data = False
            return
        if line.startswith(":"):
            return
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "event":
            self._event = value or None
