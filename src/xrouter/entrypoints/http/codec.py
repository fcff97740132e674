"""JSON in and out at the HTTP boundary, with msgspec, and decode errors as clear 400s."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from xrouter.domain.chat import ChatRequest
from xrouter.domain.errors import InvalidRequest
from xrouter.domain.responses import ResponseRequest

T = TypeVar("T")

_PATH = re.compile(r" - at `\$\.?(.*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")
# A JSON string (its key form ends with a colon) or a bracket: enough to track nesting.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?|[\[\]{}]', re.DOTALL)
# Locating the field behind a decode failure scans in Python; bound it so a hostile body
# cannot make the error path cost more than the decode did.
_LOCATE_MAX_TOKENS = 100_000
# msgspec nests as deep as the interpreter's recursion limit allows (about 1,000 levels);
# the field that first goes past this depth is the one to name.
_LOCATE_DEPTH = 500


class _RawTools(msgspec.Struct):
    """A request's tools exactly as sent (every key of every tool)."""

    tools: list[dict[str, Any]] = msgspec.field(default_factory=list)


class Codec:
    """Typed decoders and one encoder, built once at startup (msgspec caches per type)."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._responses = msgspec.json.Decoder(ResponseRequest)
        self._raw_tools = msgspec.json.Decoder(_RawTools)
        self._chat = msgspec.json.Decoder(ChatRequest)

    def encode(self, value: Any) -> bytes:
        return self._encoder.encode(value)

    def decode_response_request(self, body: bytes) -> ResponseRequest:
        """The request; a tool of a kind other than `function` keeps its whole definition
        (`ToolSpec.definition`), for upstreams that speak the Responses API. The second pass
        over the body happens only for such requests (Codex's), never for plain ones."""
        request = decode(self._responses, body)
        if any(tool.type != "function" for tool in request.tools):
            raw = self._raw_tools.decode(body).tools  # the body just decoded: it cannot fail
            for tool, definition in zip(request.tools, raw, strict=True):
                tool.definition = definition if tool.type != "function" else None
        return request

    def decode_chat_request(self, body: bytes) -> ChatRequest:
        return decode(self._chat, body)


def decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode `body`; raise InvalidRequest naming the field when it is not acceptable."""
    if not body.strip():
        raise InvalidRequest(
            "The request body is empty; send a JSON object such as "
            '{"model": "local/echo", "input": "Hello"}.',
            code="invalid_json",
        )
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc)) from None
    except RecursionError:
        raise _too_deep(body) from None
    except UnicodeDecodeError:
        raise _not_utf8(body) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON ({exc}). Send a JSON object with "
            "Content-Type: application/json.",
            code="invalid_json",
        ) from None


def _validation_error(message: str) -> InvalidRequest:
    path_match = _PATH.search(message)
    path = path_match.group(1) if path_match else ""
    detail = message[: path_match.start()] if path_match else message
    missing = _MISSING.match(detail)
    if missing:
        param = f"{path}.{missing.group(1)}" if path else missing.group(1)
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if not path:
        return InvalidRequest(
            f"The request body must be a JSON object: {detail}.", code="invalid_type"
        )
    return InvalidRequest(
        f"Invalid value for '{path}': {detail}.", param=path, code="invalid_value"
    )


def _too_deep(body: bytes) -> InvalidRequest:
    param = _top_level_key(body, deeper_than=_LOCATE_DEPTH)
    where = f" in '{param}'" if param else ""
    return InvalidRequest(
        f"The request body nests JSON too deeply{where}: the gateway decodes about 900 levels "
        "of arrays and objects at most. Send a flatter value.",
        param=param,
        code="json_too_deep",
    )


def _not_utf8(body: bytes) -> InvalidRequest:
    try:
        body.decode("utf-8")
        offset = None  # msgspec saw a bad escape (a lone surrogate) rather than bad bytes
    except UnicodeDecodeError as exc:
        offset = exc.start
    param = _top_level_key(body, at_offset=offset) if offset is not None else None
    where = f" in '{param}'" if param else ""
    at = f" at byte {offset}" if offset is not None else ""
    return InvalidRequest(
        f"The request body has a string that is not valid UTF-8{where}{at}. "
        "Encode text as UTF-8 (JSON requires it).",
        param=param,
        code="invalid_utf8",
    )


def _top_level_key(
    body: bytes, *, at_offset: int | None = None, deeper_than: int | None = None
) -> str | None:
    """The top-level field that holds byte `at_offset`, or that nests deeper than
    `deeper_than`; None when the scan cannot tell (or would take too long)."""
    depth = 0
    key: str | None = None
    for count, token in enumerate(_TOKEN.finditer(body)):
        if count > _LOCATE_MAX_TOKENS:
            return None
        text = token.group()
        is_key = token.group(1) is not None
        if at_offset is not None and token.end() > at_offset:
            return _key_text(text) if is_key and depth == 1 else key
        if text in (b"{", b"["):
            depth += 1
            if deeper_than is not None and depth > deeper_than:
                return key
        elif text in (b"}", b"]"):
            depth -= 1
        elif is_key and depth == 1:
            key = _key_text(text)
    return None


def _key_text(token: bytes) -> str:
    return token[: token.rindex(b'"')][1:].decode("utf-8", "replace")
