"""Conversations: the use cases of `/v1/conversations`, the history a response continues
(`conversation` on `POST /v1/responses`) and the append of a finished turn.

A conversation is an ordered list of items kept by the gateway. A response created with
`conversation` sees those items before its own input, and when it ends completed or
incomplete its input and output items are appended (before the client sees the terminal
event, so the next turn finds them; also when the client left mid-stream, since the
generation runs on). A failed or cancelled turn appends nothing, so the client can send the
same input again without repeating it in the conversation. The append does not depend on
`store`: naming a conversation is asking for the turn to be kept there.

Items are stored as the client sent them, with what the API lists them with added: an id
(`msg_...`, `fc_...`), a `status` on messages and function calls, `annotations` on every
`output_text` part (`item_to_dict` shows string content as parts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from xrouter.application.access import AccessControl
from xrouter.application.ports import (
    Clock,
    ConversationFull,
    ConversationStore,
    DuplicateItem,
    IdGenerator,
    UnknownItem,
)
from xrouter.domain import ingest
from xrouter.domain.conversations import (
    AddItems,
    Conversation,
    ConversationItemList,
    CreateConversation,
    DeletedConversation,
    UpdateConversation,
    conversation_id,
)
from xrouter.domain.errors import GatewayError, InvalidRequest, NotFound
from xrouter.domain.responses import (
    InputItem,
    JSONObject,
    OutputItem,
    ResponseRequest,
    item_to_dict,
)

log = logging.getLogger("xrouter.conversations")

_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "compaction": "cmp",
}
_WITH_STATUS = frozenset({"message", "function_call", "function_call_output"})


def _field_name(name: str) -> str:
    return name


@dataclass(frozen=True, slots=True)
class ConversationLimits:
    max_items: int = 10_000
    """Items one conversation holds at most; an append past it is a 400."""
    max_item_bytes: int = 4 * 1024 * 1024
    """Largest item (as JSON) a conversation takes."""
    setting_names: Callable[[str], str] = _field_name
    """The operator's name of a setting (from its field), for the messages that name it."""


def _not_found(conversation_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"Conversation with id '{conversation_id}' not found.", param=param)


def _item_not_found(item_id: str) -> NotFound:
    return NotFound(f"Item with id '{item_id}' not found in this conversation.")


