"""Token counts in the encoding of the model asked about (`POST /v1/responses/input_tokens`).

The engine counts every request with one encoding (cl100k), loaded at startup. Counting for a
client who asked "how many tokens is this for gpt-5" needs the model's own encoding: o200k is
loaded on the first request that needs it (about 0.4 s and 30 MB, in a worker thread), not at
startup, so a gateway nobody asks pays nothing. When the package that ships o200k is not
installed, o200k models are counted with cl100k and a warning says so once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence

import tiktoken

from xrouter.adapters.tokenizers.encodings import (
    O200K_PACKAGE,
    EncodingName,
    encoding_for_model,
    load_encoding,
)
from xrouter.adapters.tokenizers.tiktoken_counter import TiktokenCounter, input_pieces
from xrouter.domain.responses import InputItem, ToolSpec

log = logging.getLogger(__name__)


class ModelTokenCounters:
    """Implements the ModelTokenCounter port: one `TiktokenCounter` per encoding, each loaded
    once. `default` is the engine's cl100k counter (shared, not loaded twice)."""

    def __init__(
        self,
        default: TiktokenCounter,
        *,
        loader: Callable[[EncodingName], tiktoken.Encoding] = load_encoding,
    ) -> None:
        self._default = default
        self._loader = loader
        self._counters: dict[EncodingName, TiktokenCounter] = {"cl100k_base": default}
        self._lock = asyncio.Lock()

    async def count_request(
        self,
        model: str,
        instructions: str | None,
        items: Sequence[InputItem],
        tools: Sequence[ToolSpec] = (),
    ) -> int:
        """Tokens of the instructions, the input items and the function tools' definitions
        (name, description, parameters), in `model`'s encoding."""
        counter = await self._counter(encoding_for_model(model))
        pieces = input_pieces(instructions, items) + tool_pieces(tools)
        return await counter.count_pieces(pieces)

    async def _counter(self, name: EncodingName) -> TiktokenCounter:
        counter = self._counters.get(name)
        if counter is not None:
            return counter
        async with self._lock:  # one load, however many requests wait for it
            counter = self._counters.get(name)
            if counter is None:
                counter = await asyncio.to_thread(self._load, name)
                self._counters[name] = counter
        return counter

    def _load(self, name: EncodingName) -> TiktokenCounter:
        try:
            encoding = self._loader(name)
        except ModuleNotFoundError as exc:
            log.warning(
                "the %s encoding is not installed (%s); counting its models with %s: install "
                "the %s package for exact counts",
                name,
                exc,
                self._default.encoding_name,
                O200K_PACKAGE,
            )
            return self._default
        return TiktokenCounter(
            encoding,
            max_chars=self._default.max_chars,
            max_chars_setting=self._default.max_chars_setting,
        )


def tool_pieces(tools: Sequence[ToolSpec]) -> list[str]:
    """The text a model reads of the function tools it is offered."""
    pieces: list[str] = []
    for tool in tools:
        if tool.type != "function" or not tool.name:
            continue
        pieces.append(tool.name)
        if tool.description:
            pieces.append(tool.description)
        if tool.parameters is not None:
            pieces.append(json.dumps(tool.parameters, separators=(",", ":"), sort_keys=True))
    return pieces
