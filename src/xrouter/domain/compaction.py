"""Wire types of `POST /v1/responses/compact` (Open Responses 2026-04-24).

Compaction returns a compacted input window, not a new response: the client starts a new
chain with `output` as its base `input`. The `compaction` item itself is
`domain.responses.CompactionItem`.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct, field

from xrouter.domain.responses import InputItem, JSONObject, Usage


class CompactRequest(Struct, kw_only=True):
    """Body of `POST /v1/responses/compact`. `model` is required (a 400 naming it when
    missing); the window is `input`, the turns of `previous_response_id`, or both."""

    model: str
    input: str | list[InputItem] | None = None
    previous_response_id: str | None = None
    instructions: str | None = None
    prompt_cache_key: str | None = None


class CompactionResource(Struct, kw_only=True):
    """The answer: the compacted window. `output` items are plain JSON objects because a
    Responses upstream's window may hold any item kind (user messages kept verbatim,
    reasoning...); each has a string `type`, checked where the answer is made or read."""

    id: str
    object: Literal["response.compaction"] = "response.compaction"
    created_at: int
    output: list[JSONObject] = field(default_factory=list)
    usage: Usage
