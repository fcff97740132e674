"""Use cases on background responses: cancel one, and replay its events (following the live
ones) from a sequence number.

Both work across workers and instances when the store, the event log and the cancel requests
are shared (Redis): a cancel reaches the generating worker through `CancelRequests` (it looks
every `poll_s`), a replay reads the `EventLog` the generating worker writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from xrouter.application.access import AccessControl
from xrouter.application.background import BackgroundSettings
from xrouter.application.generation import Generation
from xrouter.application.ports import CancelRequests, EventLog, ResponseStore
from xrouter.application.running import RunningGenerations
from xrouter.domain.errors import CancelNotConfirmed, GatewayError, InvalidRequest, NotFound
from xrouter.domain.events import TERMINAL_EVENTS, StreamEvent
from xrouter.domain.responses import Response

_PAGE = 256
"""Events read from the log at once."""

_FINISHED = frozenset({"completed", "failed", "incomplete"})

_ENDED_GRACE_S = 1.0
"""Once the store says a followed response ended, how long a replay still waits for its
terminal event (logged right after the final save) before it ends the stream."""


def _field_name(name: str) -> str:
    return name


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.")


def _is_terminal(event: StreamEvent) -> bool:
    return isinstance(event, TERMINAL_EVENTS)


class BackgroundResponses:
    """With access control a response is its key's: another key gets the 404 of an unknown
    one, as for retrieve."""

    def __init__(
        self,
        *,
        store: ResponseStore,
        events: EventLog,
        cancels: CancelRequests,
        running: RunningGenerations,
        settings: BackgroundSettings,
        access: AccessControl | None = None,
        setting_names: Callable[[str], str] = _field_name,
    ) -> None:
        """`setting_names`: the operator's name of a setting, for the messages naming one."""
        self._store = store
        self._events = events
        self._cancels = cancels
        self._running = running
        self._settings = settings
        self._access = access
        self._setting_names = setting_names

    async def _response(self, response_id: str, api_key: str | None) -> Response:
        owner = None if self._access is None else (await self._access.authenticate(api_key)).owner
        response = await self._store.get_response(response_id, owner=owner)
        if response is None:
            raise _not_found(response_id)
        return response

    # --- cancel ------------------------------------------------------------------------------

    async def cancel(self, response_id: str, *, api_key: str | None = None) -> Response:
        """`POST /v1/responses/{id}/cancel`: the response, ended `cancelled`. Idempotent on a
        cancelled one; 400 for one created without `background: true` and for one that
        already ended otherwise."""
        response = await self._response(response_id, api_key)
        if not response.background:
            raise InvalidRequest(
                f"Response '{response_id}' cannot be cancelled: only a response created with "
                "`background: true` can be.",
                code="invalid_value",
            )
        if response.status == "cancelled":
            return response
        _refuse_finished(response)
        local = self._running.get(response_id)
        if local is not None and local.cancel():
            final = await self._wait_local(local)
        else:
            await self._cancels.request(response_id)
            final = None
        if final is None or final.status != "cancelled":
            final = await self._wait_stored(response_id, api_key)
        if final.status != "cancelled":
            _refuse_finished(final)  # it ended on its own before the cancel reached it
        return final

    async def _wait_local(self, generation: Generation) -> Response | None:
        """How a generation of this process ended, waited for at most `cancel_wait_s`."""
        try:
            async with asyncio.timeout(self._settings.cancel_wait_s):
                return await generation.execution.outcome()
        except (TimeoutError, GatewayError):  # the store then says how it stands
            return None

    async def _wait_stored(self, response_id: str, api_key: str | None) -> Response:
        """The stored response once it is no longer in progress, polled every `poll_s` for at
        most `cancel_wait_s` (the generating worker may be another one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.cancel_wait_s
        while True:
            response = await self._response(response_id, api_key)
            if response.status not in ("in_progress", "queued"):
                return response
            if loop.time() >= deadline:
                raise CancelNotConfirmed(
                    f"The cancel of response '{response_id}' was asked for, but the worker "
                    f"generating it did not confirm it within {self._settings.cancel_wait_s:g} s "
                    f"({self._setting_names('background_cancel_wait_s')}). It may still end "
                    "cancelled: poll GET /v1/responses/{id}."
                )
            await asyncio.sleep(self._settings.poll_s)

    # --- replay ------------------------------------------------------------------------------

    async def replay(
        self, response_id: str, *, starting_after: int | None, api_key: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        """`GET /v1/responses/{id}?stream=true&starting_after=N`: the stored events after
        sequence number N (all of them without N), then the live ones until the terminal
        event. Checks (404, 400) happen here, before the stream starts."""
        response = await self._response(response_id, api_key)
        if not response.background:
            raise InvalidRequest(
                f"Response '{response_id}' was not created with `background: true`; only a "
                "background response can be streamed again. Retrieve it without `stream`.",
                param="stream",
                code="invalid_value",
            )
        after = -1 if starting_after is None else starting_after
        first = await self._events.read(response_id, after=after, limit=_PAGE)
        if first is None:
            raise InvalidRequest(
                f"The events of response '{response_id}' are no longer kept "
                f"({self._setting_names('background_events_ttl_s')}). Retrieve it without "
                "`stream`.",
                param="stream",
                code="invalid_value",
            )
        return self._follow(response_id, after, first)

    async def _follow(
        self, response_id: str, after: int, batch: list[StreamEvent]
    ) -> AsyncIterator[StreamEvent]:
        """Yield `batch`, then what follows it, until the terminal event. With nothing new, it
        asks the store whether the response has ended: then the terminal event is at most
        moments away (it is logged right after the final save), or it was already sent
        (`starting_after` past it), and the stream ends after `_ENDED_GRACE_S`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.follow_s
        ended = False
        while True:
            for event in batch:
                yield event
                after = event.sequence_number
                if _is_terminal(event):
                    return
            if not batch:
                if not ended and await self._has_ended(response_id):
                    ended = True
                    deadline = min(deadline, loop.time() + _ENDED_GRACE_S)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return  # ended earlier, its worker is gone, or past any deadline
                await self._events.wait(
                    response_id, after=after, timeout_s=min(self._settings.poll_s, remaining)
                )
            found = await self._events.read(response_id, after=after, limit=_PAGE)
            if found is None:
                return  # expired while followed
            batch = found

    async def _has_ended(self, response_id: str) -> bool:
        response = await self._store.get_response(response_id)
        return response is None or response.status not in ("in_progress", "queued")


def _refuse_finished(response: Response) -> None:
    if response.status in _FINISHED:
        raise InvalidRequest(
            f"Response '{response.id}' cannot be cancelled: it has already "
            f"{'completed' if response.status == 'completed' else 'ended ' + response.status}.",
            code="invalid_value",
        )
