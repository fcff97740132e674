"""How much of an upstream answer the gateway will hold, and the error a reader raises when an
answer would take more.

Every limit is checked before the bytes over it are buffered (the readers count as they go),
so a hostile or broken upstream costs at most the limit plus one network chunk. The transport
turns `LimitExceeded` into a 502 naming the provider's setting and drops the connection.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

DEFAULT_MAX_BODY_BYTES = 32 * MIB
"""A non-stream answer as it arrives on the wire. LLM answers are kilobytes to a few
megabytes (base64 images); 32 MiB leaves room for those and stops a runaway body long before it
hurts the process."""
DEFAULT_MAX_EVENT_BYTES = 8 * MIB
"""One server-sent event. The largest legitimate ones are a Responses `response.completed`
(the whole final response) or an image in one chunk."""
DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * MIB
"""What a compressed answer may inflate to (a stream: in total). A gzip bomb inflates about
1000:1, so this is the limit that stops one."""
DEFAULT_MAX_HEAD_BYTES = 100 * KIB
"""An answer's status line and headers (trailers included), as httpcore allows: real heads are
a few kilobytes; the parser would otherwise buffer an endless header whole."""
ERROR_BODY_LIMIT = 64 * KIB
"""Bytes of an error body read before mapping it; the rest is dropped, never refused."""


class LimitExceeded(Exception):
    """An upstream answer outgrew a limit; nothing past the limit was buffered.

    `what` names the thing measured ("the body", "one server-sent event", ...), `setting` the
    per-provider setting suffix (`MAX_BODY_BYTES`), so the transport can name the variable.
    """

    def __init__(self, what: str, limit: int, setting: str) -> None:
        super().__init__(f"{what} is larger than {limit} bytes ({setting})")
        self.what = what
        self.limit = limit
        self.setting = setting


def head_too_large(limit: int) -> LimitExceeded:
    """The HTTP client refused an answer's head (or trailers) over `max_head_bytes`."""
    return LimitExceeded("a response head", limit, "MAX_HEAD_BYTES")
