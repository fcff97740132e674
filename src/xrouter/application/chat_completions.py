"""Use case: Chat Completions (`POST /v1/chat/completions`) as an adapter over CreateResponse.

The chat request is mapped to the canonical request, the same engine runs the same lifecycle,
and the canonical events are mapped back. No chat-specific branch exists in the engine or the
providers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from xrouter.application.chat_mapping import (
    ChatTextChunk,
    ChunkMapper,
    to_canonical,
    to_chat_completion,
)
from xrouter.application.create_response import CreateResponse
from xrouter.application.execution import DisconnectSignal, Execution
from xrouter.application.ports import CallContext
from xrouter.domain.chat import ChatCompletion, ChatCompletionChunk, ChatRequest, ChatStreamError

ChatStreamItem = ChatCompletionChunk | ChatTextChunk | ChatStreamError


class ChatExecution:
    """A running chat request: `completion()` (non-stream) or `chunks()` (stream)."""

    def __init__(self, execution: Execution, include_usage: bool) -> None:
        self.execution = execution
        self._mapper = ChunkMapper(include_usage)

    async def completion(self) -> ChatCompletion:
        return to_chat_completion(await self.execution.result())

    async def chunks(self) -> AsyncIterator[ChatStreamItem]:
        """The stream's chunks until its end or until the client is gone. Raises the
        GatewayError when generation failed before any output (so before the first chunk)."""
        async for event in self.execution.events():
            for chunk in self._mapper.map(event):
                yield chunk

    async def chunk_batches(self) -> AsyncIterator[list[ChatStreamItem]]:
        """The same chunks as `chunks()`, as lists: those of each `Execution.batches()` list,
        for one write each (a list whose events map to no chunk is skipped)."""
        mapper = self._mapper
        async for batch in self.execution.batches():
            chunks = mapper.map_batch(batch)
            if chunks:
                yield chunks

    def detach(self) -> None:
        self.execution.detach()


class ChatCompletions:
    def __init__(self, create_response: CreateResponse) -> None:
        self._create_response = create_response

    async def start(
        self,
        chat: ChatRequest,
        *,
        request_id: str | None = None,
        disconnect: DisconnectSignal | None = None,
        context: CallContext | None = None,
        api_key: str | None = None,
    ) -> ChatExecution:
        request, passthrough = to_canonical(chat)
        execution = await self._create_response.start(
            request,
            request_id=request_id,
            disconnect=disconnect,
            passthrough=passthrough,
            context=context,
            api="chat",
            api_key=api_key,
        )
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        return ChatExecution(execution, include_usage)

    async def run(self, chat: ChatRequest, *, request_id: str | None = None) -> ChatCompletion:
        return await (await self.start(chat, request_id=request_id)).completion()
