"""Canonical request -> upstream Chat Completions payload (RESPONSES_API.md part B). Pure.

The inverse of `application.chat_mapping.to_canonical`: a conversation that came in as chat
goes out as the same chat. Choices worth knowing:

- `instructions` become a leading `system` message; system/developer messages keep their role.
- An assistant message and the function calls right after it become ONE assistant message
  (content + `tool_calls`), as chat represents a turn; consecutive calls share it.
- Reasoning items carry upstream state only when their `encrypted_content` is a JSON list of
  `reasoning_details` blocks (OpenRouter); those go back unchanged on the next assistant
  message when the dialect says so. Other reasoning items are dropped: chat has no slot.
- Only function tools are sent; hosted tool kinds have no chat equivalent.
- The gateway is the store: upstream `store`/`metadata` are never sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from xrouter.application.ports import GenerationRequest
from xrouter.domain.errors import InvalidRequest
from xrouter.domain.passthrough import CHAT_PASSTHROUGH, forwarded
from xrouter.domain.responses import InputItem, JSONObject, ResponseRequest, ToolSpec

FORWARDED_OPTIONS = CHAT_PASSTHROUGH
"""The passthrough options (domain/passthrough.py) a chat upstream is sent: all of them, as
they are Chat Completions fields. None is a field the protocol sets itself (`model`,
`messages`, `stream`), so a client option cannot override those."""


@dataclass(frozen=True, slots=True)
class ChatDialect:
    """What differs between servers that all claim to speak Chat Completions."""

    max_tokens_field: str = "max_completion_tokens"
    """OpenAI wants `max_completion_tokens` (reasoning models reject `max_tokens`); many
    other servers (and OpenRouter's docs) know only `max_tokens`."""
    reasoning_details: bool = False
    """Send `reasoning_details` back on assistant messages (OpenRouter)."""
    reasoning_object: bool = False
    """Express `reasoning.effort` as `reasoning: {effort}` (OpenRouter) rather than
    `reasoning_effort` (OpenAI)."""


_DEFAULT_DIALECT = ChatDialect()
_details_decoder = msgspec.json.Decoder(list[JSONObject])


def build_chat_payload(
    call: GenerationRequest, *, stream: bool, dialect: ChatDialect = _DEFAULT_DIALECT
) -> JSONObject:
    """The JSON body (as builtins) of `POST /chat/completions` for `call`."""
    request = call.request
    payload: JSONObject = {
        "model": call.route.upstream_model,
        "messages": chat_messages(call.items, call.instructions, dialect),
    }
    payload.update(_tool_options(request))
    payload.update(_sampling_options(request, dialect))
    payload.update(forwarded(call.passthrough, FORWARDED_OPTIONS))
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


# --- messages -----------------------------------------------------------------------------------


def chat_messages(
    items: list[InputItem], instructions: str | None, dialect: ChatDialect = _DEFAULT_DIALECT
) -> list[JSONObject]:
    messages: list[JSONObject] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    # The assistant message that function calls (and a following reasoning hand-back) attach
    # to; any other item closes it.
    open_assistant: JSONObject | None = None
    pending_details: list[JSONObject] = []
    for index, item in enumerate(items):
        param = f"input[{index}]"
        kind = item.type
        if kind == "reasoning":
            if dialect.reasoning_details:
                pending_details.extend(_reasoning_details(item))
            open_assistant = None
            continue
        if kind == "function_call":
            if open_assistant is None:
                open_assistant = {"role": "assistant", "content": None}
                _attach_details(open_assistant, pending_details)
                messages.append(open_assistant)
            open_assistant.setdefault("tool_calls", []).append(
                {
                    "id": item.call_id,
                    "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments or "{}"},
                }
            )
            continue
        open_assistant = None
        if kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.call_id,
                    "content": _tool_output(item.output, param),
                }
            )
        elif kind == "message":
            message = _message(item, param)
            if item.role == "assistant":
                _attach_details(message, pending_details)
                open_assistant = message
            messages.append(message)
        else:
            raise InvalidRequest(
                f"Input items of type '{kind}' cannot be sent to a Chat Completions upstream; "
                "send messages, function calls and their outputs.",
                param=f"{param}.type",
                code="invalid_value",
            )
    return messages


def _reasoning_details(item: InputItem) -> list[JSONObject]:
    """The `reasoning_details` blocks an earlier turn received, or none (e.g. the encrypted
    content came from another kind of upstream)."""
    if not item.encrypted_content or not item.encrypted_content.startswith("["):
        return []
    try:
        return _details_decoder.decode(item.encrypted_content)
    except msgspec.DecodeError:
        return []


def _attach_details(message: JSONObject, pending: list[JSONObject]) -> None:
    if pending:
        message["reasoning_details"] = list(pending)
        pending.clear()


def _message(item: InputItem, param: str) -> JSONObject:
    role = item.role or "user"
    content = item.content
    if role == "assistant":
        return _assistant_message(content)
    if role == "user":
        return {"role": role, "content": _user_content(content, param)}
    # system / developer: plain text, which every server understands
    return {"role": role, "content": _joined_text(content)}


