"""Canonical request -> GigaChat `POST /chat/completions` body (the classic v1 contract). Pure.

GigaChat's rules, and how the canonical conversation is bent to them:

- At most one system message, and it must come first: `instructions`, then every system and
  developer message in conversation order, joined by a blank line, become that one message.
- `content` is a plain string. Text parts are joined; an image or a document goes as an
  `attachments` id, which must be a file already uploaded to GigaChat (`file_id`). An image by
  URL, inline file data or any other part is rejected with a 400 naming the part: nothing is
  dropped silently.
- Function calling: function tools become `functions`; a `function_call` item becomes an
  assistant message whose `function_call.arguments` is a JSON object (not a string), with the
  `functions_state_id` its call id carries (call_ids.py); a `function_call_output` becomes a
  `function` message with the function's name and a JSON object serialised as its content
  (output that is not a JSON object is wrapped: `{"result": ...}`).
- GigaChat takes one call per assistant message: an assistant text right before a call shares
  its message; parallel calls from another provider's history go as consecutive messages.
- `tool_choice`: auto / none / a named function map directly. `required` has no equivalent:
  with exactly one function it forces that function, otherwise it is sent as `auto` (the model
  may answer in text). `allowed_tools` narrows `functions` to the listed ones.
- temperature (0 goes as 0.001: GigaChat wants > 0, and 0.001 is its most deterministic value),
  top_p, max_output_tokens -> max_tokens, and Chat Completions' `repetition_penalty`.
  presence/frequency penalties and reasoning effort have no v1 equivalent and are not sent;
  a structured output format (json_schema / json_object) is rejected with a 400.
- Reasoning items from earlier turns are not sent: v1 has no slot for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from xrouter.adapters.providers.gigachat.call_ids import state_id_of
from xrouter.application.ports import GenerationRequest
from xrouter.domain.errors import InvalidRequest
from xrouter.domain.passthrough import forwarded
from xrouter.domain.responses import InputItem, JSONObject, ResponseRequest, ToolSpec

FORWARDED_OPTIONS = ("repetition_penalty",)
"""The passthrough options (domain/passthrough.py) GigaChat has: sent as the client sent them."""
DROPPED_OPTIONS = (
    "stop",
    "seed",
    "logit_bias",
    "logprobs",
    "web_search_options",
    # OpenRouter's extensions
    "provider",
    "transforms",
    "plugins",
    "route",
    "reasoning",
    "include_reasoning",
    "top_k",
    "min_p",
    "top_a",
    "prediction",
    "debug",
)
"""The passthrough options GigaChat has no equivalent for: not sent (docs/gigachat.md)."""
MIN_TEMPERATURE = 0.001
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_encoder = msgspec.json.Encoder()


def build_payload(call: GenerationRequest, *, stream: bool) -> JSONObject:
    """The JSON body (as builtins) of `POST /chat/completions` for `call`."""
    request = call.request
    payload: JSONObject = {
        "model": call.route.upstream_model,
        "messages": gigachat_messages(call.items, call.instructions),
    }
    payload.update(function_options(request))
    payload.update(_sampling_options(request))
    payload.update(forwarded(call.passthrough, FORWARDED_OPTIONS))
    if stream:
        payload["stream"] = True
    return payload


# --- messages -----------------------------------------------------------------------------------


def gigachat_messages(items: list[InputItem], instructions: str | None) -> list[JSONObject]:
    system: list[str] = [instructions] if instructions else []
    messages: list[JSONObject] = []
    call_names: dict[str, str] = {}
    # The assistant text message a function call right after it may join.
    open_assistant: JSONObject | None = None
    for index, item in enumerate(items):
        param = f"input[{index}]"
        kind = item.type
        if kind == "message":
            role = item.role or "user"
            if role in ("system", "developer"):
                text = _plain_text(item.content, param, role)
                if text:
                    system.append(text)
                continue
            open_assistant = None
            if role == "user":
                messages.append(_user_message(item.content, param))
            elif role == "assistant":
                open_assistant = {
                    "role": "assistant",
                    "content": _plain_text(item.content, param, role),
                }
                messages.append(open_assistant)
            else:
                raise InvalidRequest(
                    f"Unknown message role {role!r}; use user, assistant, system or developer.",
                    param=f"{param}.role",
                    code="invalid_value",
                )
        elif kind == "function_call":
            target = open_assistant
            if target is None:
                target = {"role": "assistant", "content": ""}
                messages.append(target)
            open_assistant = None
            name = _call_name(item, param)
            target["function_call"] = {
                "name": name,
                "arguments": _arguments(item.arguments, param),
            }
            state = state_id_of(item.call_id)
            if state is not None:
                target["functions_state_id"] = state
            if item.call_id:
                call_names[item.call_id] = name
        elif kind == "function_call_output":
            open_assistant = None
            messages.append(
                {
                    "role": "function",
                    "name": _output_name(item, call_names, param),
                    "content": function_result(item.output, param),
                }
            )
        elif kind == "reasoning":
            continue
        else:
            raise InvalidRequest(
                f"Input items of type {kind!r} cannot be sent to GigaChat; send messages, "
                "function calls and their outputs.",
                param=f"{param}.type",
                code="invalid_value",
            )
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
    return messages


def _user_message(content: str | list[JSONObject] | None, param: str) -> JSONObject:
    if content is None or isinstance(content, str):
        return {"role": "user", "content": content or ""}
    texts: list[str] = []
    attachments: list[str] = []
    for index, part in enumerate(content):
        where = f"{param}.content[{index}]"
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            texts.append(str(part.get("text") or ""))
        elif kind in ("input_image", "input_file"):
            attachments.append(_attachment(part, kind, where))
        else:
            raise InvalidRequest(
                f"Content parts of type {kind!r} cannot be sent to GigaChat; send input_text, "
                "or input_image / input_file with the `file_id` of a file uploaded to GigaChat.",
                param=f"{where}.type",
                code="invalid_value",
            )
    message: JSONObject = {"role": "user", "content": "".join(texts)}
    if attachments:
        message["attachments"] = attachments
    return message


def _attachment(part: JSONObject, kind: str, param: str) -> str:
    file_id = part.get("file_id")
    if isinstance(file_id, str) and file_id:
        return file_id
    what = "Images" if kind == "input_image" else "Files"
    raise InvalidRequest(
        f"{what} reach GigaChat only as files uploaded to GigaChat first (its POST /files): "
        "send the uploaded file's id as `file_id`. URLs and inline data cannot be forwarded.",
        param=f"{param}.file_id",
        code="invalid_value",
    )


def _plain_text(content: str | list[JSONObject] | None, param: str, role: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts: list[str] = []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            texts.append(str(part.get("text") or ""))
        elif kind == "refusal" and role == "assistant":
            texts.append(str(part.get("refusal") or ""))
        else:
            raise InvalidRequest(
                f"A {role} message to GigaChat takes text only; part of type {kind!r} cannot "
                "be sent.",
                param=f"{param}.content[{index}].type",
                code="invalid_value",
            )
    return "".join(texts)


def _call_name(item: InputItem, param: str) -> str:
    if not item.name:
        raise InvalidRequest(
            "A function_call item needs `name`.",
            param=f"{param}.name",
            code="missing_required_parameter",
        )
    return item.name


def _arguments(arguments: str | None, param: str) -> JSONObject:
    """GigaChat wants the call's arguments as a JSON object, not as a string of JSON."""
    if arguments is None or not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest(
            "GigaChat takes function call arguments as a JSON object; these are not one.",
            param=f"{param}.arguments",
            code="invalid_value",
        )
    return value


