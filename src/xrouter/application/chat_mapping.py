"""Chat Completions <-> the canonical Responses flow: pure mapping, no I/O.

Requests map losslessly to `ResponseRequest` (system and developer messages stay messages, in
order, so one conversation reaches the provider identically whichever API it came through).
What the canonical request cannot express is either passed through to providers (`stop`,
`seed`, OpenRouter's extensions...: the list is `domain/passthrough.py`) or refused with a 400
naming the field (`n` > 1, audio).
Responses map back: the final `Response` to a `chat.completion`, stream events to
`chat.completion.chunk`s.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from xrouter.domain import events as ev
from xrouter.domain.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChatFinishReason,
    ChatFunctionCall,
    ChatMessage,
    ChatRequest,
    ChatResponseMessage,
    ChatStreamError,
    ChatToolCall,
    ChatUsage,
    CompletionTokensDetails,
    PromptTokensDetails,
)
from xrouter.domain.errors import InvalidRequest
from xrouter.domain.passthrough import CHAT_PASSTHROUGH, options_set
from xrouter.domain.responses import (
    FunctionCallItem,
    InputItem,
    JSONObject,
    MessageItem,
    OutputText,
    ReasoningConfig,
    Refusal,
    Response,
    ResponseRequest,
    TextConfig,
    ToolSpec,
    Usage,
)

# --- request ------------------------------------------------------------------------------------


def to_canonical(chat: ChatRequest) -> tuple[ResponseRequest, dict[str, Any]]:
    """The canonical request for `chat`, and the options only a provider can honour."""
    if not chat.messages:
        raise InvalidRequest(
            "`messages` must contain at least one message.",
            param="messages",
            code="invalid_value",
        )
    if chat.n is not None and chat.n != 1:
        raise InvalidRequest(
            "Only `n: 1` is supported: the gateway returns one choice per request.",
            param="n",
            code="invalid_value",
        )
    if chat.audio is not None or any(m != "text" for m in chat.modalities or []):
        raise InvalidRequest(
            'Only text output is supported: drop `audio` and ask for `modalities: ["text"]`.',
            param="audio" if chat.audio is not None else "modalities",
            code="invalid_value",
        )
    items: list[InputItem] = []
    for index, message in enumerate(chat.messages):
        items.extend(_message_items(message, f"messages[{index}]"))
    passthrough = options_set(chat, CHAT_PASSTHROUGH)
    text = None
    if chat.response_format is not None or chat.verbosity is not None:
        text = TextConfig(
            format=_text_format(chat.response_format),
            verbosity=chat.verbosity or "medium",
        )
    request = ResponseRequest(
        model=chat.model,
        models=chat.models,
        input=items,
        tools=[_tool(tool, index) for index, tool in enumerate(chat.tools or [])],
        tool_choice=_tool_choice(chat.tool_choice),
        parallel_tool_calls=True if chat.parallel_tool_calls is None else chat.parallel_tool_calls,
        temperature=chat.temperature,
        top_p=chat.top_p,
        presence_penalty=chat.presence_penalty,
        frequency_penalty=chat.frequency_penalty,
        top_logprobs=chat.top_logprobs,
        max_output_tokens=chat.max_completion_tokens or chat.max_tokens,
        stream=bool(chat.stream),
        # Chat Completions does not store by default; Responses does.
        store=bool(chat.store),
        metadata=chat.metadata,
        text=text,
        reasoning=ReasoningConfig(effort=chat.reasoning_effort) if chat.reasoning_effort else None,
        user=chat.user,
        safety_identifier=chat.safety_identifier,
        prompt_cache_key=chat.prompt_cache_key,
        service_tier=chat.service_tier,
    )
    return request, passthrough


def _message_items(message: ChatMessage, param: str) -> list[InputItem]:
    role = message.role
    if role in ("system", "developer", "user"):
        if message.content is None:
            raise InvalidRequest(
                f"A {role} message needs `content`.",
                param=f"{param}.content",
                code="missing_required_parameter",
            )
        return [InputItem(role=role, content=_input_content(message.content, param))]
    if role == "assistant":
        return _assistant_items(message, param)
    if role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest(
                "A tool message needs `tool_call_id`: the id of the assistant tool call it "
                "answers.",
                param=f"{param}.tool_call_id",
                code="missing_required_parameter",
            )
        return [
            InputItem(
                type="function_call_output",
                call_id=message.tool_call_id,
                output=_plain_text(message.content),
            )
        ]
    raise InvalidRequest(
        f"Unknown message role {role!r}; use system, developer, user, assistant or tool.",
        param=f"{param}.role",
        code="invalid_value",
    )


def _assistant_items(message: ChatMessage, param: str) -> list[InputItem]:
    items: list[InputItem] = []
    parts: list[JSONObject] = []
    if isinstance(message.content, str):
        if message.content:
            parts.append({"type": "output_text", "text": message.content, "annotations": []})
    elif message.content is not None:
        for part in message.content:
            if part.get("type") == "text":
                parts.append(
                    {"type": "output_text", "text": part.get("text", ""), "annotations": []}
                )
            elif part.get("type") == "refusal":
                parts.append({"type": "refusal", "refusal": part.get("refusal", "")})
    if message.refusal:
        parts.append({"type": "refusal", "refusal": message.refusal})
    if parts:
        items.append(InputItem(role="assistant", content=parts))
    for index, call in enumerate(message.tool_calls or []):
        if not call.id or not call.function.name:
            raise InvalidRequest(
                "An assistant tool call needs `id` and `function.name`.",
                param=f"{param}.tool_calls[{index}]",
                code="missing_required_parameter",
            )
        items.append(
            InputItem(
                type="function_call",
                call_id=call.id,
                name=call.function.name,
                arguments=call.function.arguments or "{}",
            )
        )
    return items


def _input_content(content: str | list[JSONObject], param: str) -> str | list[JSONObject]:
    if isinstance(content, str):
        return content
    parts: list[JSONObject] = []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url = image.get("url") if isinstance(image, dict) else image
            converted: JSONObject = {"type": "input_image", "image_url": url}
            if isinstance(image, dict) and image.get("detail"):
                converted["detail"] = image["detail"]
            parts.append(converted)
        elif kind == "file":
            file = part.get("file") or {}
            parts.append(
                {
                    "type": "input_file",
                    **{
                        key: file[key]
                        for key in ("file_id", "file_data", "filename")
                        if key in file
                    },
                }
            )
        else:
            raise InvalidRequest(
                f"Content parts of type {kind!r} are not supported; send text, image_url or "
                "file parts.",
                param=f"{param}.content[{index}].type",
                code="invalid_value",
            )
    return parts


def _plain_text(content: str | list[JSONObject] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content)


def _tool(tool: Any, index: int) -> ToolSpec:
    if tool.type != "function":
        return ToolSpec(type=tool.type)  # kept, like unknown Responses tool kinds
    if tool.function is None:
        raise InvalidRequest(
            "A function tool needs `function` with a `name`.",
            param=f"tools[{index}].function",
            code="missing_required_parameter",
        )
    fn = tool.function
    return ToolSpec(
        type="function",
        name=fn.name,
        description=fn.description,
        parameters=fn.parameters,
        strict=fn.strict,
    )


def _tool_choice(choice: str | JSONObject | None) -> str | JSONObject:
    if choice is None:
        return "auto"
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function") or {}
        return {"type": "function", "name": function.get("name")}
    return choice


def _text_format(response_format: JSONObject | None) -> JSONObject:
    if response_format is None:
        return {"type": "text"}
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema") or {}
        return {
            "type": "json_schema",
            "name": schema.get("name"),
            "schema": schema.get("schema"),
            "strict": schema.get("strict"),
            "description": schema.get("description"),
        }
    return dict(response_format)


# --- response -----------------------------------------------------------------------------------


def chat_id(response_id: str) -> str:
    return "chatcmpl-" + response_id.removeprefix("resp_")


def to_chat_usage(usage: Usage) -> ChatUsage:
    return ChatUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(
            cached_tokens=usage.input_tokens_details.cached_tokens
        ),
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=usage.output_tokens_details.reasoning_tokens
        ),
    )


def finish_reason(response: Response) -> ChatFinishReason:
    if any(isinstance(item, FunctionCallItem) for item in response.output):
        return "tool_calls"
    details = response.incomplete_details
    if details is not None:
        return "length" if details.reason == "max_output_tokens" else "content_filter"
    return "stop"


def to_chat_completion(response: Response) -> ChatCompletion:
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[ChatToolCall] = []
    for item in response.output:
        if isinstance(item, MessageItem):
            for part in item.content:
                if isinstance(part, OutputText):
                    texts.append(part.text)
                elif isinstance(part, Refusal):
                    refusals.append(part.refusal)
        elif isinstance(item, FunctionCallItem):
            calls.append(
                ChatToolCall(
                    id=item.call_id,
                    type="function",
                    function=ChatFunctionCall(name=item.name, arguments=item.arguments),
                )
            )
    message = ChatResponseMessage(
        content="".join(texts) if texts else None,
        refusal="".join(refusals) if refusals else None,
        tool_calls=calls or None,
    )
    return ChatCompletion(
        id=chat_id(response.id),
        created=response.created_at,
        model=response.model,
        choices=[ChatChoice(index=0, message=message, finish_reason=finish_reason(response))],
        usage=to_chat_usage(response.usage) if response.usage else None,
    )


class ChatTextChunk(Struct, frozen=True, gc=False):
    """A chat chunk whose delta is content text only (nearly every chunk of a stream), kept
    as its parts: its wire form is exactly `chunk()`'s. A writer frames it from the stream's
    constant fields, encoded once, plus the text, instead of building and encoding the four
    Structs of a chunk per text delta (issue 16: ~0.8 µs of every relayed chunk)."""

    id: str
    created: int
    model: str
    text: str

    def chunk(self) -> ChatCompletionChunk:
        """The chunk this stands for, as it is encoded on the wire."""
        return ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChatChunkChoice(index=0, delta=ChatDelta(content=self.text))],
        )


class ChunkMapper:
    """Maps one response's stream events to chat chunks (one id for the whole stream)."""

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._id = ""
        self._created = 0
        self._model = ""
        self._tool_index: dict[str, int] = {}  # function_call item id -> chat tool index

    def _chunk(
        self, delta: ChatDelta, finish: ChatFinishReason | None = None
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self._id,
            created=self._created,
            model=self._model,
            choices=[ChatChunkChoice(index=0, delta=delta, finish_reason=finish)],
        )

    def map_batch(
        self, events: list[ev.StreamEvent]
    ) -> list[ChatCompletionChunk | ChatTextChunk | ChatStreamError]:
        """The chunks of a batch of events, in order: those of `map` for each, joined (text
        deltas, nearly all of them, mapped inline: no list per event)."""
        out: list[ChatCompletionChunk | ChatTextChunk | ChatStreamError] = []
        text_delta = ev.OutputTextDelta
        for event in events:
            if type(event) is text_delta:
                out.append(ChatTextChunk(self._id, self._created, self._model, event.delta))
            else:
                out += self.map(event)
        return out

    def map(
        self, event: ev.StreamEvent
    ) -> list[ChatCompletionChunk | ChatTextChunk | ChatStreamError]:
        """The chunks for one event (often none). A failure becomes one error frame."""
        if isinstance(event, ev.OutputTextDelta):  # nearly every event of a stream: first
            return [ChatTextChunk(self._id, self._created, self._model, event.delta)]
        if isinstance(event, ev.ErrorEvent):
            return [ChatStreamError(error=event.error)]
        if isinstance(event, ev.ResponseCreated):
            response = event.response
            self._id, self._created, self._model = (
                chat_id(response.id),
                response.created_at,
                response.model,
            )
            return [self._chunk(ChatDelta(role="assistant", content=""))]
        if isinstance(event, ev.OutputItemAdded) and isinstance(event.item, FunctionCallItem):
            index = len(self._tool_index)
            self._tool_index[event.item.id] = index
            call = ChatToolCall(
                index=index,
                id=event.item.call_id,
                type="function",
                function=ChatFunctionCall(name=event.item.name, arguments=""),
            )
            return [self._chunk(ChatDelta(tool_calls=[call]))]
        if isinstance(event, ev.FunctionCallArgumentsDelta):
            call = ChatToolCall(
                index=self._tool_index[event.item_id],
                function=ChatFunctionCall(arguments=event.delta),
            )
            return [self._chunk(ChatDelta(tool_calls=[call]))]
        if isinstance(event, ev.ResponseCompleted | ev.ResponseIncomplete):
            chunks: list[ChatCompletionChunk | ChatTextChunk | ChatStreamError] = [
                self._chunk(ChatDelta(), finish_reason(event.response))
            ]
            if self._include_usage and event.response.usage is not None:
                chunks.append(
                    ChatCompletionChunk(
                        id=self._id,
                        created=self._created,
                        model=self._model,
                        choices=[],
                        usage=to_chat_usage(event.response.usage),
                    )
                )
            return chunks
        return []
