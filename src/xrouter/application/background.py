"""Background responses, the generation side: stored as in progress before the request that
created them is answered, their events kept in the `EventLog` for replay, and a watch for a
cancel asked of another worker (`CancelRequests`).

The generation itself is the usual one (`Pump`): a background response only differs in that
its client is detached from the start (the answer went out at once), its events are logged,
and it may end `cancelled`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from xrouter.application.generation import Generation
from xrouter.application.ports import CancelRequests, EventLog, IdGenerator, ResponseStore
from xrouter.application.recording import with_ids
from xrouter.domain.errors import GatewayError
from xrouter.domain.events import StreamEvent
from xrouter.domain.responses import StoredResponse

log = logging.getLogger("xrouter.background")


@dataclass(frozen=True, slots=True)
class BackgroundSettings:
    poll_s: float = 0.25
    """How often a generating worker looks for a cancel asked elsewhere, and a follower of
    another worker's events looks for new ones: the bound on how late either sees it."""
    cancel_wait_s: float = 10.0
    """How long `POST .../cancel` waits for the generating worker to confirm the cancel."""
    follow_s: float = 960.0
    """The longest a replay follows live events (past it the stream just ends): a little
    more than the generation deadline, so a response whose worker died is not followed
    forever."""


class Background:
    """What the engine does for a `background: true` response, beside the usual generation."""

    __slots__ = ("_cancels", "_events", "_ids", "_settings", "_store")

    def __init__(
        self,
        *,
        store: ResponseStore,
        events: EventLog,
        cancels: CancelRequests,
        ids: IdGenerator,
        settings: BackgroundSettings,
    ) -> None:
        self._store = store
        self._events = events
        self._cancels = cancels
        self._ids = ids
        self._settings = settings

    async def begin(self, generation: Generation, opening: list[StreamEvent]) -> None:
        """Store the response as in progress and log its opening events, then answer the
        request with the in-progress snapshot. Raises (StorageUnavailable...) when it cannot
        be stored: a background response nobody can poll must not run."""
        response = generation.builder.response
        items = with_ids(generation.own_items, self._ids)
        # The final save writes the same ids (a later input_items call sees no change).
        generation.own_items = items
        await self._store.save(
            StoredResponse(response=response, input_items=items, owner=generation.principal.owner)
        )
        await self._events.append(generation.response_id, opening)
        generation.execution.accept(response)
        generation.cancel_watch = asyncio.create_task(self._watch(generation))

    async def publish(self, generation: Generation, events: Sequence[StreamEvent]) -> None:
        """Log events for replay. A log that cannot take them costs the replay, not the
        response: the failure is logged and generation goes on."""
        try:
            await self._events.append(generation.response_id, events)
        except GatewayError as exc:
            log.error(
                "background response %s: %d events not kept for replay: %s",
                generation.response_id,
                len(events),
                exc.message,
            )

    def end(self, generation: Generation) -> None:
        """The generation is over: stop watching for a cancel."""
        watch = generation.cancel_watch
        if watch is not None:
            watch.cancel()
            generation.cancel_watch = None

    async def _watch(self, generation: Generation) -> None:
        """Poll for a cancel asked of another worker, every `poll_s`, until one comes or the
        generation ends (`end` cancels this task)."""
        while not generation.lifecycle.terminal:
            await asyncio.sleep(self._settings.poll_s)
            try:
                asked = await self._cancels.requested(generation.response_id)
            except GatewayError:
                continue  # the backend is down: look again at the next poll
            if asked:
                log.info("background response %s: cancel asked", generation.response_id)
                generation.cancel()
                return
