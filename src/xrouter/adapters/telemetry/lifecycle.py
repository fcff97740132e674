"""Lifecycle listeners: where the engine's per-step events go."""

from __future__ import annotations

from collections import deque

from xrouter.domain.lifecycle import LifecycleEvent


class NullLifecycleListener:
    """The default: the engine sees `enabled = False` and does not even build events."""

    enabled = False

    def on_event(self, event: LifecycleEvent) -> None:
        return None


class RecordingLifecycleListener:
    """Keeps the most recent events in memory, bounded; for tests and trace conformance."""

    enabled = True

    def __init__(self, max_events: int = 100_000) -> None:
        self.events: deque[LifecycleEvent] = deque(maxlen=max_events)

    def on_event(self, event: LifecycleEvent) -> None:
        self.events.append(event)

    def traces(self) -> dict[str, list[LifecycleEvent]]:
        """Events grouped by request id, in order."""
        grouped: dict[str, list[LifecycleEvent]] = {}
        # Copied first, in one C call (the GIL held throughout): the server may record from
        # another thread (a test's server thread) while this reads.
        for event in tuple(self.events):
            grouped.setdefault(event.request_id, []).append(event)
        return grouped
