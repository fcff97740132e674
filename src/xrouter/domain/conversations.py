"""Conversations: a server-side list of items a response can continue from (`conversation` on
`POST /v1/responses`) and grow (its input and output are appended once it completes).

The wire shapes of `/v1/conversations` (shared/reference/RESPONSES_API.md, "Conversations",
and the `openai` SDK's `conversations` types), and how a request names its conversation.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct, field

from xrouter.domain.errors import InvalidRequest
from xrouter.domain.responses import InputItem, JSONObject, ResponseRequest


class Conversation(Struct, kw_only=True):
    """A conversation as the API shows it (its items are listed apart)."""

    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)


class DeletedConversation(Struct):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True


class ConversationItemList(Struct):
    """A page of a conversation's items. `first_id` and `last_id` are null on an empty page
    (the SDK's cursor page reads only `last_id`, and only when there is one)."""

    data: list[JSONObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: Literal["list"] = "list"


class CreateConversation(Struct, kw_only=True):
    """Body of `POST /v1/conversations`."""

    items: list[InputItem] | None = None
    metadata: dict[str, str] | None = None


class UpdateConversation(Struct, kw_only=True):
    """Body of `POST /v1/conversations/{id}`: the new metadata, replacing the old."""

    metadata: dict[str, str] | None


class AddItems(Struct, kw_only=True):
    """Body of `POST /v1/conversations/{id}/items`."""

    items: list[InputItem]


def conversation_id(request: ResponseRequest) -> str | None:
    """The conversation a request continues: `conversation` is an id or `{"id": ...}`."""
    value = request.conversation
    if value is None:
        return None
    found = value.get("id") if isinstance(value, dict) else value
    if not isinstance(found, str) or not found:
        raise InvalidRequest(
            "`conversation` must be a conversation id such as 'conv_...', or an object "
            '{"id": "conv_..."}.',
            param="conversation",
            code="invalid_value",
        )
    return found
