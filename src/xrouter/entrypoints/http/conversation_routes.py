"""`/conversations` and their items, mounted under every API prefix next to
`build_api_routes`. Handlers decode, call the `Conversations` use case, encode."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar import Response as HTTPResponse
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from xrouter.application.conversations import Conversations
from xrouter.domain.conversations import (
    AddItems,
    Conversation,
    ConversationItemList,
    CreateConversation,
    DeletedConversation,
    UpdateConversation,
)
from xrouter.domain.responses import InputItem
from xrouter.entrypoints.http.codec import Codec, decode
from xrouter.entrypoints.http.credentials import credentials
from xrouter.entrypoints.http.openapi import documented
from xrouter.entrypoints.http.paging import page_query
from xrouter.entrypoints.http.routes import JSON

AnyRequest = Request[Any, Any, Any]


def build_conversation_routes(
    conversations: Conversations, codec: Codec, *, gateway_keys: bool = False
) -> list[HTTPRouteHandler]:
    """The conversation routes; `gateway_keys` as for `build_api_routes` (with keys on, a
    conversation is its key's)."""
    create_body = msgspec.json.Decoder(CreateConversation)
    update_body = msgspec.json.Decoder(UpdateConversation)
    items_body = msgspec.json.Decoder(AddItems)

    def api_key(request: AnyRequest) -> str | None:
        return credentials(request.headers, gateway_keys)[0] if gateway_keys else None

    def json(value: object) -> HTTPResponse[bytes]:
        return HTTPResponse(codec.encode(value), status_code=200, media_type=JSON)

    @post(
        "/conversations",
        status_code=200,
        summary="Create a conversation",
        description="Optional first `items` and `metadata`. docs/conversations.md.",
        operation_class=documented(Conversation, CreateConversation),
    )
    async def create_conversation(request: AnyRequest) -> HTTPResponse[bytes]:
        body = await request.body()
        # The body is optional: no body is an empty conversation.
        payload = decode(create_body, body) if body.strip() else CreateConversation()
        return json(await conversations.create(payload, api_key=api_key(request)))

    @get(
        "/conversations/{conversation_id:str}",
        summary="Retrieve a conversation",
        operation_class=documented(Conversation),
    )
    async def retrieve_conversation(
        request: AnyRequest, conversation_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        return json(await conversations.get(conversation_id, api_key=api_key(request)))

    @post(
        "/conversations/{conversation_id:str}",
        status_code=200,
        summary="Update a conversation's metadata",
        operation_class=documented(Conversation, UpdateConversation),
    )
    async def update_conversation(
        request: AnyRequest, conversation_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        payload = decode(update_body, await request.body())
        return json(await conversations.update(conversation_id, payload, api_key=api_key(request)))

    @delete(
        "/conversations/{conversation_id:str}",
        status_code=200,
        summary="Delete a conversation and its items",
        operation_class=documented(DeletedConversation),
    )
    async def delete_conversation(
        request: AnyRequest, conversation_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        return json(await conversations.delete(conversation_id, api_key=api_key(request)))

    @get(
        "/conversations/{conversation_id:str}/items",
        summary="List a conversation's items",
        description="Query: `after`, `limit` (1-100, default 20), `order` (`asc`, `desc`).",
        operation_class=documented(ConversationItemList),
    )
    async def list_items(
        request: AnyRequest, conversation_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        query = page_query(request.query_params)
        page = await conversations.list_items(
            conversation_id,
            after=query.after,
            limit=query.limit,
            order=query.order,
            api_key=api_key(request),
        )
        return json(page)

    @post(
        "/conversations/{conversation_id:str}/items",
        status_code=200,
        summary="Add items to a conversation",
        operation_class=documented(ConversationItemList, AddItems),
    )
    async def create_items(
        request: AnyRequest, conversation_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        payload = decode(items_body, await request.body())
        return json(
            await conversations.add_items(conversation_id, payload, api_key=api_key(request))
        )

    @get(
        "/conversations/{conversation_id:str}/items/{item_id:str}",
        summary="Retrieve a conversation item",
        operation_class=documented(InputItem),
    )
    async def retrieve_item(
        request: AnyRequest, conversation_id: FromPath[str], item_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        return json(
            await conversations.get_item(conversation_id, item_id, api_key=api_key(request))
        )

    @delete(
        "/conversations/{conversation_id:str}/items/{item_id:str}",
        status_code=200,
        summary="Delete a conversation item",
        description="Answers with the conversation.",
        operation_class=documented(Conversation),
    )
    async def delete_item(
        request: AnyRequest, conversation_id: FromPath[str], item_id: FromPath[str]
    ) -> HTTPResponse[bytes]:
        return json(
            await conversations.delete_item(conversation_id, item_id, api_key=api_key(request))
        )

    return [
        create_conversation,
        retrieve_conversation,
        update_conversation,
        delete_conversation,
        list_items,
        create_items,
        retrieve_item,
        delete_item,
    ]
