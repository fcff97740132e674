"""Tool calls a DeepSeek model prints as DSML markup in its text, recovered. Pure, no I/O.

DeepSeek models (V3.2 on) call tools in DSML; the API normally turns it into `tool_calls`,
but some answers carry it verbatim in `content`. The grammar (DeepSeek-V3.2's chat encoding,
as SGLang's and vLLM's DeepSeek-V3.2 tool parsers read it). Each `|` below is U+FF5C, the
fullwidth bar, in what the model writes; the ASCII `|` is accepted too:

    <|DSML|function_calls>
    <|DSML|invoke name="get_weather">
    <|DSML|parameter name="city" string="true">Paris</|DSML|parameter>
    <|DSML|parameter name="days" string="false">3</|DSML|parameter>
    </|DSML|invoke>
    </|DSML|function_calls>

`string="true"` is a raw string value, anything else a JSON value (kept as a string when it
does not parse); an invoke whose body is a JSON object instead of parameters takes that
object as its arguments. The `function_calls` wrapper may be missing.

`DsmlExtractor` reads text in pieces as it streams and hands back the text that is surely
not markup and each call once its `</|DSML|invoke>` arrived. Text that may be the start of
markup (`<`, `<|DS`...) and whitespace right before it are held back until decided, so a
streamed block never reaches the client as text. What a block holds that is not an invoke
(whitespace, the wrapper, a stray DSML tag) is dropped; the first other text ends the block.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import msgspec

log = logging.getLogger(__name__)

_FULLWIDTH_BAR = "\uff5c"
_BAR = f"[{_FULLWIDTH_BAR}|]"
_MARKERS = (f"<{_FULLWIDTH_BAR}DSML{_FULLWIDTH_BAR}", "<|DSML|")
"""Every DSML tag starts with one of these (a closing tag has `/` after `<`)."""
_TAG_START = re.compile(rf"</?{_BAR}DSML{_BAR}")
_TAG = re.compile(rf"</?{_BAR}DSML{_BAR}[^>]*>")
_INVOKE = re.compile(rf'<{_BAR}DSML{_BAR}invoke\s+name="([^"]*)"\s*>')
_INVOKE_END = re.compile(rf"</{_BAR}DSML{_BAR}invoke\s*>")
_PARAMETER = re.compile(
    rf'<{_BAR}DSML{_BAR}parameter\s+name="([^"]*)"((?:\s+[\w-]+="[^"]*")*)\s*>'
    rf"(.*?)</{_BAR}DSML{_BAR}parameter\s*>",
    re.DOTALL,
)
_STRING_ATTR = re.compile(r'\bstring="([^"]*)"')
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class RecoveredCall:
    """One function call read from DSML: its name and its arguments as a JSON object text."""

    name: str
    arguments: str


Piece = str | RecoveredCall
"""What the extractor hands back: text for the client, or a recovered call."""


def _could_start_tag(text: str) -> bool:
    """`text` (non-empty) is a proper beginning of a DSML tag opener: more may complete it."""
    for marker in _MARKERS:
        for candidate in (marker, "</" + marker[1:]):
            if len(text) < len(candidate) and candidate.startswith(text):
                return True
    return False


def _held_suffix_start(text: str) -> int:
    """Where the end of `text` that must be held back starts: a suffix that may begin a DSML
    tag, with the whitespace before it; len(text) when nothing is held."""
    cut = len(text)
    start = text.rfind("<", max(0, len(text) - len(_MARKERS[0]) - 1))
    if start != -1 and _could_start_tag(text[start:]):
        cut = start
    while cut > 0 and text[cut - 1].isspace():
        cut -= 1
    return cut


def parse_arguments(body: str) -> str:
    """The arguments of one invoke body, as a JSON object text."""
    arguments: dict[str, object] = {}
    for match in _PARAMETER.finditer(body):
        name, attributes, raw = match.group(1), match.group(2), match.group(3)
        kind = _STRING_ATTR.search(attributes)
        if kind is None or kind.group(1) == "true":
            arguments[name] = raw
            continue
        try:
            arguments[name] = msgspec.json.decode(raw.strip())
        except msgspec.DecodeError:
            arguments[name] = raw
    if not arguments and body.strip().startswith("{"):
        try:
            value = msgspec.json.decode(body.strip())
        except msgspec.DecodeError:
            value = None
        if isinstance(value, dict):
            return body.strip()
    return _encoder.encode(arguments).decode()


class DsmlExtractor:
    """Separates DSML tool calls from the text around them, one stream at a time. Feed each
    piece of text, then call `finish` once the answer ended."""

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False  # in a DSML block: only tags and whitespace belong here
        self.calls = 0
        """Calls recovered so far."""

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        pieces: list[Piece] = []
        while self._buffer:
            progressed = self._step_inside(pieces) if self._inside else self._step_outside(pieces)
            if not progressed:
                break
        return pieces

    def finish(self) -> list[Piece]:
        """What is left when the answer ended. An unterminated block (an answer cut short)
        is not a call: its text is handed back as text, so nothing the model said is lost."""
        rest, self._buffer = self._buffer, ""
        if self._inside and rest.strip():
            log.info("DeepSeek answer ended inside a DSML block; its text is kept as text")
        self._inside = False
        return [rest] if rest and (rest.strip() or not self.calls) else []

    def _step_outside(self, pieces: list[Piece]) -> bool:
        found = [i for i in (self._buffer.find(m) for m in _MARKERS) if i != -1]
        if found:
            start = min(found)
            text = self._buffer[:start].rstrip()
            if text:
                pieces.append(text)
            self._buffer = self._buffer[start:]
            self._inside = True
            return True
        cut = _held_suffix_start(self._buffer)
        if cut:
            pieces.append(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
        return False

    def _step_inside(self, pieces: list[Piece]) -> bool:
        stripped = self._buffer.lstrip()
        if not stripped:
            return False  # only whitespace so far: wait for what follows
        invoke = _INVOKE.match(stripped)
        if invoke is not None:
            end = _INVOKE_END.search(stripped, invoke.end())
            if end is None:
                return False  # the invoke is not complete yet
            body = stripped[invoke.end() : end.start()]
            pieces.append(RecoveredCall(invoke.group(1), parse_arguments(body)))
            self.calls += 1
            self._buffer = stripped[end.end() :]
            return True
        tag = _TAG.match(stripped)
        if tag is not None:
            # The wrapper, or a stray tag: markup, never text. The block ends at the first
            # text after it, so the whitespace after the closing wrapper goes too.
            self._buffer = stripped[tag.end() :]
            return True
        if _TAG_START.match(stripped) or _could_start_tag(stripped):
            return False  # a tag whose `>` (or name) has not arrived yet
        self._inside = False  # other text: the block is over
        self._buffer = stripped
        return True
