"""Server-sent events: JSON on one line, `data: [DONE]` last; one write per batch of events
(those ready together, see `Execution.batches`), never an event held back for another.

Responses frames are `event: <type>\\ndata: <json>\\n\\n`, where `<type>` is the event's tag, so
`event:` always equals the JSON `type`. Chat Completions frames are `data: <json>\\n\\n` only.
Open Responses wants the final `[DONE]`; the SDK and Codex stop on it harmlessly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import msgspec

from xrouter.application.chat_completions import ChatStreamItem
from xrouter.domain.events import StreamEvent
from xrouter.entrypoints.http.codec import Codec

DONE_FRAME = b"data: [DONE]\n\n"
T = TypeVar("T")


def _prefix(event_type: Any) -> bytes:
    return b"event: " + str(event_type.__struct_config__.tag).encode() + b"\ndata: "


async def relay(
    first: T,
    rest: AsyncIterator[T],
    frame: Callable[[T], bytes],
    detach: Callable[[], None],
) -> AsyncIterator[bytes]:
    """Frame `first` then `rest`, then [DONE]. If the client leaves (the response task is
    cancelled), `detach` runs and generation goes on to its terminal state."""
    finished = False
    try:
        yield frame(first)
        async for item in rest:
            yield frame(item)
        finished = True
        yield DONE_FRAME
    finally:
        if not finished:
            detach()


class SSEWriter:
    """Frames stream events. Prefixes are computed once per event type, at startup."""

    def __init__(self, codec: Codec, event_types: tuple[type, ...]) -> None:
        self._encode = codec.encode
        # For batches: frames encoded into one buffer, no bytes object per frame. Built as the
        # codec's is (msgspec's defaults), so a frame's JSON is byte for byte the codec's.
        self._encode_into = msgspec.json.Encoder().encode_into
        self._prefixes = {t: _prefix(t) for t in event_types}

    def frame(self, event: StreamEvent) -> bytes:
        return self._prefixes[type(event)] + self._encode(event) + b"\n\n"

    def chat_frame(self, chunk: ChatStreamItem) -> bytes:
        return b"data: " + self._encode(chunk) + b"\n\n"

    def frames(self, events: list[StreamEvent]) -> bytes:
        """A batch of events as one write (the frames one after another)."""
        prefixes, encode_into = self._prefixes, self._encode_into
        out = bytearray()
        for event in events:
            out += prefixes[type(event)]
            encode_into(event, out, -1)
            out += b"\n\n"
        return bytes(out)

    def chat_frames(self, chunks: list[ChatStreamItem]) -> bytes:
        """A batch of chat chunks as one write."""
        encode_into = self._encode_into
        out = bytearray()
        for chunk in chunks:
            out += b"data: "
            encode_into(chunk, out, -1)
            out += b"\n\n"
        return bytes(out)

    def responses(
        self,
        first: list[StreamEvent],
        rest: AsyncIterator[list[StreamEvent]],
        detach: Callable[[], None],
    ) -> AsyncIterator[bytes]:
        """Batches of events (`Execution.batches()`), one write each."""
        return relay(first, rest, self.frames, detach)

    def chat(
        self,
        first: list[ChatStreamItem],
        rest: AsyncIterator[list[ChatStreamItem]],
        detach: Callable[[], None],
    ) -> AsyncIterator[bytes]:
        """Batches of chat chunks (`ChatExecution.chunk_batches()`), one write each."""
        return relay(first, rest, self.chat_frames, detach)
