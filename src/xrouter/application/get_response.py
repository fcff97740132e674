"""Use cases on stored responses: retrieve, delete, list input items."""

from __future__ import annotations

from typing import Literal

from xrouter.application.ports import ResponseStore, UnknownItem
from xrouter.application.running import RunningGenerations
from xrouter.domain.errors import InvalidRequest, NotFound
from xrouter.domain.responses import (
    DeletedResponse,
    InputItemList,
    Response,
    item_to_dict,
)


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.")


class GetResponse:
    def __init__(self, store: ResponseStore, running: RunningGenerations | None = None) -> None:
        self._store = store
        self._running = running if running is not None else RunningGenerations()

    async def get(self, response_id: str) -> Response:
        response = await self._store.get_response(response_id)
        if response is None:
            raise _not_found(response_id)
        return response

    async def delete(self, response_id: str) -> DeletedResponse:
        """Delete a stored response, or one still generating: the delete wins, and the
        response is not stored when its generation ends."""
        running = self._running.delete(response_id)
        stored = await self._store.delete(response_id)
        if not (running or stored):
            raise _not_found(response_id)
        return DeletedResponse(id=response_id)

    async def input_items(
        self,
        response_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
    ) -> InputItemList:
        """A page of the request's input items, as `GET /v1/responses/{id}/input_items`."""
        if not 1 <= limit <= 100:
            raise InvalidRequest(
                "`limit` must be between 1 and 100.", param="limit", code="invalid_value"
            )
        try:
            page = await self._store.input_items(response_id, after=after, limit=limit, order=order)
        except UnknownItem:
            raise InvalidRequest(
                f"No input item with id '{after}' in this response.",
                param="after",
                code="invalid_value",
            ) from None
        if page is None:
            raise _not_found(response_id)
        data = [item_to_dict(item) for item in page.items]
        return InputItemList(
            data=data,
            first_id=data[0].get("id") if data else None,
            last_id=data[-1].get("id") if data else None,
            has_more=page.has_more,
        )
