"""Tool calls that older Yandex models print as text, recovered as function calls.

Two shapes are recognised, and only for a function the request declared (so a code block in
an ordinary answer stays text):

- a fenced block whose info string is the function's name: ```get_weather {"city": "Oslo"}```
  (the arguments on the same line or the next ones);
- `[TOOL_CALL_START]get_weather\n{"city": "Oslo"}[TOOL_CALL_END]`.

Streaming stays live: text is passed on as it comes, except from an opening marker to its
closing one, which is held until the block is complete and then turned into a call (a
declared name with a JSON object of arguments) or passed on as the text it was. A held block
that never closes is text at the end. Pure, no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

FENCE = "```"
CALL_START = "[TOOL_CALL_START]"
CALL_END = "[TOOL_CALL_END]"
_OPENERS = (FENCE, CALL_START)
_CLOSER = {FENCE: FENCE, CALL_START: CALL_END}
_FENCED = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*(\{.*\})\s*", re.DOTALL)
_TAGGED = re.compile(r"\s*([A-Za-z_][\w.-]*)[ \t]*(?:\n(.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PrintedCall:
    """A function call found in the text: its name and its arguments (a JSON object)."""

    name: str
    arguments: str


Piece = str | PrintedCall


def _arguments(raw: str) -> str | None:
    """`raw` when it is a JSON object (the only arguments a function takes), else None."""
    raw = raw.strip() or "{}"
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return raw if isinstance(value, dict) else None


class PrintedToolCalls:
    """Splits one answer's text into text and printed calls; feed each delta, then `finish`."""

    def __init__(self, tool_names: frozenset[str]) -> None:
        self._names = tool_names
        self._held = ""  # text from an opening marker (or a possible start of one) on
        self._searched = 0  # how much of a held block was already searched for its closer

    def feed(self, text: str) -> list[Piece]:
        """What can be passed on now that `text` arrived, in order."""
        if not self._names:
            return [text] if text else []
        self._held += text
        pieces: list[Piece] = []
        while self._held:
            opener, start = self._opener()
            if opener is None:
                keep = self._partial_marker()
                if len(self._held) > keep:
                    pieces.append(self._held[: len(self._held) - keep])
                    self._held = self._held[len(self._held) - keep :]
                break
            if start:
                pieces.append(self._held[:start])
                self._held = self._held[start:]
                self._searched = 0
            closer = _CLOSER[opener]
            end = self._held.find(closer, max(len(opener), self._searched - len(closer)))
            if end < 0:
                self._searched = len(self._held)
                break
            block = self._held[: end + len(closer)]
            self._held = self._held[end + len(closer) :]
            self._searched = 0
            call = self._call(opener, block[len(opener) : end])
            pieces.append(call if call is not None else block)
        return [piece for piece in pieces if piece != ""]

    def finish(self) -> list[Piece]:
        """The text still held when the answer ended: an unclosed block is text."""
        rest, self._held = self._held, ""
        return [rest] if rest else []

    def _opener(self) -> tuple[str | None, int]:
        """The first opening marker in the held text and where it starts."""
        found: tuple[str | None, int] = (None, -1)
        for opener in _OPENERS:
            at = self._held.find(opener)
            if at >= 0 and (found[0] is None or at < found[1]):
                found = (opener, at)
        return found

    def _partial_marker(self) -> int:
        """The length of the held text's longest ending that could begin a marker."""
        for size in range(min(len(self._held), len(CALL_START) - 1), 0, -1):
            tail = self._held[-size:]
            if any(opener.startswith(tail) for opener in _OPENERS):
                return size
        return 0

    def _call(self, opener: str, body: str) -> PrintedCall | None:
        match = (_FENCED if opener == FENCE else _TAGGED).fullmatch(body)
        if match is None or match.group(1) not in self._names:
            return None
        arguments = _arguments(match.group(2) or "")
        return PrintedCall(match.group(1), arguments) if arguments is not None else None
