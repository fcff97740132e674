"""Upstream Chat Completions answers -> canonical provider events. Pure, no I/O.

`parse_completion` reads a whole `chat.completion`; `ChatStreamParser` reads
`chat.completion.chunk`s one SSE data payload at a time. Both are tolerant of what real
servers send (every field optional, unknown finish reasons, ids resent on every delta, missing
tool-call indexes) and strict about failure: an `error` object anywhere, or a finish reason of
`error` (OpenRouter), raises through `map_error` rather than completing silently.

`Finish` comes only from the upstream's own `finish_reason`: a body that is not a completion
(an HTML page, an empty body, no choices, a choice without a finish reason) and a stream that
ends without a finish reason are failures, never a made-up `stop`.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from msgspec import Struct

from xrouter.adapters.providers.malformed import decode_answer, malformed_answer
from xrouter.adapters.providers.upstream_errors import ErrorMapper
from xrouter.adapters.providers.usage import InputTokenDetails, OutputTokenDetails, canonical_usage
from xrouter.domain.errors import ProviderError
from xrouter.domain.provider_events import (
    Finish,
    FinishReason,
    ProviderEvent,
    ReasoningData,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UsageReport,
    upstream_info,
)
from xrouter.domain.responses import JSONObject, Usage

log = logging.getLogger(__name__)


# --- upstream wire shapes (every field optional: servers differ) ---------------------------------
# gc=False: decoded once per stream chunk and dropped at once; they hold only decoded JSON, which
# cannot refer back to them, so the collector need not track them (it halves the decode's cost).


class _Function(Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(Struct, gc=False):
    index: int | None = None
    id: str | None = None
    function: _Function | None = None


class _Message(Struct, gc=False):
    content: str | None = None
    refusal: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    reasoning_details: list[JSONObject] | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(Struct, gc=False):
    index: int = 0
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None
    error: Any = None


class _Usage(Struct, gc=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None
    prompt_tokens_details: InputTokenDetails | None = None
    completion_tokens_details: OutputTokenDetails | None = None
    cost: float | None = None  # OpenRouter: credits spent on this call


class _Completion(Struct, gc=False):
    # Any, not str: an odd id or model is not reported (upstream_info), never a failure.
    id: Any = None
    model: Any = None
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any = None


_decoder = msgspec.json.Decoder(_Completion)
_encoder = msgspec.json.Encoder()

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


_COMPLETION = "a Chat Completions answer"


def _decode(data: bytes | str, provider: str) -> _Completion:
    """One stream chunk; a chunk is small and the stream already proved to be SSE, so the
    decoder's message (which never quotes values) is enough."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProviderError(
            f"The provider '{provider}' sent a Chat Completions chunk that is not valid "
            f"JSON of the expected shape ({exc})."
        ) from None


def _usage(usage: _Usage) -> Usage:
    return canonical_usage(
        usage.prompt_tokens,
        usage.completion_tokens,
        total_tokens=usage.total_tokens,
        input_details=usage.prompt_tokens_details,
        output_details=usage.completion_tokens_details,
    )


def finish_reason(raw: str, saw_tool_calls: bool, provider: str) -> FinishReason:
    """The canonical reason for an upstream one. Servers that answer tool calls with `stop`
    (vLLM, Ollama) still finish with `tool_calls`."""
    reason = _FINISH.get(raw)
    if reason is None:
        log.info("provider %s finished with unknown reason %r; treated as stop", provider, raw)
        reason = "stop"
    if reason == "stop" and saw_tool_calls:
        return "tool_calls"
    return reason


def _raise_choice_error(choice: _Choice, map_error: ErrorMapper) -> None:
    if choice.error is not None:
        raise map_error(choice.error)
    if choice.finish_reason == "error":
        raise map_error({"message": "The upstream finished the generation with an error."})


def _reasoning_text(message: _Message) -> str | None:
    # DeepSeek and vLLM say reasoning_content, OpenRouter and newer vLLM say reasoning;
    # a server sending both sends the same text twice.
    return message.reasoning_content or message.reasoning


