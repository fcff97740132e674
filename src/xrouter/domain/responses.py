"""Canonical Responses API types: the request, its items, usage and the response object.

These are the wire shapes of the OpenAI Responses API (see shared/reference/RESPONSES_API.md),
declared once as msgspec Structs so decoding validates and encoding is fast. Unknown fields are
ignored on decode: real clients (Codex, the Agents SDK) send fields we do not model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

from xrouter.domain.passthrough import RESPONSES_PASSTHROUGH, options_set

JSONObject = dict[str, Any]

# --- request -------------------------------------------------------------------------------


class InputItem(Struct, omit_defaults=True):
    """One input item, any kind. Kept flat because `type` may be absent on messages.

    The Agents SDK sends bare `{role, content}` messages, so a tagged union cannot decode them;
    one permissive struct validates the field types and `normalize` checks per-kind rules.
    """

    type: str = "message"
    id: str | None = None
    status: str | None = None
    # message
    role: str | None = None
    content: str | list[JSONObject] | None = None
    phase: str | None = None
    # function_call / function_call_output
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[JSONObject] | None = None
    # reasoning
    summary: list[JSONObject] | None = None
    encrypted_content: str | None = None


class FunctionTool(Struct, omit_defaults=False):
    """A tool as echoed on the response: Open Responses wants every key present, nullable."""

    name: str
    type: Literal["function"] = "function"
    description: str | None = None
    parameters: JSONObject | None = None
    strict: bool | None = None


class ToolSpec(Struct):
    """Any tool a client declares. Every provider uses `function` tools; other kinds
    (web_search, namespace, mcp ...) are never a 400: a Responses upstream is sent them as the
    client wrote them (`definition`), a chat upstream cannot carry them and drops them."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: JSONObject | None = None
    strict: bool | None = None
    definition: JSONObject | None = None
    """The whole tool as the client sent it, for kinds other than `function` (whose other keys
    the fields above do not hold): filled by `with_tool_definitions` after decoding."""


class ReasoningConfig(Struct, omit_defaults=False):
    effort: str | None = None
    summary: str | None = None


class TextConfig(Struct, omit_defaults=False):
    format: JSONObject = field(default_factory=lambda: {"type": "text"})
    verbosity: str | None = "medium"


Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(ge=0, le=1)]
PositiveInt = Annotated[int, Meta(ge=1)]
TopLogprobs = Annotated[int, Meta(ge=0, le=20)]


class ResponseRequest(Struct, kw_only=True):
    """Body of `POST /v1/responses`."""

    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str | JSONObject = "auto"
    parallel_tool_calls: bool = True
    temperature: Temperature | None = None
    top_p: TopP | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    top_logprobs: TopLogprobs | None = None
    max_output_tokens: PositiveInt | None = None
    max_tool_calls: PositiveInt | None = None
    stream: bool = False
    store: bool = True
    background: bool = False
    previous_response_id: str | None = None
    conversation: str | JSONObject | None = None
    metadata: dict[str, str] | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    client_metadata: JSONObject | None = None
    """Codex's per-request metadata: sent on to a Responses upstream, which has the field."""
    # OpenRouter extensions (domain/passthrough.py), passed through to providers.
    provider: JSONObject | None = None
    models: list[str] | None = None
    transforms: list[str] | None = None
    plugins: list[JSONObject] | None = None

    def passthrough(self) -> JSONObject:
        """The extension options the client sent, for `GenerationRequest.passthrough`."""
        return options_set(self, RESPONSES_PASSTHROUGH)


# --- output items ---------------------------------------------------------------------------


class OutputText(Struct, tag_field="type", tag="output_text"):
    text: str
    annotations: list[JSONObject] = field(default_factory=list)
    logprobs: list[JSONObject] = field(default_factory=list)


class Refusal(Struct, tag_field="type", tag="refusal"):
    refusal: str


class SummaryText(Struct, tag_field="type", tag="summary_text"):
    text: str


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class MessageItem(Struct, tag_field="type", tag="message"):
    id: str
    status: ItemStatus
    content: list[OutputText | Refusal]
    role: Literal["assistant"] = "assistant"


class FunctionCallItem(Struct, tag_field="type", tag="function_call"):
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class ReasoningItem(Struct, tag_field="type", tag="reasoning", omit_defaults=True):
    """`status` and `encrypted_content` are left out when absent: Open Responses rejects a
    null `encrypted_content` (its schema says string, optional)."""

    id: str
    summary: list[SummaryText]
    status: ItemStatus | None = None
    # Opaque state the upstream wants back next turn (OpenAI encrypted reasoning, OpenRouter
    # reasoning_details as JSON); stateless clients round-trip it by echoing the item.
    encrypted_content: str | None = None


