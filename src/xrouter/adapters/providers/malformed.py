"""A successful (2xx) upstream answer that is not the protocol's answer: an HTML page from a
proxy, an empty body, JSON of another shape. It is a failure (502), never a completed response,
and the error says what came back (content type, size) without echoing the body, which may
hold anything (a login page, an echoed key)."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from xrouter.domain.errors import ProviderError

T = TypeVar("T")

_CONTENT_TYPE_SHOWN = 60
"""Characters of an upstream content type quoted in an error; the header is the upstream's."""


def describe_body(content: bytes, content_type: str | None) -> str:
    """`an empty body`, or `a 1234-byte text/html body`: what came back, never what it says."""
    if not content:
        return "an empty body"
    if not content.strip():
        return f"a blank {len(content)}-byte body"
    media = (content_type or "").split(";", 1)[0].strip()
    media = "".join(c for c in media[:_CONTENT_TYPE_SHOWN] if c.isprintable())
    return f"a {len(content)}-byte {media or 'untyped'} body"


def malformed_answer(
    provider: str, expected: str, problem: str, content: bytes, content_type: str | None
) -> ProviderError:
    """The error for a 2xx answer that is not `expected`; `problem` says what is wrong with it
    (and must not quote the body)."""
    return ProviderError(
        f"The provider '{provider}' answered with {describe_body(content, content_type)} that "
        f"is not {expected}: {problem}."
    )


def decode_answer(
    decoder: msgspec.json.Decoder[T],
    body: bytes,
    *,
    provider: str,
    expected: str,
    content_type: str | None,
) -> T:
    """`body` decoded as the protocol's answer (`expected` words it: "a chat completion"), or
    the malformed-answer error saying why it is not one."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise malformed_answer(provider, expected, f"{exc}", body, content_type) from None
    except msgspec.DecodeError:
        raise malformed_answer(provider, expected, "it is not JSON", body, content_type) from None
