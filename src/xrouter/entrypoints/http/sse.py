"""Server-sent events for the Responses stream: one write per event, JSON on one line.

Frame: `event: <type>\\ndata: <json>\\n\\n`, where `<type>` is the event's tag, so `event:`
always equals the JSON `type`. The stream ends with `data: [DONE]` (Open Responses wants it;
the SDK and Codex stop on it harmlessly).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from xrouter.application.engine import Execution
from xrouter.domain.events import StreamEvent
from xrouter.entrypoints.http.codec import Codec

log = logging.getLogger("xrouter.http.sse")

DONE_FRAME = b"data: [DONE]\n\n"


def _prefix(event_type: type) -> bytes:
    return b"event: " + str(event_type.__struct_config__.tag).encode() + b"\ndata: "  # type: ignore[attr-defined]


class SSEWriter:
    """Frames stream events. Prefixes are computed once per event type, at startup."""

    def __init__(self, codec: Codec, event_types: tuple[type, ...]) -> None:
        self._codec = codec
        self._prefixes = {t: _prefix(t) for t in event_types}

    def frame(self, event: StreamEvent) -> bytes:
        return self._prefixes[type(event)] + self._codec.encode(event) + b"\n\n"

    async def frames(self, execution: Execution, first: list[StreamEvent]) -> AsyncIterator[bytes]:
        """The whole stream. If the client leaves (the response task is cancelled), the
        execution is detached and generation goes on to its terminal state."""
        finished = False
        try:
            for event in first:
                yield self.frame(event)
            async for event in execution.events():
                yield self.frame(event)
            finished = True
            yield DONE_FRAME
        finally:
            if not finished:
                execution.detach()
