"""The request bodies every suite sends: one input text, both APIs, stream or not."""

from __future__ import annotations

import msgspec

INPUT = "The quick brown fox jumps over the lazy dog."


def responses_body(model: str, stream: bool, store: bool | None = None) -> bytes:
    """`POST /v1/responses`; `store` is left out (the API's default, true) when None."""
    body: dict[str, object] = {"model": model, "input": INPUT, "stream": stream}
    if store is not None:
        body["store"] = store
    return msgspec.json.encode(body)


def chat_body(model: str, stream: bool) -> bytes:
    """`POST /v1/chat/completions` with one user message; a stream asks for usage."""
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": INPUT}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return msgspec.json.encode(body)