def parse_completion(
    body: bytes, *, provider: str, map_error: ErrorMapper, content_type: str | None = None
) -> list[ProviderEvent]:
    """The events of a whole non-stream `chat.completion`, in stream order. `content_type`
    (the answer's header) only words the error for a body that is not a completion."""
    completion = decode_answer(
        _decoder, body, provider=provider, expected=_COMPLETION, content_type=content_type
    )
    if completion.error is not None:
        raise map_error(completion.error)
    if not completion.choices:
        problem = "it has no `choices`" if completion.choices is None else "`choices` is empty"
        raise malformed_answer(provider, _COMPLETION, problem, body, content_type)
    choice = completion.choices[0]
    _raise_choice_error(choice, map_error)
    if choice.finish_reason is None:
        raise malformed_answer(
            provider, _COMPLETION, "its choice has no `finish_reason`", body, content_type
        )
    message = choice.message or _Message()
    events: list[ProviderEvent] = []
    info = upstream_info(completion.model, completion.id)
    if info is not None:
        events.append(info)
    reasoning = _reasoning_text(message)
    if reasoning:
        events.append(ReasoningDelta(reasoning))
    if message.reasoning_details:
        events.append(ReasoningData(_encoder.encode(message.reasoning_details).decode()))
    if message.content:
        events.append(TextDelta(message.content))
    if message.refusal:
        events.append(TextDelta(message.refusal))
    calls = message.tool_calls or []
    for index, call in enumerate(calls):
        function = call.function or _Function()
        events.append(
            ToolCallDelta(
                index=index,
                call_id=call.id,
                name=function.name,
                arguments=function.arguments or "",
            )
        )
    if completion.usage is not None:
        events.append(UsageReport(_usage(completion.usage), cost=completion.usage.cost))
    events.append(Finish(finish_reason(choice.finish_reason, bool(calls), provider)))
    return events


class _Call(Struct):
    index: int  # ours: order of first appearance
    call_id: str | None