class Conversations:
    """With access control, a conversation is its key's: another key gets the same 404 as
    for one that does not exist, on every route and as a response's `conversation`."""

    def __init__(
        self,
        store: ConversationStore,
        ids: IdGenerator,
        clock: Clock,
        access: AccessControl | None = None,
        limits: ConversationLimits | None = None,
    ) -> None:
        self._store = store
        self._ids = ids
        self._clock = clock
        self._access = access
        self._limits = limits or ConversationLimits()

    async def _owner(self, api_key: str | None) -> str | None:
        if self._access is None:
            return None
        return (await self._access.authenticate(api_key)).owner

    # --- /v1/conversations ----------------------------------------------------------------

    async def create(self, body: CreateConversation, *, api_key: str | None = None) -> Conversation:
        owner = await self._owner(api_key)
        ingest.validate_metadata(body.metadata)
        items = self._prepared(body.items or [], "items")
        self._check_count(len(items), 0)
        conversation = Conversation(
            id=self._ids.new_id("conv"),
            created_at=int(self._clock.now()),
            metadata=body.metadata or {},
        )
        await self._store.create(conversation, items, owner=owner)
        return conversation

    async def get(self, conversation_id: str, *, api_key: str | None = None) -> Conversation:
        owner = await self._owner(api_key)
        found = await self._store.get(conversation_id, owner=owner)
        if found is None:
            raise _not_found(conversation_id)
        return found

    async def update(
        self, conversation_id: str, body: UpdateConversation, *, api_key: str | None = None
    ) -> Conversation:
        owner = await self._owner(api_key)
        ingest.validate_metadata(body.metadata)
        found = await self._store.set_metadata(conversation_id, body.metadata or {}, owner=owner)
        if found is None:
            raise _not_found(conversation_id)
        return found

    async def delete(
        self, conversation_id: str, *, api_key: str | None = None
    ) -> DeletedConversation:
        owner = await self._owner(api_key)
        if not await self._store.delete(conversation_id, owner=owner):
            raise _not_found(conversation_id)
        return DeletedConversation(id=conversation_id)

    # --- /v1/conversations/{id}/items -----------------------------------------------------

    async def add_items(
        self, conversation_id: str, body: AddItems, *, api_key: str | None = None
    ) -> ConversationItemList:
        owner = await self._owner(api_key)
        if not body.items:
            raise InvalidRequest(
                "`items` must hold at least one item.", param="items", code="invalid_value"
            )
        items = self._prepared(body.items, "items")
        try:
            added = await self._store.append(
                conversation_id, items, max_items=self._limits.max_items, owner=owner
            )
        except ConversationFull as full:
            self._check_count(len(items), full.count)
            raise  # the store and the limit disagree: not the client's to fix
        except DuplicateItem as duplicate:
            raise InvalidRequest(
                f"An item with id '{duplicate.args[0]}' is already in this conversation; "
                "send new items without an id (one is given) or with ids of your own.",
                param="items",
                code="invalid_value",
            ) from None
        if not added:
            raise _not_found(conversation_id)
        return _item_list(items, has_more=False)

    async def list_items(
        self,
        conversation_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
        api_key: str | None = None,
    ) -> ConversationItemList:
        if not 1 <= limit <= 100:
            raise InvalidRequest(
                "`limit` must be between 1 and 100.", param="limit", code="invalid_value"
            )
        owner = await self._owner(api_key)
        try:
            page = await self._store.items(
                conversation_id, after=after, limit=limit, order=order, owner=owner
            )
        except UnknownItem:
            raise InvalidRequest(
                f"No item with id '{after}' in this conversation.",
                param="after",
                code="invalid_value",
            ) from None
        if page is None:
            raise _not_found(conversation_id)
        return _item_list(page.items, has_more=page.has_more)

    async def get_item(
        self, conversation_id: str, item_id: str, *, api_key: str | None = None
    ) -> JSONObject:
        owner = await self._owner(api_key)
        try:
            item = await self._store.get_item(conversation_id, item_id, owner=owner)
        except UnknownItem:
            raise _item_not_found(item_id) from None
        if item is None:
            raise _not_found(conversation_id)
        return item_to_dict(item)

    async def delete_item(
        self, conversation_id: str, item_id: str, *, api_key: str | None = None
    ) -> Conversation:
        owner = await self._owner(api_key)
        try:
            found = await self._store.delete_item(conversation_id, item_id, owner=owner)
        except UnknownItem:
            raise _item_not_found(item_id) from None
        if found is None:
            raise _not_found(conversation_id)
        return found

    # --- responses that continue a conversation -------------------------------------------

    async def history(
        self, conversation_id: str, *, incoming: Sequence[InputItem], owner: str | None
    ) -> list[InputItem]:
        """The conversation's items, the history before a turn's `incoming` input items.
        404 (param `conversation`) when it is unknown or another key's; 400, before any
        generation, when the turn could not be appended: no room for its input and an output
        item, or an input item over the size limit."""
        for index, item in enumerate(incoming):
            size = _size(self._normalized(item))
            if size > self._limits.max_item_bytes:
                raise InvalidRequest(
                    f"This input item is {size} bytes as JSON; a conversation takes items of "
                    f"at most {self._limits.max_item_bytes} bytes "
                    f"({self._limits.setting_names('conversation_max_item_bytes')}), so this "
                    "turn could not be added to it.",
                    param=f"input[{index}]",
                    code="invalid_value",
                )
        items = await self._store.all_items(conversation_id, owner=owner)
        if items is None:
            raise _not_found(conversation_id, param="conversation")
        self._check_count(len(incoming) + 1, len(items), param="conversation")
        return items

    async def append_turn(
        self,
        conversation_id: str,
        own_items: Sequence[InputItem],
        output: Sequence[OutputItem],
        *,
        owner: str | None,
    ) -> None:
        """Append a finished turn: its input items, then its output. The response has been
        delivered whatever happens here, so a failure is logged, never raised."""
        converted = msgspec.convert(msgspec.to_builtins(list(output)), list[InputItem])
        turn = [item for item in own_items if item.type != "item_reference"] + converted
        try:
            items = [self._normalized(item) for item in turn]
            too_large = [item.id for item in items if _size(item) > self._limits.max_item_bytes]
            if too_large:
                log.warning(
                    "turn not added to conversation %s: item %s is over %d bytes (%s)",
                    conversation_id,
                    too_large[0],
                    self._limits.max_item_bytes,
                    self._limits.setting_names("conversation_max_item_bytes"),
                )
                return
            added = await self._store.append(
                conversation_id, items, max_items=self._limits.max_items, owner=owner
            )
            if not added:
                log.info(
                    "turn not added to conversation %s: it was deleted or expired meanwhile",
                    conversation_id,
                )
        except ConversationFull as full:
            log.warning(
                "turn not added to conversation %s: it holds %d items, %d more would pass "
                "the limit of %d (%s)",
                conversation_id,
                full.count,
                len(turn),
                self._limits.max_items,
                self._limits.setting_names("conversation_max_items"),
            )
        except DuplicateItem as duplicate:
            log.warning(
                "turn not added to conversation %s: item id %s is already in it",
                conversation_id,
                duplicate.args[0],
            )
        except GatewayError as exc:  # the store is unavailable
            log.error("turn not added to conversation %s: %s", conversation_id, exc.message)
        except Exception:
            log.exception("could not add a turn to conversation %s", conversation_id)

    # --- internals --------------------------------------------------------------------------

    def _prepared(self, items: list[InputItem], param: str) -> list[InputItem]:
        """Client items checked (kind rules, size, unique ids) and normalised for storage."""
        ingest.validate_items(items, param)
        prepared: list[InputItem] = []
        seen: set[str] = set()
        for index, item in enumerate(items):
            if item.type == "item_reference":
                raise InvalidRequest(
                    "A conversation keeps items, not references: send the item itself.",
                    param=f"{param}[{index}].type",
                    code="invalid_value",
                )
            normalized = self._normalized(item)
            size = _size(normalized)
            if size > self._limits.max_item_bytes:
                raise InvalidRequest(
                    f"This item is {size} bytes as JSON; a conversation takes items of at "
                    f"most {self._limits.max_item_bytes} bytes "
                    f"({self._limits.setting_names('conversation_max_item_bytes')}).",
                    param=f"{param}[{index}]",
                    code="invalid_value",
                )
            item_id = normalized.id or ""
            if item_id in seen:
                raise InvalidRequest(
                    f"Two items have the id '{item_id}'; ids are unique in a conversation.",
                    param=f"{param}[{index}].id",
                    code="invalid_value",
                )
            seen.add(item_id)
            prepared.append(normalized)
        return prepared

    def _check_count(self, adding: int, holding: int, param: str = "items") -> None:
        limit = self._limits.max_items
        if holding + adding > limit:
            raise InvalidRequest(
                f"This conversation holds {holding} items and takes at most {limit} "
                f"({self._limits.setting_names('conversation_max_items')}); {adding} more do "
                "not fit. Start a new conversation, or delete items from this one.",
                param=param,
                code="invalid_value",
            )

    def _normalized(self, item: InputItem) -> InputItem:
        """The item as stored: an id, a status where the API shows one, `annotations` on
        output text."""
        changes: dict[str, Any] = {}
        if item.id is None:
            changes["id"] = self._ids.new_id(_ID_PREFIX.get(item.type, "item"))
        if item.status is None and item.type in _WITH_STATUS:
            changes["status"] = "completed"
        if item.type == "message" and isinstance(item.content, list):
            content = _with_annotations(item.content)
            if content is not item.content:
                changes["content"] = content
        return msgspec.structs.replace(item, **changes) if changes else item


