"""Use cases on stored responses: retrieve, delete, list input items."""

from __future__ import annotations

from typing import Literal

from xrouter.application.access import AccessControl
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
    """With access control, a response is its key's: another key gets the same 404 as for a
    response that does not exist (no existence oracle)."""

    def __init__(
        self,
        store: ResponseStore,
        running: RunningGenerations | None = None,
        access: AccessControl | None = None,
    ) -> None:
        self._store = store
        self._running = running if running is not None else RunningGenerations()
        self._access = access

    async def _owner(self, api_key: str | None) -> str | None:
        if self._access is None:
            return None
        return (await self._access.authenticate(api_key)).owner

    async def get(self, response_id: str, *, api_key: str | None = None) -> Response:
        owner = await self._owner(api_key)
        response = await self._store.get_response(response_id, owner=owner)
        if response is None:
            raise _not_found(response_id)
        return response

    async def delete(self, response_id: str, *, api_key: str | None = None) -> DeletedResponse:
        """Delete a stored response, or one still generating: the delete wins, and the
        response is not stored when its generation ends."""
        owner = await self._owner(api_key)
        running = self._running.delete(response_id, owner=owner)
        stored = await self._store.delete(response_id, owner=owner)
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
        api_key: str | None = None,
    ) -> InputItemList:
        """A page of the request's input items, as `GET /v1/responses/{id}/input_items`."""
        if not 1 <= limit <= 100:
            raise InvalidRequest(
                "`limit` must be between 1 and 100.", param="limit", code="invalid_value"
            )
        owner = await self._owner(api_key)
        try:
            page = await self._store.input_items(
                response_id, after=after, limit=limit, order=order, owner=owner
            )
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
