"""The pure half of the ingest stage: check a decoded request against the API's rules and
normalise it (string input -> one user message, tools -> echoable function tools).

Decoding has already checked field types; this checks what types cannot say (required fields
per item kind, metadata limits, mutually exclusive fields). Errors name the offending `param`.
"""

from __future__ import annotations

from xrouter.domain.conversations import conversation_id
from xrouter.domain.errors import InvalidRequest
from xrouter.domain.responses import (
    ConversationRef,
    FunctionTool,
    InputItem,
    ReasoningConfig,
    Response,
    ResponseRequest,
    TextConfig,
)

MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512

# Fields each input item kind must carry, beyond `type`.
_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "message": ("role", "content"),
    "function_call": ("call_id", "name", "arguments"),
    "function_call_output": ("call_id", "output"),
    "reasoning": ("summary",),
    "item_reference": ("id",),
    "compaction": ("encrypted_content",),
}


def input_items(request: ResponseRequest) -> list[InputItem]:
    """The request's input as a list of items; a string is one user message."""
    if isinstance(request.input, str):
        return [InputItem(type="message", role="user", content=request.input)]
    return request.input


_OPAQUE_CONTEXT = frozenset({"item_reference", "compaction"})
"""Item kinds that may stand for function calls this check cannot see."""


def check_tool_outputs(history: list[InputItem], own: list[InputItem]) -> None:
    """Raise InvalidRequest when one of the request's `own` items is a `function_call_output`
    whose `call_id` no earlier `function_call` (in `history` or before it) made: the API
    refuses a result of a call the model never asked for."""
    calls: set[str | None] = set()
    for item in history:
        if item.type in _OPAQUE_CONTEXT:
            return
        if item.type == "function_call":
            calls.add(item.call_id)
    for index, item in enumerate(own):
        if item.type in _OPAQUE_CONTEXT:
            return
        if item.type == "function_call":
            calls.add(item.call_id)
        elif item.type == "function_call_output" and item.call_id not in calls:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id "
                f"'{item.call_id}'. Send it after the function_call it answers, or continue "
                "the response that made the call (previous_response_id).",
                param=f"input[{index}]",
                code="invalid_value",
            )


def validate(request: ResponseRequest) -> None:
    """Raise InvalidRequest, naming the param, if the request breaks an API rule."""
    if not request.model.strip():
        raise InvalidRequest(
            "`model` must be a non-empty model id such as 'local/echo'.",
            param="model",
            code="invalid_value",
        )
    if request.previous_response_id is not None and request.conversation is not None:
        raise InvalidRequest(
            "`previous_response_id` and `conversation` cannot be used together; send one.",
            param="previous_response_id",
            code="invalid_value",
        )
    conversation_id(request)  # an id or {"id": ...}, else a 400 naming `conversation`
    if request.background and not request.store:
        raise InvalidRequest(
            "`background: true` needs `store: true`: a background response is polled, "
            "replayed and cancelled by its id, so it must be stored. Send `store: true` "
            "(the default) or drop `background`.",
            param="background",
            code="invalid_value",
        )
    if not isinstance(request.input, str):
        for index, item in enumerate(request.input):
            _validate_item(item, f"input[{index}]")
    for index, tool in enumerate(request.tools):
        if tool.type == "function" and not tool.name:
            raise InvalidRequest(
                "A function tool needs a `name`.",
                param=f"tools[{index}].name",
                code="missing_required_parameter",
            )
    _validate_metadata(request.metadata)


def validate_items(items: list[InputItem], param: str) -> None:
    """Each item against its kind's rules, for items that come outside a request (a
    conversation's); errors name `param[index]`."""
    for index, item in enumerate(items):
        _validate_item(item, f"{param}[{index}]")


def validate_metadata(metadata: dict[str, str] | None) -> None:
    """`metadata` within the API's limits (keys, key and value lengths)."""
    _validate_metadata(metadata)


def _validate_item(item: InputItem, param: str) -> None:
    required = _REQUIRED_FIELDS.get(item.type)
    if required is None:
        # Unknown item kinds are not ours to judge: keep them (providers may understand them).
        return
    for name in required:
        if getattr(item, name) is None:
            raise InvalidRequest(
                f"An input item of type '{item.type}' needs `{name}`.",
                param=f"{param}.{name}",
                code="missing_required_parameter",
            )
    if item.type == "message" and item.role not in MESSAGE_ROLES:
        raise InvalidRequest(
            f"Unknown message role {item.role!r}; use one of {', '.join(sorted(MESSAGE_ROLES))}.",
            param=f"{param}.role",
            code="invalid_value",
        )


def _validate_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > METADATA_MAX_KEYS:
        raise InvalidRequest(
            f"`metadata` may have at most {METADATA_MAX_KEYS} keys; it has {len(metadata)}.",
            param="metadata",
            code="invalid_value",
        )
    for key, value in metadata.items():
        if len(key) > METADATA_MAX_KEY_CHARS or len(value) > METADATA_MAX_VALUE_CHARS:
            raise InvalidRequest(
                f"`metadata` keys are limited to {METADATA_MAX_KEY_CHARS} characters and "
                f"values to {METADATA_MAX_VALUE_CHARS}; key {key[:64]!r} is over.",
                param=f"metadata.{key[:64]}",
                code="invalid_value",
            )


def function_tools(request: ResponseRequest) -> list[FunctionTool]:
    """Function tools as echoed on the response. Other tool kinds are dropped: the Responses
    object only describes function tools, and an unknown kind must not fail a request."""
    return [
        FunctionTool(
            name=tool.name or "",
            description=tool.description,
            parameters=tool.parameters,
            # OpenAI treats a missing `strict` as true.
            strict=True if tool.strict is None else tool.strict,
        )
        for tool in request.tools
        if tool.type == "function"
    ]


def _echo_text(text: TextConfig | None) -> TextConfig:
    if text is None:
        return TextConfig()
    fmt = dict(text.format)
    if fmt.get("type") == "json_schema":
        # Open Responses wants these keys on an echoed json_schema format, even when null.
        for key in ("name", "description", "schema"):
            fmt.setdefault(key, None)
        if fmt.get("strict") is None:
            fmt["strict"] = False  # OpenAI's default; Open Responses wants a boolean
    return TextConfig(format=fmt, verbosity=text.verbosity or "medium")


def initial_response(request: ResponseRequest, response_id: str, created_at: int) -> Response:
    """The response object as it stands when generation starts (status in_progress)."""
    return Response(
        id=response_id,
        created_at=created_at,
        status="in_progress",
        model=request.model,
        instructions=request.instructions,
        previous_response_id=request.previous_response_id,
        tools=function_tools(request),
        tool_choice=request.tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        text=_echo_text(request.text),
        reasoning=request.reasoning or ReasoningConfig(),
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        top_logprobs=request.top_logprobs or 0,
        truncation=request.truncation or "disabled",
        max_output_tokens=request.max_output_tokens,
        max_tool_calls=request.max_tool_calls,
        store=request.store,
        background=request.background,
        service_tier=request.service_tier or "default",
        metadata=request.metadata or {},
        safety_identifier=request.safety_identifier,
        prompt_cache_key=request.prompt_cache_key,
        user=request.user,
        conversation=_conversation_ref(request),
    )


def _conversation_ref(request: ResponseRequest) -> ConversationRef | None:
    found = conversation_id(request)
    return None if found is None else ConversationRef(id=found)
