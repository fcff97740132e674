"""What `local/agent` calls: the first declared function tool, with arguments built from its
JSON schema, so agent loops and conformance runners get a function call from any prompt.

`local/echo` calls a tool only when the user text says `call <tool>`; a runner that asks "What's
the weather like in San Francisco?" with a `get_weather` tool gets text back. The agent model
answers such a turn the way a tool-using model would, deterministically: the same request always
gets the same call (docs/local-provider.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from xrouter.domain.responses import InputItem, ResponseRequest, ToolSpec

_EMPTY_BY_TYPE: dict[str, Any] = {
    "number": 0,
    "integer": 0,
    "boolean": False,
    "array": [],
    "null": None,
}
_MAX_DEPTH = 32
"""Nested required objects are filled this deep, then left `{}`: a client's schema bounds the
work, not the other way round."""


def agent_call(
    request: ResponseRequest, items: Sequence[InputItem], user_text: str
) -> tuple[str, str] | None:
    """(tool name, arguments JSON) the agent calls on this turn; None when it answers in text.

    It calls only when function tools are declared, `tool_choice` is not `none`, and the last
    input item is a user message: after a `function_call_output` it reports the output instead,
    so a loop of call, run, answer ends.
    """
    tools = [tool for tool in request.tools if tool.type == "function" and tool.name]
    if not tools or request.tool_choice == "none" or not _ends_with_user_message(items):
        return None
    tool = _chosen(tools, request.tool_choice)
    arguments = schema_arguments(tool.parameters or {}, user_text)
    return str(tool.name), msgspec.json.encode(arguments).decode()


def schema_arguments(schema: Mapping[str, Any], text: str, depth: int = 0) -> Any:
    """A value that `schema` accepts, built only from its declared shape.

    Each required property of an object is filled from its own schema; `const` and `enum` give
    their (first) value; a string is `text` (the user's words, so a search or a location tool
    gets something meaningful); numbers 0, booleans false, arrays []. A type list takes its
    first non-null type. A schema with none of these (a `$ref`, `anyOf`) gets null.
    """
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = _type_of(schema)
    if kind == "string":
        return text
    if kind == "object":
        return _object_arguments(schema, text, depth)
    return _EMPTY_BY_TYPE.get(kind or "null")


def _object_arguments(schema: Mapping[str, Any], text: str, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    required = schema.get("required")
    if depth >= _MAX_DEPTH or not isinstance(properties, dict) or not isinstance(required, list):
        return {}
    filled: dict[str, Any] = {}
    for name in required:
        property_schema = properties.get(name) if isinstance(name, str) else None
        if isinstance(property_schema, dict):
            filled[name] = schema_arguments(property_schema, text, depth + 1)
    return filled


def _type_of(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and isinstance(schema.get("properties"), dict):
        return "object"
    return kind if isinstance(kind, str) else None


def _chosen(tools: list[ToolSpec], choice: str | Mapping[str, Any]) -> ToolSpec:
    """The named tool of a `{"type": "function", "name": ...}` choice, else the first one.

    A named tool that was not declared is still called (with `{}`), as `local/echo` does: the
    gateway does not police the client's choice, the model obeys it.
    """
    if isinstance(choice, Mapping) and choice.get("type") == "function" and choice.get("name"):
        name = str(choice["name"])
        return next(
            (tool for tool in tools if tool.name == name), ToolSpec(type="function", name=name)
        )
    return tools[0]


def _ends_with_user_message(items: Sequence[InputItem]) -> bool:
    return bool(items) and items[-1].type == "message" and items[-1].role == "user"