def _output_name(item: InputItem, call_names: Mapping[str, str], param: str) -> str:
    name = call_names.get(item.call_id or "")
    if name is not None:
        return name
    if item.name:  # not in the canonical schema, but a client may say it
        return item.name
    raise InvalidRequest(
        f"The function_call_output for call_id {item.call_id!r} has no function_call with that "
        "id earlier in the conversation; GigaChat needs the function's name, so send the call "
        "too (or use previous_response_id).",
        param=f"{param}.call_id",
        code="invalid_value",
    )


def function_result(output: str | list[JSONObject] | None, param: str) -> str:
    """A function's output as GigaChat wants it: a JSON object, serialised. Output that is a
    JSON object already goes as sent; anything else is wrapped as `{"result": <output>}` (the
    decoded value when the output is other JSON, the text otherwise)."""
    if output is None:
        text = ""
    elif isinstance(output, str):
        text = output
    else:
        texts: list[str] = []
        for index, part in enumerate(output):
            if part.get("type") not in _TEXT_PARTS:
                raise InvalidRequest(
                    "GigaChat takes text-only function outputs; part of type "
                    f"{part.get('type')!r} cannot be forwarded.",
                    param=f"{param}.output[{index}].type",
                    code="invalid_value",
                )
            texts.append(str(part.get("text") or ""))
        text = "".join(texts)
    try:
        value: Any = msgspec.json.decode(text) if text.strip() else text
    except msgspec.DecodeError:
        value = text
    if isinstance(value, dict):
        return text
    return _encoder.encode({"result": value}).decode()


# --- options ------------------------------------------------------------------------------------


def function_options(request: ResponseRequest) -> JSONObject:
    """`functions` and `function_call` for the request's function tools and tool_choice."""
    functions = [_function(tool) for tool in request.tools if tool.type == "function" and tool.name]
    choice: str | Mapping[str, Any] = request.tool_choice
    if isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        allowed = {
            tool.get("name") for tool in choice.get("tools") or [] if isinstance(tool, Mapping)
        }
        functions = [function for function in functions if function["name"] in allowed]
        choice = str(choice.get("mode") or "auto")
    if not functions:
        return {}
    return {"functions": functions, "function_call": _function_call(choice, functions)}


def _function(tool: ToolSpec) -> JSONObject:
    function: JSONObject = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = (
        tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
    )
    return function


def _function_call(
    choice: str | Mapping[str, Any], functions: list[JSONObject]
) -> str | JSONObject:
    if isinstance(choice, str):
        if choice == "none":
            return "none"
        if choice == "required" and len(functions) == 1:
            return {"name": functions[0]["name"]}
        return "auto"  # auto, and `required` among several functions: the closest there is
    if choice.get("type") == "function":
        name = choice.get("name")
        if name not in {function["name"] for function in functions}:
            raise InvalidRequest(
                f"tool_choice names the function {name!r}, which is not among the tools.",
                param="tool_choice.name",
                code="invalid_value",
            )
        return {"name": name}
    return "auto"  # hosted tool choices have no GigaChat form


def _sampling_options(request: ResponseRequest) -> JSONObject:
    options: JSONObject = {}
    if request.temperature is not None:
        options["temperature"] = max(request.temperature, MIN_TEMPERATURE)
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.max_output_tokens is not None:
        options["max_tokens"] = request.max_output_tokens
    if request.text is not None and request.text.format.get("type") not in (None, "text"):
        raise InvalidRequest(
            "GigaChat's chat API has no structured output format; send text.format "
            "{type: text} (or none) and describe the format in the instructions.",
            param="text.format.type",
            code="unsupported_value",
        )
    return options