def _with_annotations(content: list[JSONObject]) -> list[JSONObject]:
    """`annotations` on each `output_text` part (the strict SDK requires them); the same list
    when none lacks them. String content stays a string: it is listed as parts
    (`item_to_dict`) but goes upstream as the client sent it."""
    if not any(p.get("type") == "output_text" and "annotations" not in p for p in content):
        return content
    return [
        {**p, "annotations": []} if p.get("type") == "output_text" and "annotations" not in p else p
        for p in content
    ]


def _size(item: InputItem) -> int:
    return len(msgspec.json.encode(item))


def _item_list(items: Sequence[InputItem], *, has_more: bool) -> ConversationItemList:
    data = [item_to_dict(item) for item in items]
    return ConversationItemList(
        data=data,
        first_id=data[0].get("id") if data else None,
        last_id=data[-1].get("id") if data else None,
        has_more=has_more,
    )


async def conversation_history(
    conversations: Conversations | None,
    request: ResponseRequest,
    *,
    incoming: Sequence[InputItem],
    owner: str | None,
) -> list[InputItem]:
    """The history of the request's `conversation` (`Conversations.history`); a 400 when
    this gateway was built without conversations (an engine embedded without their store)."""
    found = conversation_id(request)
    if found is None:
        return []
    if conversations is None:
        raise InvalidRequest(
            "This gateway keeps no conversations; send the history in `input`.",
            param="conversation",
            code="invalid_value",
        )
    return await conversations.history(found, incoming=incoming, owner=owner)
