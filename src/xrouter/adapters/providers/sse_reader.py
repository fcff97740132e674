"""An incremental parser of server-sent events, fed with bytes exactly as they come off the wire.

It follows the WHATWG event-stream rules: UTF-8, lines ended by CRLF, LF or CR; lines starting
with `:` are comments (OpenRouter's `: OPENROUTER PROCESSING` keep-alives); `field: value` with
one optional space after the colon; several `data:` lines of one event joined with "\\n"; a
blank line dispatches the event; an event without data is dropped. `id:` and `retry:` are
ignored: no upstream we call resumes streams.

Lines are split as bytes (CR and LF never occur inside a UTF-8 sequence) and decoded once
complete, so chunks may split an event anywhere, even inside a line or a UTF-8 sequence, and
sizes are counted in bytes. Work is linear in the input: each chunk is scanned once, and a
partial line is kept as a list of pieces joined only when its end arrives.

One event may hold at most `max_event_bytes` (its field lines, without line breaks). The
parser checks before it keeps a piece of a line, so an upstream that sends one endless line
costs the limit plus one chunk, not whatever it sends: over the limit, `feed` raises
`LimitExceeded`.

One deviation, on purpose: `close()` dispatches an event whose blank line never came (the spec
drops it). The transport calls `close()` only after a clean end of the body, so the event is
complete as the upstream meant it; some upstreams omit the last blank line.
"""

from __future__ import annotations

import re

from msgspec import Struct

from xrouter.adapters.providers.body_limits import DEFAULT_MAX_EVENT_BYTES, LimitExceeded

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class SSEEvent(Struct, frozen=True, gc=False):
    """One server-sent event: its `event:` name (None when absent) and its joined data.
    (A Struct, not a NamedTuple: made once per upstream chunk, and a NamedTuple's Python-level
    constructor was a visible share of the relay's CPU.)"""

    event: str | None
    data: str


class SSEParser:
    """Turns a stream of byte chunks into `SSEEvent`s: `feed()` each chunk, `close()` at the end."""

    __slots__ = (
        "_data",
        "_event",
        "_event_size",
        "_first_line",
        "_has_data",
        "_limit",
        "_partial",
        "_partial_size",
        "_skip_lf",
    )

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._limit = max_event_bytes
        self._partial: list[bytes] = []
        """Pieces of the current, unfinished line."""
        self._partial_size = 0
        self._skip_lf = False
        """The last chunk ended with CR: a LF starting the next one belongs to that CRLF."""
        self._first_line = True
        self._event: bytes | None = None
        self._data: list[bytes] = []
        self._has_data = False
        self._event_size = 0
        """Bytes of the kept lines of the current event."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by `chunk` (often none, sometimes several).

        Raises LimitExceeded when the current event would grow past `max_event_bytes`."""
        events: list[SSEEvent] = []
        if not chunk:
            return events
        if self._skip_lf:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\r" not in chunk:
            return self._feed_lf(chunk, events)
        start = 0
        for match in _LINE_BREAK.finditer(chunk):
            end = match.start()
            if self._partial:
                self._check(self._partial_size + end - start)
                self._partial.append(chunk[start:end])
                line = b"".join(self._partial)
                self._partial.clear()
                self._partial_size = 0
            else:
                self._check(end - start)
                line = chunk[start:end]
            self._line(line, events)
            start = match.end()
        if start < len(chunk):
            size = self._partial_size + len(chunk) - start
            self._check(size)
            self._partial.append(chunk[start:])
            self._partial_size = size
        elif chunk.endswith(b"\r"):
            self._skip_lf = True
        return events

    def _feed_lf(self, chunk: bytes, events: list[SSEEvent]) -> list[SSEEvent]:
        """`feed` for a chunk without CR (what every upstream we know sends): a split at C
        speed instead of a regex scan, which was the parser's largest cost on long streams."""
        lines = chunk.split(b"\n")
        tail = lines.pop()  # after the last LF: the start of a line (b"" when none)
        if lines and self._partial:
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
        if lines and self._first_line:  # its BOM: the general path
            first = lines.pop(0)
            self._check(len(first))
            self._line(first, events)
        # The two lines of nearly every event (`data: ...`, then blank) inline, with the
        # event's state in locals: two method calls per line were a visible share of the
        # relay's CPU (issue 16). Any other line goes through `_line`, state written back.
        data = self._data
        size = self._event_size
        has_data = self._has_data
        limit = self._limit
        for line in lines:
            length = len(line)
            if size + length > limit:
                raise LimitExceeded("one server-sent event", limit, "MAX_EVENT_BYTES")
            if line.startswith(b"data: "):
                data.append(line[6:])
                has_data = True
                size += length
            elif not line:
                if has_data:
                    name = None if self._event is None else _text(self._event)
                    raw = data[0] if len(data) == 1 else b"\n".join(data)
                    events.append(SSEEvent(name, raw.decode("utf-8", "replace")))
                    data.clear()
                    has_data = False
                self._event = None
                size = 0
            else:
                self._event_size, self._has_data = size, has_data
                self._line(line, events)
                size, has_data = self._event_size, self._has_data
        self._event_size, self._has_data = size, has_data
        if tail:
            size = self._partial_size + len(tail)
            self._check(size)
            self._partial.append(tail)
            self._partial_size = size
        return events

    def close(self) -> list[SSEEvent]:
        """Flush at the end of the stream: a last line and event without their line breaks."""
        events: list[SSEEvent] = []
        if self._partial:
            line = b"".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
            self._line(line, events)
        self._line(b"", events)
        return events

    def _check(self, line_size: int) -> None:
        if self._event_size + line_size > self._limit:
            raise LimitExceeded("one server-sent event", self._limit, "MAX_EVENT_BYTES")

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[len(_BOM) :]
        if not line:
            if self._has_data:
                name = None if self._event is None else _text(self._event)
                events.append(SSEEvent(name, _text(b"\n".join(self._data))))
            self._event = None
            self._data.clear()
            self._has_data = False
            self._event_size = 0
            return
        if line.startswith(b"data: "):  # nearly every line: no partition, one copy
            self._data.append(line[6:])
            self._has_data = True
            self._event_size += len(line)
            return
        if line.startswith(b":"):
            return
        field, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            self._data.append(value)
            self._has_data = True
            self._event_size += len(line)
        elif field == b"event":
            self._event = value or None
            self._event_size += len(line)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")
