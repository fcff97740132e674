"""The generations running now, by response id: what shutdown waits for, where a `DELETE` of a
response still generating is recorded so that it wins, and where a cancel finds a background
generation running in this process."""

from __future__ import annotations

from collections.abc import Iterator

from xrouter.application.generation import Generation


class RunningGenerations:
    __slots__ = ("_by_response",)

    def __init__(self) -> None:
        self._by_response: dict[str, Generation] = {}

    def add(self, generation: Generation) -> None:
        self._by_response[generation.response_id] = generation

    def discard(self, generation: Generation) -> None:
        self._by_response.pop(generation.response_id, None)

    def get(self, response_id: str) -> Generation | None:
        return self._by_response.get(response_id)

    def cancel(self, response_id: str, *, owner: str | None = None) -> Generation | None:
        """Cancel a background generation running here (`Generation.cancel`): the generation,
        or None when none of `owner`'s is running here (another worker may have it)."""
        generation = self._by_response.get(response_id)
        if generation is None or (owner is not None and generation.principal.owner != owner):
            return None
        generation.cancel()
        return generation

    def delete(self, response_id: str, *, owner: str | None = None) -> bool:
        """Mark a running response deleted: it is not stored when it ends. False when no
        generation that would store it is running (the caller looks in the store), or when
        `owner` is given and another key's generation it is."""
        generation = self._by_response.get(response_id)
        if generation is None or generation.deleted or not generation.call.request.store:
            return False  # nothing will be stored: the store answers for it
        if owner is not None and generation.principal.owner != owner:
            return False
        generation.deleted = True
        return True

    def __iter__(self) -> Iterator[Generation]:
        return iter(list(self._by_response.values()))

    def __len__(self) -> int:
        return len(self._by_response)
