"""Fake upstream servers for adapter tests: real HTTP/1.1 over loopback, in a background thread.

A `FakeUpstream` is a small raw-asyncio HTTP/1.1 server on 127.0.0.1 (keep-alive,
Content-Length and chunked bodies) with its own event loop in a daemon thread, so a test's
event loop and the server never block each other. It records every request and answers
either from a per-path script of `Reply`s (consumed in order) or, when the script is empty,
with a default that speaks the real wire protocol:

- `POST .../chat/completions`: echoes the last user message as a `chat.completion`, or, with
  `"stream": true`, as `chat.completion.chunk` SSE frames (role chunk, a chunk per word, a
  `finish_reason: "stop"` chunk, a usage chunk with `choices: []`, then `data: [DONE]`).
- `POST .../responses`: the same echo as a Responses object, or as the Responses event stream
  (`event:` + `data:` frames from `response.created` to `response.completed`; no `[DONE]`,
  like OpenAI).
- `GET .../models`: `{"object": "list", "data": [...]}` of `upstream.models`.
- anything else: 404 with an OpenAI error envelope.

Usage (the `fake_upstream` fixture; import it into your test module or conftest)::

    from tests.upstreams import Reply, fake_upstream, sse_frame  # noqa: F401

    async def test_retry(fake_upstream: FakeUpstream) -> None:
        fake_upstream.script("/v1/chat/completions", [
            Reply.error(503, "overloaded", headers={"Retry-After": "0"}),
            Reply.error(429, "slow down", headers={"retry-after-ms": "0"}),
        ])                                  # the third call gets the default echo
        ...call fake_upstream.base_url + "/chat/completions"...
        assert fake_upstream.hits("/v1/chat/completions") == 3
        assert fake_upstream.received[0].headers["authorization"] == "Bearer sk-test"
        assert fake_upstream.received[0].json["model"] == "gpt-test"

Scripted behaviours (combine the fields freely; see `Reply`):

    Reply.json({"id": "x", ...})                     # 200 JSON, one write
    Reply.error(400, "bad", code="invalid_value")    # OpenAI error envelope
    Reply(status=402, body=b'{"status":402,"message":"Payment Required"}')   # any body
    Reply.sse([{"choices": []}, b": OPENROUTER PROCESSING\\n\\n", b'data: {"a"', b":1}\\n\\n"])
        # one chunked write per item: dicts become `data: <json>\\n\\n`, bytes/str go raw
        # (so an event can be split across chunks); `data: [DONE]` is appended (done=False: not)
    Reply.sse(frames, chunk_delay_s=0.05)            # stream slowly
    Reply(delay_s=0.5, ...)                          # wait before the status line
    Reply.stall()                                    # never answer (until the client leaves)
    Reply.sse(frames, done=False, end="stall")       # stream, then go silent
    Reply.sse(frames, done=False, end="drop")        # close the socket mid-body (FIN)
    Reply.sse(frames, done=False, end="reset")       # abort the socket mid-body (RST)
    Reply.hang_up()                                  # accept the request, close without answering

Dynamic answers: `upstream.route(path, handler)` replaces the default for `path` with
`handler(request) -> Reply`. `upstream.client_aborts` counts responses the client abandoned
(it closed the connection while the server was stalling or streaming).
OpenRouter's base path: `f"{upstream.origin}/api/v1"` (defaults match paths by suffix).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal

import pytest

End = Literal["finish", "drop", "reset", "stall"]
CREATED = 1_700_000_000
_WORDS = re.compile(r"\S+\s*")


def sse_frame(data: Any, event: str | None = None) -> bytes:
    """One complete SSE event: `event: <event>` (when given) and `data: <json or str>`."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    `chunks=None` sends `body` with Content-Length in one write; a list sends a chunked body,
    one write (and flush) per item, `chunk_delay_s` between items, and then `end`:
    "finish" (terminating chunk, connection kept alive), "drop" (close), "reset" (abort),
    "stall" (wait silently until the client leaves). `delay_s` waits before the status line
    (math.inf: forever). `no_answer` closes the connection instead of answering.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: Sequence[bytes] | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    end: End = "finish"
    no_answer: bool = False

    def __post_init__(self) -> None:
        if self.chunks is None and self.end != "finish":
            raise ValueError("end= applies to chunked replies; pass chunks=[...]")

    @classmethod
    def json(
        cls, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None, **kw: Any
    ) -> Reply:
        return cls(
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
            body=json.dumps(payload).encode(),
            **kw,
        )

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | int | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> Reply:
        """An OpenAI-style error envelope `{"error": {message, type, param, code}}`."""
        envelope = {"error": {"message": message, "type": type, "param": param, "code": code}}
        return cls.json(envelope, status=status, headers=headers, **kw)

    @classmethod
    def sse(
        cls,
        frames: Sequence[Mapping[str, Any] | bytes | str],
        *,
        done: bool = True,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> Reply:
        """A chunked `text/event-stream`: one write per frame (see the module docstring)."""
        chunks = [
            sse_frame(frame)
            if isinstance(frame, Mapping)
            else frame.encode()
            if isinstance(frame, str)
            else frame
            for frame in frames
        ]
        if done:
            chunks.append(b"data: [DONE]\n\n")
        return cls(
            status=status,
            headers={"Content-Type": "text/event-stream", **(headers or {})},
            chunks=chunks,
            **kw,
        )

    @classmethod
    def stall(cls) -> Reply:
        """Never send a status line; the connection stays open until the client gives up."""
        return cls(delay_s=math.inf)

    @classmethod
    def hang_up(cls) -> Reply:
        """Read the request, then close the connection without a byte of answer."""
        return cls(no_answer=True)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    """Without the query string."""
    query: str
    headers: dict[str, str]
    """Names lower-cased."""
    body: bytes
    json: Any
    """The body parsed as JSON; None when empty or not JSON."""


Handler = Callable[[RecordedRequest], Reply]


class FakeUpstream:
    """A scriptable fake upstream on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        models: Sequence[str] = ("gpt-test", "gpt-test-mini"),
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.models = list(models)
        self.tls = tls
        """A server-side TLS context: serve HTTPS instead of HTTP."""
        self.received: list[RecordedRequest] = []
        self.client_aborts = 0
        self.connections = 0
        """Connections accepted (keep-alive reuse shows as fewer connections than requests)."""
        self.host = "127.0.0.1"
        self.port = 0
        self._scripts: dict[str, deque[Reply]] = {}
        self._routes: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._closing: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the test-facing API ------------------------------------------------------------

    @property
    def origin(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def script(self, path: str, replies: Reply | Sequence[Reply]) -> None:
        """Queue `replies` for `path` (exact, no query); each request takes the next one."""
        queue = [replies] if isinstance(replies, Reply) else list(replies)
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(queue)

    def route(self, path: str, handler: Handler) -> None:
        """Answer `path` with `handler(request)` when its script is empty."""
        with self._lock:
            self._routes[path] = handler

    def hits(self, path: str | None = None) -> int:
        """Requests received for `path` (all paths when None)."""
        return len(self.requests(path))

    def wait_until(self, predicate: Callable[[FakeUpstream], bool], timeout: float = 2.0) -> bool:
        """Poll `predicate(self)` until true or `timeout`; blocking, so from async tests call
        it through `asyncio.to_thread` (e.g. to see `client_aborts` after a stream closed)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.received if path is None or r.path == path]

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"the fake upstream did not start: {failure}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def _start(self) -> None:
        self._closing = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, self.host, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._closing is not None and self._server is not None
        self._closing.set()
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    # -- HTTP/1.1 -----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                with self._lock:
                    self.received.append(request)
                reply = self._reply_for(request)
                keep_alive = await self._write(reply, reader, writer)
                if not keep_alive or request.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            # Only `_shutdown` cancels these tasks; ending quietly keeps asyncio's stream
            # callback from reporting the cancellation as an error.
            return
        finally:
            self._tasks.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> RecordedRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked(reader)
        else:
            body = b""
        path, _, query = target.partition("?")
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return RecordedRequest(method, path, query, headers, body, parsed)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def _write(
        self, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Send `reply`; False when the connection must not be reused."""
        if math.isinf(reply.delay_s):
            await self._until_client_leaves(reader)
            return False
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        if reply.no_answer:
            writer.close()
            return False
        reason = _reason(reply.status)
        head = [f"HTTP/1.1 {reply.status} {reason}"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        if reply.chunks is None:
            head.append(f"Content-Length: {len(reply.body)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
            await writer.drain()
            return True
        head.append("Transfer-Encoding: chunked")
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            for index, chunk in enumerate(reply.chunks):
                if index and reply.chunk_delay_s > 0:
                    await asyncio.sleep(reply.chunk_delay_s)
                if chunk:
                    writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    await writer.drain()
        except ConnectionError:
            self.client_aborts += 1
            return False
        if reply.end == "finish":
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if reply.end == "drop":
            writer.close()
        elif reply.end == "reset":
            writer.transport.abort()
        else:
            await self._until_client_leaves(reader)
        return False

    async def _until_client_leaves(self, reader: asyncio.StreamReader) -> None:
        assert self._closing is not None
        closing = asyncio.ensure_future(self._closing.wait())
        reading = asyncio.ensure_future(reader.read(65536))
        try:
            await asyncio.wait({closing, reading}, return_when=asyncio.FIRST_COMPLETED)
            if reading.done() and (reading.exception() is not None or not reading.result()):
                self.client_aborts += 1
        finally:
            for future in (closing, reading):
                future.cancel()

    # -- default answers ----------------------------------------------------------------

    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            queue = self._scripts.get(request.path)
            if queue:
                return queue.popleft()
            handler = self._routes.get(request.path)
        if handler is not None:
            return handler(request)
        if request.method == "POST" and request.path.endswith("/chat/completions"):
            return self._chat(request)
        if request.method == "POST" and request.path.endswith("/responses"):
            return self._responses(request)
        if request.method == "GET" and request.path.endswith("/models"):
            return Reply.json({"object": "list", "data": [self._model(m) for m in self.models]})
        return Reply.error(404, f"Unknown request URL: {request.method} {request.path}.")

    @staticmethod
    def _model(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "fake"}

    def _chat(self, request: RecordedRequest) -> Reply:
        body = request.json if isinstance(request.json, dict) else {}
        messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
        texts = [_text(m.get("content")) for m in messages]
        answer = next(
            (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        model = str(body.get("model", "fake-model"))
        usage = _usage(" ".join(texts), answer, "prompt_tokens", "completion_tokens")
        ident = f"chatcmpl-fake{next(self._ids)}"
        base = {"id": ident, "created": CREATED, "model": model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": answer, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            return Reply.json(
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "object": "chat.completion.chunk", "choices": [choice]}

        frames: list[Mapping[str, Any] | bytes | str] = [
            chunk({"role": "assistant", "content": ""})
        ]
        frames += [chunk({"content": word}) for word in _WORDS.findall(answer)]
        frames.append(chunk({}, "stop"))
        frames.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        return Reply.sse(frames)

    def _responses(self, request: RecordedRequest) -> Reply:
        body = request.json if isinstance(request.json, dict) else {}
        raw_input = body.get("input", "")
        if isinstance(raw_input, str):
            raw_input = [{"role": "user", "content": raw_input}]
        items = [i for i in raw_input if isinstance(i, dict)] if isinstance(raw_input, list) else []
        answer = next(
            (_text(i.get("content")) for i in reversed(items) if i.get("role") == "user"), ""
        )
        prompt = " ".join(
            [str(body.get("instructions") or "")] + [_text(i.get("content")) for i in items]
        )
        number = next(self._ids)
        response_id, item_id = f"resp_fake{number}", f"msg_fake{number}"
        usage = _usage(prompt, answer, "input_tokens", "output_tokens")
        part = {"type": "output_text", "text": answer, "annotations": [], "logprobs": []}
        item = {
            "type": "message",
            "id": item_id,
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
        final = {
            "id": response_id,
            "object": "response",
            "created_at": CREATED,
            "status": "completed",
            "model": str(body.get("model", "fake-model")),
            "output": [item],
            "usage": usage,
            "error": None,
            "incomplete_details": None,
        }
        if not body.get("stream"):
            return Reply.json(final)
        started = {**final, "status": "in_progress", "output": [], "usage": None}
        empty_part = {**part, "text": ""}
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "content": []},
            },
            {"type": "response.content_part.added", **where, "part": empty_part},
        ]
        events += [
            {"type": "response.output_text.delta", **where, "delta": word, "logprobs": []}
            for word in _WORDS.findall(answer)
        ]
        events += [
            {"type": "response.output_text.done", **where, "text": answer, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": final},
        ]
        frames: list[Mapping[str, Any] | bytes | str] = [
            sse_frame({**event, "sequence_number": n}, event=event["type"])
            for n, event in enumerate(events)
        ]
        return Reply.sse(frames, done=False)


def chat_completion(text: str) -> dict[str, Any]:
    """A minimal Chat Completions answer saying `text`, with usage."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-test",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text")
        )
    return ""


def _usage(prompt: str, answer: str, input_key: str, output_key: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = len(prompt.split()), len(answer.split())
    return {
        input_key: prompt_tokens,
        output_key: completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """A fresh fake upstream for one test (see the module docstring)."""
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> FakeUpstream:
    """The same fixture under a shorter name."""
    return fake_upstream