def _assistant_message(content: str | list[JSONObject] | None) -> JSONObject:
    message: JSONObject = {"role": "assistant"}
    if content is None or isinstance(content, str):
        message["content"] = content
        return message
    texts: list[str] = []
    refusals: list[str] = []
    for part in content:
        kind = part.get("type")
        if kind == "refusal":
            refusals.append(str(part.get("refusal", "")))
        elif kind in ("output_text", "input_text", "text"):
            texts.append(str(part.get("text", "")))
    message["content"] = "".join(texts) if texts else None
    if refusals:
        message["refusal"] = "".join(refusals)
    return message


def _user_content(content: str | list[JSONObject] | None, param: str) -> str | list[JSONObject]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return [_user_part(part, f"{param}.content[{index}]") for index, part in enumerate(content)]


def _user_part(part: JSONObject, param: str) -> JSONObject:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not url:
            raise InvalidRequest(
                "Chat Completions upstreams take images by URL or data URL only; send "
                "`image_url` instead of `file_id`.",
                param=f"{param}.image_url",
                code="invalid_value",
            )
        image: JSONObject = {"url": url}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {key: part[key] for key in ("file_id", "file_data", "filename") if key in part}
        if "file_id" not in file and "file_data" not in file:
            raise InvalidRequest(
                "Chat Completions upstreams take files as `file_id` or `file_data` only; "
                "`file_url` cannot be forwarded.",
                param=param,
                code="invalid_value",
            )
        return {"type": "file", "file": file}
    raise InvalidRequest(
        f"Content parts of type {kind!r} cannot be sent to a Chat Completions upstream; send "
        "input_text, input_image or input_file parts.",
        param=f"{param}.type",
        code="invalid_value",
    )


def _joined_text(content: str | list[JSONObject] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if "text" in part)


def _tool_output(output: str | list[JSONObject] | None, param: str) -> str:
    if output is None or isinstance(output, str):
        return output or ""
    for index, part in enumerate(output):
        if part.get("type") not in ("input_text", "output_text", "text"):
            raise InvalidRequest(
                "Chat Completions upstreams take text-only tool outputs; "
                f"part of type {part.get('type')!r} cannot be forwarded.",
                param=f"{param}.output[{index}].type",
                code="invalid_value",
            )
    return _joined_text(output)


# --- options --------------------------------------------------------------------------------


def _tool_options(request: ResponseRequest) -> JSONObject:
    tools = [
        {"type": "function", "function": function_definition(tool)}
        for tool in request.tools
        if tool.type == "function" and tool.name
    ]
    if not tools:
        # OpenAI rejects tool_choice / parallel_tool_calls without tools.
        return {}
    return {
        "tools": tools,
        "tool_choice": chat_tool_choice(request.tool_choice),
        "parallel_tool_calls": request.parallel_tool_calls,
    }


def function_definition(tool: ToolSpec) -> JSONObject:
    """A function tool as both OpenAI APIs describe it (chat nests it under `function`, the
    Responses API spreads it into the tool)."""
    function: JSONObject = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = tool.parameters if tool.parameters is not None else {"type": "object"}
    if tool.strict is not None:  # absent means the upstream's default (true for OpenAI)
        function["strict"] = tool.strict
    return function


def chat_tool_choice(choice: str | Mapping[str, Any]) -> str | JSONObject:
    """Responses `tool_choice` in chat form. `allowed_tools` narrows to its mode; hosted tool
    choices have no chat form and fall back to `auto`."""
    if isinstance(choice, str):
        return choice
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind == "allowed_tools":
        return str(choice.get("mode") or "auto")
    return "auto"


def _sampling_options(request: ResponseRequest, dialect: ChatDialect) -> JSONObject:
    options: JSONObject = {}
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = getattr(request, key)
        if value is not None:
            options[key] = value
    if request.max_output_tokens is not None:
        options[dialect.max_tokens_field] = request.max_output_tokens
    if request.text is not None:
        response_format = chat_response_format(request.text.format)
        if response_format is not None:
            options["response_format"] = response_format
        if request.text.verbosity not in (None, "medium"):
            options["verbosity"] = request.text.verbosity
    if request.reasoning is not None and request.reasoning.effort:
        if dialect.reasoning_object:
            options["reasoning"] = {"effort": request.reasoning.effort}
        else:
            options["reasoning_effort"] = request.reasoning.effort
    for key in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
        value = getattr(request, key)
        if value is not None:
            options[key] = value
    return options


def chat_response_format(text_format: Mapping[str, Any]) -> JSONObject | None:
    """Responses `text.format` as chat `response_format`; None for plain text."""
    kind = text_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_schema":
        schema: JSONObject = {"name": text_format.get("name") or "response"}
        for key in ("schema", "strict", "description"):
            if text_format.get(key) is not None:
                schema[key] = text_format[key]
        return {"type": "json_schema", "json_schema": schema}
    return dict(text_format)