class ChatStreamParser:
    """Reads one chat stream. Feed every SSE data payload, then call `finish` once the
    upstream said [DONE] (`finish` fails when no chunk carried a finish reason). One parser
    per upstream call."""

    def __init__(self, *, provider: str, map_error: ErrorMapper) -> None:
        self._provider = provider
        self._map_error = map_error
        self._calls: dict[int, _Call] = {}  # upstream index -> our call
        self._last_call: _Call | None = None
        self._count = 0
        self._finish: str | None = None
        self._usage: _Usage | None = None
        self._details: list[JSONObject] = []  # reasoning_details blocks not yet handed over
        self._all_details: list[JSONObject] = []
        self._named = False  # UpstreamInfo sent: every chunk repeats id and model

    def feed(self, data: str) -> list[ProviderEvent]:
        try:  # `_decode`, inline: once per upstream chunk
            chunk: _Completion = _decoder.decode(data)
        except msgspec.DecodeError:
            _decode(data, self._provider)  # raises its ProviderError
            raise
        if chunk.error is not None:
            raise self._map_error(chunk.error)
        if chunk.usage is not None:
            self._usage = chunk.usage
        events: list[ProviderEvent] = []
        if not self._named:
            info = upstream_info(chunk.model, chunk.id)
            if info is not None:
                self._named = True
                events.append(info)
        for choice in chunk.choices or []:
            if choice.index != 0:
                continue  # we ask for one choice; a server sending more is ignored
            finish = choice.finish_reason
            if choice.error is not None or finish == "error":
                _raise_choice_error(choice, self._map_error)
            if choice.delta is not None:
                self._delta(choice.delta, events)
            if finish is not None:
                self._finish = finish
        return events

    def _delta(self, delta: _Message, events: list[ProviderEvent]) -> None:
        reasoning = delta.reasoning_content or delta.reasoning  # `_reasoning_text`, inline
        if reasoning:
            events.append(ReasoningDelta(reasoning))
        if delta.reasoning_details:
            self._details.extend(delta.reasoning_details)
        content = delta.content
        if self._details and (content or delta.refusal or delta.tool_calls):
            # Hand reasoning state over before the answer closes the reasoning item.
            events.extend(self._flush_details())
        if content:
            events.append(TextDelta(content))
        if delta.refusal:
            events.append(TextDelta(delta.refusal))
        if delta.tool_calls:
            for call in delta.tool_calls:
                events.append(self._tool_call(call))

    def _tool_call(self, call: _ToolCall) -> ToolCallDelta:
        function = call.function or _Function()
        known = self._find_call(call)
        if known is not None:
            self._last_call = known
            return ToolCallDelta(index=known.index, arguments=function.arguments or "")
        known = _Call(index=self._count, call_id=call.id)
        self._count += 1
        if call.index is not None:
            displaced = self._calls.pop(call.index, None)
            if displaced is not None:  # a server that numbers every call 0: keep the old one
                self._calls[-1 - displaced.index] = displaced
            self._calls[call.index] = known
        else:
            self._calls[-1 - known.index] = known
        self._last_call = known
        return ToolCallDelta(
            index=known.index,
            call_id=call.id,
            name=function.name,
            arguments=function.arguments or "",
        )

    def _find_call(self, call: _ToolCall) -> _Call | None:
        """The call this delta continues, or None when it starts a new one."""
        if call.id is not None:
            for known in self._calls.values():
                if known.call_id == call.id:
                    return known
        if call.index is not None:
            at_index = self._calls.get(call.index)
            if at_index is not None and (call.id is None or at_index.call_id is None):
                return at_index
            return None
        if call.id is None:
            return self._last_call  # no index, no id: a fragment of the latest call
        return None

    def _flush_details(self) -> list[ProviderEvent]:
        if not self._details:
            return []
        self._all_details = _merge_details(self._all_details + self._details)
        self._details = []
        return [ReasoningData(_encoder.encode(self._all_details).decode())]

    def finish(self) -> list[ProviderEvent]:
        """The closing events: pending reasoning state, usage, then Finish. Raises when the
        upstream never said why it stopped: the answer may be cut short."""
        if self._finish is None:
            raise ProviderError(
                f"The provider '{self._provider}' ended its stream without a finish_reason; "
                "the answer may be cut short."
            )
        events = self._flush_details()
        if self._usage is not None:
            events.append(UsageReport(_usage(self._usage), cost=self._usage.cost))
        events.append(Finish(finish_reason(self._finish, self._count > 0, self._provider)))
        return events


_CONCATENATED = ("text", "summary", "data", "signature")


def _merge_details(blocks: list[JSONObject]) -> list[JSONObject]:
    """Streamed `reasoning_details` arrive as fragments of blocks; consecutive fragments of one
    block share its type and `index`. Text-like fields are concatenated, other fields keep
    their first non-null value. Blocks without an index are never merged."""
    merged: list[JSONObject] = []
    # The text-like fields of each merged block as pieces, joined once at the end: adding
    # every fragment to one string copies it each time (quadratic over a long reasoning).
    texts: list[dict[str, list[str]]] = []
    for block in blocks:
        last = merged[-1] if merged else None
        same = (
            last is not None
            and block.get("index") is not None
            and last.get("type") == block.get("type")
            and last.get("index") == block.get("index")
        )
        if not same or last is None:
            merged.append(dict(block))
            texts.append(
                {k: [v] for k, v in block.items() if k in _CONCATENATED and isinstance(v, str)}
            )
            continue
        for key, value in block.items():
            if key in _CONCATENATED and isinstance(value, str):
                last.setdefault(key, "")  # its place among the keys, as it first came
                texts[-1].setdefault(key, []).append(value)
            elif last.get(key) is None:
                last[key] = value
    for block, pieces in zip(merged, texts, strict=True):
        for key, values in pieces.items():
            block[key] = "".join(values)
    return merged
