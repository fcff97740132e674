"""One Yandex answer's canonical events, repaired: cumulative text snapshots turned into
deltas (`snapshots`), then calls printed as text turned into function calls (`text_tools`).
Used on streams and whole answers alike, so both APIs see the same events. Pure, no I/O."""

from __future__ import annotations

import secrets

from xrouter.adapters.providers.yandex.snapshots import SnapshotDeltas
from xrouter.adapters.providers.yandex.text_tools import Piece, PrintedToolCalls
from xrouter.domain.provider_events import (
    Finish,
    ProviderEvent,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)


def new_call_id() -> str:
    """An id for a recovered call, which the upstream never gave one."""
    return f"call_{secrets.token_hex(12)}"


class AnswerRepair:
    """Feed each event the shared parser yields; get the events to pass on."""

    def __init__(self, tool_names: frozenset[str]) -> None:
        self._snapshots = SnapshotDeltas()
        self._printed = PrintedToolCalls(tool_names)
        self._indexes: dict[int, int] = {}  # the upstream's call index -> ours
        self._calls = 0  # calls passed on (real and recovered): the next index
        self._recovered = False

    def feed(self, event: ProviderEvent) -> list[ProviderEvent]:
        if isinstance(event, TextDelta):
            return self._pieces(self._printed.feed(self._snapshots.feed(event.text)))
        if isinstance(event, ToolCallDelta):
            # Recovered calls take indexes too: the upstream's own are renumbered after them.
            ours = self._indexes.get(event.index)
            if ours is None:
                ours = self._indexes[event.index] = self._next_index()
            return [ToolCallDelta(ours, event.arguments, event.call_id, event.name)]
        if isinstance(event, UsageReport | Finish):
            events = self._pieces(self._printed.finish())
            if isinstance(event, Finish) and self._recovered and event.reason == "stop":
                event = Finish("tool_calls")
            return [*events, event]
        return [event]

    def _next_index(self) -> int:
        self._calls += 1
        return self._calls - 1

    def _pieces(self, pieces: list[Piece]) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        for piece in pieces:
            if isinstance(piece, str):
                events.append(TextDelta(piece))
            else:
                self._recovered = True
                events.append(
                    ToolCallDelta(self._next_index(), piece.arguments, new_call_id(), piece.name)
                )
        return events