class CompactionItem(Struct, tag_field="type", tag="compaction", omit_defaults=True):
    """A compacted stretch of conversation (`POST /v1/responses/compact`): opaque to the
    client, which sends it back as input. XRouter seals its own (application/compaction.py);
    a Responses upstream's own items pass through as they came. As input it is an
    `InputItem` of type `compaction` (same fields)."""

    id: str
    encrypted_content: str
    created_by: str | None = None


OutputItem = MessageItem | FunctionCallItem | ReasoningItem | CompactionItem


# --- usage and the response object ------------------------------------------------------------


# Usage structs hold only numbers, so they can never be part of a reference cycle:
# `gc=False` keeps the collector from walking the thousands a usage ledger holds.


class InputTokensDetails(Struct, gc=False):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(Struct, gc=False):
    reasoning_tokens: int = 0


class Usage(Struct, gc=False):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails = field(default_factory=InputTokensDetails)
    output_tokens_details: OutputTokensDetails = field(default_factory=OutputTokensDetails)


class ResponseError(Struct):
    code: str
    message: str


class IncompleteDetails(Struct):
    reason: Literal["max_output_tokens", "content_filter"]


ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]


class ConversationRef(Struct):
    """The conversation a response belongs to (its turn is appended there when it ends)."""

    id: str


class Response(Struct, kw_only=True):
    """The response object: the non-stream body and the snapshot inside lifecycle events.

    Every key is always present (nullable ones as null): Open Responses and the strict SDK
    reject a snapshot with a missing key.
    """

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: ResponseStatus
    model: str
    output: list[OutputItem] = field(default_factory=list)
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[FunctionTool] = field(default_factory=list)
    tool_choice: str | JSONObject = "auto"
    parallel_tool_calls: bool = True
    text: TextConfig = field(default_factory=TextConfig)
    reasoning: ReasoningConfig = field(default_factory=ReasoningConfig)
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    truncation: Literal["auto", "disabled"] = "disabled"
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    store: bool = True
    background: bool = False
    service_tier: str = "default"
    metadata: dict[str, str] = field(default_factory=dict)
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    user: str | None = None
    usage: Usage | None = None
    conversation: ConversationRef | None = None


class DeletedResponse(Struct):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class InputTokens(Struct):
    """Body of `POST /v1/responses/input_tokens`."""

    input_tokens: int
    object: Literal["response.input_tokens"] = "response.input_tokens"


class InputItemList(Struct):
    data: list[JSONObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: Literal["list"] = "list"


def output_text(response: Response) -> str:
    """All `output_text` parts joined, as the SDK's `response.output_text` does."""
    return "".join(
        part.text
        for item in response.output
        if isinstance(item, MessageItem)
        for part in item.content
        if isinstance(part, OutputText)
    )


_LISTED_WITH_STATUS = frozenset({"message", "function_call", "function_call_output"})
"""Item kinds Open Responses and the strict SDK list only with a `status` (clients rarely send
one on input: a stored input item is a completed one)."""


def item_to_dict(item: InputItem) -> JSONObject:
    """An input item as the API lists it, in the shape the strict SDK and Open Responses
    require: `type` and `status` always present, message text as a list of parts (plain-string
    content is rejected there), and `annotations` on every `output_text` part."""
    data: JSONObject = {"type": item.type, **msgspec.to_builtins(item)}
    if item.type in _LISTED_WITH_STATUS and item.status is None:
        data["status"] = "completed"
    if item.type == "message":
        if isinstance(item.content, str):
            part = "output_text" if item.role == "assistant" else "input_text"
            data["content"] = [{"type": part, "text": item.content}]
        if isinstance(data.get("content"), list):
            data["content"] = [_listed_part(part) for part in data["content"]]
    return data


def _listed_part(part: JSONObject) -> JSONObject:
    if part.get("type") == "output_text" and "annotations" not in part:
        return {**part, "annotations": []}
    return part


class StoredResponse(Struct, kw_only=True):
    """What the response store keeps: the response and the input that produced it.

    `input_items` are this request's own items (with ids, for `/input_items`); the earlier
    turns are reached through `response.previous_response_id`, so a long conversation costs
    linear, not quadratic, storage.
    """

    response: Response
    input_items: list[InputItem]
    owner: str | None = None
    """The id of the gateway key that created it (None when authentication is off): only
    that key may read or delete it. Kept in the store, never sent to a client."""
