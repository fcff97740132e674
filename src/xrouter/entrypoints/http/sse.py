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
from xrouter.application.chat_mapping import ChatTextChunk
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
        if isinstance(chunk, ChatTextChunk):
            return b"data: " + self._encode(chunk.chunk()) + b"\n\n"
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
        """A batch of chat chunks as one write (of a stream of its own: see `chat`)."""
        return _ChatFramer(self._encode_into).frames(chunks)

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
        return relay(first, rest, _ChatFramer(self._encode_into).frames, detach)


class _ChatFramer:
    """Frames the chunks of one chat stream. A text chunk (`ChatTextChunk`) is written as the
    encoding of its full chunk cut around the text: the part before and the part after are
    encoded once per stream (its id, created and model do not change), the text each time;
    msgspec encodes a string alike alone or inside a struct, so the bytes are the same."""

    __slots__ = ("_after", "_before", "_encode_into", "_of")

    def __init__(self, encode_into: Callable[[Any, bytearray, int], None]) -> None:
        self._encode_into = encode_into
        self._of: ChatTextChunk | None = None  # the chunk the parts were cut from
        self._before = b""
        self._after = b""

    def frames(self, chunks: list[ChatStreamItem]) -> bytes:
        encode_into = self._encode_into
        out = bytearray()
        for chunk in chunks:
            if type(chunk) is ChatTextChunk:
                of = self._of
                if (
                    of is None
                    or chunk.id != of.id
                    or chunk.created != of.created
                    or chunk.model != of.model
                ):
                    self._cut(chunk)
                out += self._before
                encode_into(chunk.text, out, -1)
                out += self._after
                continue
            out += b"data: "
            encode_into(chunk, out, -1)
            out += b"\n\n"
        return bytes(out)

    def _cut(self, chunk: ChatTextChunk) -> None:
        """The frame of `chunk` with an empty text, cut where the text goes. The marker is
        the delta's only field with its empty value; quotes inside the id or model are
        escaped in the JSON, so it occurs once, and the delta comes after both."""
        whole = bytearray()
        self._encode_into(
            ChatTextChunk(chunk.id, chunk.created, chunk.model, "").chunk(), whole, -1
        )
        marker = b'{"content":""}'
        at = bytes(whole).rindex(marker) + len(b'{"content":')
        self._before = b"data: " + bytes(whole[:at])
        self._after = bytes(whole[at + 2 :]) + b"\n\n"
        self._of = chunk
