"""A fast fake OpenAI-compatible upstream: a raw ASGI app (no framework), for uvicorn.

- `POST /v1/chat/completions`: a fixed `chat.completion` JSON whose text is the benchmark
  input; with `"stream": true`, a `chat.completion.chunk` SSE stream: a role chunk, N content
  chunks (the input's words, cycled), a finish chunk, a usage chunk with `choices: []`, and
  `data: [DONE]`, one ASGI message (one write) per frame, as fast as the client reads.
- With function `tools` declared and a `user` message last, the answer is instead a call of
  the first tool with `{}` arguments (`finish_reason: "tool_calls"`), streamed or not: enough
  for `scripts/compliance.sh` to run the Open Responses runner's tool test through a relay.
  After a `tool` message the usual text comes back, so an agent loop ends. Benchmarks send no
  tools and never take this path.
- `GET /v1/models` and `GET /health`.

N is 9 (the input's words) unless the model id says otherwise: `fake-20000` streams 20,000
content chunks; `fake-20000-1024` also pads every content chunk with a 1,024-byte field no
client reads (`x_padding`), to make the upstream stream larger without more text. The gateway
forwards the model id after its `up/` prefix, so the client picks the stream.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from workload import INPUT

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WORDS = [word if i == 0 else " " + word for i, word in enumerate(INPUT.split(" "))]
CHUNK_ID = "chatcmpl-fake0123456789"
TOOL_CALL_ID = "call_fake0"
CREATED = 1_700_000_000
USAGE = {"prompt_tokens": 18, "completion_tokens": 10, "total_tokens": 28}
HEALTH = b'{"status":"ok"}'
MODELS = msgspec.json.encode(
    {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "bench"}]}
)


class _Function(msgspec.Struct):
    name: str = ""


class _Tool(msgspec.Struct):
    type: str = ""
    function: _Function | None = None


class _Role(msgspec.Struct):
    role: str = ""


class _Call(msgspec.Struct):
    model: str = "fake"
    stream: bool = False
    tools: list[_Tool] | None = None
    messages: list[_Role] | None = None


def _called_tool(call: _Call) -> str | None:
    """The tool to call: the first function tool, when the last message is the user's."""
    names = [t.function.name for t in call.tools or [] if t.type == "function" and t.function]
    last = call.messages[-1].role if call.messages else ""
    return names[0] if names and names[0] and last == "user" else None


def _tool_call_body(name: str) -> bytes:
    function = {"name": name, "arguments": "{}"}
    tool_call = {"id": TOOL_CALL_ID, "type": "function", "function": function}
    message = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
    completion = {
        "id": CHUNK_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": "fake",
        "choices": [choice],
        "usage": USAGE,
    }
    return msgspec.json.encode(completion)


def _tool_call_frames(name: str) -> list[bytes]:
    function = {"name": name, "arguments": ""}
    opened = {"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": function}
    return [
        ROLE_FRAME,
        _frame(_delta({"tool_calls": [opened]})),
        _frame(_delta({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})),
        _frame(_delta({}, "tool_calls")),
        *TAIL_FRAMES[1:],
    ]


def stream_shape(model: str) -> tuple[int, int]:
    """(content chunks, padding bytes per content chunk) for `model`: `fake`, `fake-<N>` or
    `fake-<N>-<PAD>`."""
    parts = model.split("-")
    chunks = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else len(WORDS)
    pad = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
    return chunks, pad


def _frame(
    choices: list[dict[str, Any]], usage: dict[str, int] | None = None, pad: int = 0
) -> bytes:
    chunk: dict[str, Any] = {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "fake",
        "system_fingerprint": None,
        "choices": choices,
    }
    if usage is not None:
        chunk["usage"] = usage
    if pad:
        chunk["x_padding"] = "x" * pad
    return b"data: " + msgspec.json.encode(chunk) + b"\n\n"


def _delta(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]


ROLE_FRAME = _frame(_delta({"role": "assistant", "content": ""}))
TAIL_FRAMES = [_frame(_delta({}, "stop")), _frame([], USAGE), b"data: [DONE]\n\n"]
COMPLETION = msgspec.json.encode(
    {
        "id": CHUNK_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": "fake",
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": INPUT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
)


@functools.cache
def word_frames(pad: int) -> list[bytes]:
    """The content chunks' frames, one per word, each padded with `pad` bytes."""
    return [_frame(_delta({"content": word}), pad=pad) for word in WORDS]


def stream_bytes(chunks: int, pad: int = 0) -> int:
    """Bytes of the SSE body for `chunks` content chunks (chunked framing not counted)."""
    frames = word_frames(pad)
    words = sum(len(frames[i % len(frames)]) for i in range(chunks))
    return len(ROLE_FRAME) + words + sum(len(f) for f in TAIL_FRAMES)


def text_bytes(chunks: int) -> int:
    """Bytes (UTF-8) of the text those chunks carry."""
    return sum(len(WORDS[i % len(WORDS)].encode()) for i in range(chunks))


def _start(content_type: bytes, length: int | None = None) -> Message:
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": 200, "headers": headers}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive: Receive) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def _fixed(send: Send, content_type: bytes, body: bytes, status: int = 200) -> None:
    start = _start(content_type, len(body))
    start["status"] = status
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Send, chunks: int, pad: int) -> None:
    await send(_start(b"text/event-stream"))
    await send({"type": "http.response.body", "body": ROLE_FRAME, "more_body": True})
    frames = word_frames(pad)
    words = len(frames)
    for i in range(chunks):
        await send({"type": "http.response.body", "body": frames[i % words], "more_body": True})
    for frame in TAIL_FRAMES:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _tool_call(send: Send, name: str, stream: bool) -> None:
    if not stream:
        await _fixed(send, b"application/json", _tool_call_body(name))
        return
    await send(_start(b"text/event-stream"))
    for frame in _tool_call_frames(name):
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def create_app() -> ASGIApp:
    """The ASGI app (a factory, for `uvicorn --factory`)."""
    decoder = msgspec.json.Decoder(_Call)
    json = b"application/json"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path = scope["path"]
        body = await _body(receive)
        if path == "/v1/chat/completions" and scope["method"] == "POST":
            call = decoder.decode(body)
            tool = _called_tool(call) if call.tools else None
            if tool is not None:
                await _tool_call(send, tool, call.stream)
            elif call.stream:
                await _stream(send, *stream_shape(call.model))
            else:
                await _fixed(send, json, COMPLETION)
        elif path == "/v1/models":
            await _fixed(send, json, MODELS)
        elif path == "/health":
            await _fixed(send, json, HEALTH)
        else:
            await _fixed(send, json, b'{"error":{"message":"not found"}}', status=404)

    return app
