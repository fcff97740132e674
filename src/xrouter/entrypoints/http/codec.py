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


class Codec:
    """Typed decoders and one encoder, built once at startup (msgspec caches per type)."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._responses = msgspec.json.Decoder(ResponseRequest)
        self._chat = msgspec.json.Decoder(ChatRequest)

    def encode(self, value: Any) -> bytes:
        return self._encoder.encode(value)

    def decode_response_request(self, body: bytes) -> ResponseRequest:
        return decode(self._responses, body)

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
