"""Chat Completions wire types (RESPONSES_API.md part B), as msgspec Structs.

Used twice: by the Chat Completions adapter (clients speaking chat to XRouter) and by
providers whose upstream speaks chat. Unknown fields are ignored on decode.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct, field

from xrouter.domain.events import ErrorBody
from xrouter.domain.responses import JSONObject

# --- request --------------------------------------------------------------------------------


class ChatFunctionCall(Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ChatToolCall(Struct, omit_defaults=True):
    id: str | None = None
    type: str | None = None  # "function"; absent on argument-fragment deltas
    function: ChatFunctionCall = field(default_factory=ChatFunctionCall)
    index: int | None = None  # only in stream deltas


class ChatMessage(Struct, omit_defaults=True):
    """One message of any role; `content` is a string or a list of parts."""

    role: str
    content: str | list[JSONObject] | None = None
    name: str | None = None
    tool_calls: list[ChatToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    # Reasoning text some upstreams attach to assistant messages (DeepSeek, OpenRouter).
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChatFunctionDef(Struct, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: JSONObject | None = None
    strict: bool | None = None


class ChatTool(Struct, omit_defaults=True):
    type: str = "function"
    function: ChatFunctionDef | None = None


class ChatStreamOptions(Struct, omit_defaults=True):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatRequest(Struct, kw_only=True, omit_defaults=True):
    """Body of `POST /v1/chat/completions`."""

    model: str
    messages: list[ChatMessage]
    tools: list[ChatTool] | None = None
    tool_choice: str | JSONObject | None = None
    parallel_tool_calls: bool | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    response_format: JSONObject | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    stream: bool | None = None
    stream_options: ChatStreamOptions | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None
    audio: JSONObject | None = None
    web_search_options: JSONObject | None = None
    # Options only some upstreams understand (OpenRouter's routing, fallbacks, sampling
    # extras): passed through untouched to the provider (domain/passthrough.py).
    provider: JSONObject | None = None
    models: list[str] | None = None
    route: str | None = None
    reasoning: JSONObject | None = None
    include_reasoning: bool | None = None
    transforms: list[str] | None = None
    plugins: list[JSONObject] | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    min_p: float | None = None
    top_a: float | None = None
    prediction: JSONObject | None = None
    debug: JSONObject | None = None


# --- response -------------------------------------------------------------------------------


class PromptTokensDetails(Struct):
    cached_tokens: int = 0
    audio_tokens: int = 0


class CompletionTokensDetails(Struct):
    reasoning_tokens: int = 0
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class ChatUsage(Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = field(
        default_factory=CompletionTokensDetails
    )


ChatFinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class ChatResponseMessage(Struct):
    content: str | None
    role: Literal["assistant"] = "assistant"
    refusal: str | None = None
    annotations: list[JSONObject] = field(default_factory=list)
    tool_calls: list[ChatToolCall] | None = None


class ChatChoice(Struct):
    index: int
    message: ChatResponseMessage
    finish_reason: ChatFinishReason
    logprobs: JSONObject | None = None


class ChatCompletion(Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = "default"


class ChatDelta(Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChatToolCall] | None = None


class ChatChunkChoice(Struct):
    index: int
    delta: ChatDelta
    finish_reason: ChatFinishReason | None = None
    logprobs: JSONObject | None = None


class ChatCompletionChunk(Struct, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    system_fingerprint: str | None = None
    service_tier: str | None = "default"
    usage: ChatUsage | None = None


class ChatStreamError(Struct):
    """A failure after a chat stream started: `data: {"error": {...}}`."""

    error: ErrorBody
