"""GigaChat answers -> canonical provider events. Pure, no I/O.

`parse_completion` reads a whole answer; `StreamParser` reads the `data:` chunks of a stream.
What differs from OpenAI's chat:

- No response id (the gateway makes its own) and no call ids: a call gets a fresh id carrying
  the message's `functions_state_id` (call_ids.py), so the next turn can send the state back.
  The answer's `model` (versioned: `GigaChat-2-Pro:2.0.28.2`) is reported as `UpstreamInfo`,
  with an `id` should one come (top level as in OpenAI's, or the message's, which GigaChat's
  SDK models); both are optional and an odd value is simply not reported.
- One `function_call` per message, with `arguments` as a JSON object, serialised here to the
  canonical JSON string. In a stream it arrives whole, and the state id may come in another
  chunk, so the call is emitted once the stream has finished.
- finish_reason: stop; length (incomplete); function_call (a tool call); blacklist (the topic
  filter: incomplete, content_filter); error (the model produced invalid function arguments:
  the response fails).
- usage: `precached_prompt_tokens` are the cached input tokens. GigaChat's `total_tokens` is
  its billable count (cached tokens subtracted); the canonical total stays input + output.
- The penultimate stream event carries finish_reason and usage; a stream that ends without a
  finish reason failed, it did not complete. So did a whole answer that is not an answer (an
  HTML page, an empty body, no choices, a choice without a finish reason): `Finish` comes only
  from GigaChat's own finish_reason.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from msgspec import Struct

from xrouter.adapters.providers.gigachat.call_ids import new_call_id
from xrouter.adapters.providers.malformed import decode_answer, malformed_answer
from xrouter.adapters.providers.upstream_errors import ErrorMapper
from xrouter.adapters.providers.usage import InputTokenDetails, canonical_usage
from xrouter.domain.errors import ProviderError
from xrouter.domain.provider_events import (
    Finish,
    FinishReason,
    ProviderEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UpstreamInfo,
    UsageReport,
    upstream_info,
)
from xrouter.domain.responses import Usage

log = logging.getLogger(__name__)


_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "function_call": "tool_calls",
    "blacklist": "content_filter",
}
_IN_PROGRESS = "function_in_progress"
"""The role of built-in functions' progress messages: not part of the answer."""


class _FunctionCall(Struct):
    name: str | None = None
    arguments: Any = None


class _Message(Struct):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    function_call: _FunctionCall | None = None
    functions_state_id: str | None = None
    id: Any = None  # undocumented (the SDK has it); Any: an odd one is ignored, not an error


class _Choice(Struct):
    index: int = 0
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _Usage(Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None
    precached_prompt_tokens: int | None = None


class _Answer(Struct):
    # Any, not str: an odd model or id is not reported (upstream_info), never a failure.
    model: Any = None
    id: Any = None  # not documented: GigaChat's answers have no top-level id
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    # an error inside a 200 (GigaChat's error shape)
    status: int | None = None
    message: str | None = None


_decoder = msgspec.json.Decoder(_Answer)
_encoder = msgspec.json.Encoder()


_ANSWER = "a GigaChat chat answer"


def _decode(data: bytes | str, provider: str) -> _Answer:
    """One stream chunk (the decoder's message never quotes values)."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProviderError(
            f"{provider} sent a stream chunk that is not JSON of the expected shape ({exc})."
        ) from None


def _raise_error(answer: _Answer, map_error: ErrorMapper) -> None:
    if answer.choices is None and (answer.status is not None or answer.message is not None):
        raise map_error({"code": answer.status, "message": answer.message})


def usage_of(usage: _Usage) -> Usage:
    # Not `total_tokens`: GigaChat's is its billable count (cached input subtracted).
    return canonical_usage(
        usage.prompt_tokens,
        usage.completion_tokens,
        input_details=InputTokenDetails(cached_tokens=usage.precached_prompt_tokens),
    )


def arguments_json(arguments: Any) -> str:
    """A call's arguments as the canonical JSON string (GigaChat sends an object)."""
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments or "{}"  # a server sending a string already: keep it
    return _encoder.encode(arguments).decode()


def finish_reason(raw: str, has_call: bool, provider: str) -> FinishReason:
    """The canonical reason for GigaChat's; `error` fails the response instead."""
    if raw == "error":
        raise ProviderError(
            f"{provider} stopped with finish_reason 'error': the model produced invalid "
            "arguments for a function call. Retry, or simplify the function's parameters."
        )
    if raw == "function_call" and not has_call:
        raise ProviderError(f"{provider} said it called a function but sent no function_call.")
    reason = _FINISH.get(raw)
    if reason is None:
        log.info("provider %s finished with unknown reason %r; treated as stop", provider, raw)
        reason = "stop"
    if has_call and reason == "stop":
        return "tool_calls"
    return reason


def _upstream_info(answer: _Answer, message: _Message | None) -> UpstreamInfo | None:
    """What the answer (or chunk) names: its model, and an id if it carries one (its own
    first, else the message's)."""
    response_id = answer.id
    if upstream_info(None, response_id) is None and message is not None:
        response_id = message.id
    return upstream_info(answer.model, response_id)


def _call_event(name: str | None, arguments: Any, state_id: str | None) -> ToolCallDelta:
    return ToolCallDelta(
        index=0,
        call_id=new_call_id(state_id),
        name=name or "",
        arguments=arguments_json(arguments),
    )


def parse_completion(
    body: bytes, *, provider: str, map_error: ErrorMapper, content_type: str | None = None
) -> list[ProviderEvent]:
    """The events of a whole non-stream answer, in stream order. `content_type` (the
    answer's header) only words the error for a body that is not an answer."""
    answer = decode_answer(
        _decoder, body, provider=provider, expected=_ANSWER, content_type=content_type
    )
    _raise_error(answer, map_error)
    if not answer.choices:
        problem = "it has no `choices`" if answer.choices is None else "`choices` is empty"
        raise malformed_answer(provider, _ANSWER, problem, body, content_type)
    choice = answer.choices[0]
    if choice.finish_reason is None:
        raise malformed_answer(
            provider, _ANSWER, "its choice has no `finish_reason`", body, content_type
        )
    message = choice.message or _Message()
    events: list[ProviderEvent] = []
    info = _upstream_info(answer, message)
    if info is not None:
        events.append(info)
    if message.reasoning_content:
        events.append(ReasoningDelta(message.reasoning_content))
    if message.content and message.role != _IN_PROGRESS:
        events.append(TextDelta(message.content))
    call = message.function_call
    reason = finish_reason(choice.finish_reason, call is not None, provider)
    if call is not None:
        events.append(_call_event(call.name, call.arguments, message.functions_state_id))
    if answer.usage is not None:
        events.append(UsageReport(usage_of(answer.usage)))
    events.append(Finish(reason))
    return events


class StreamParser:
    """Reads one GigaChat stream: `feed` every `data:` payload, then `finish` after [DONE]."""

    def __init__(self, *, provider: str, map_error: ErrorMapper) -> None:
        self._provider = provider
        self._map_error = map_error
        self._role: str | None = None
        self._call: _FunctionCall | None = None
        self._state_id: str | None = None
        self._finish: str | None = None
        self._usage: _Usage | None = None
        self._named = False  # UpstreamInfo sent: every chunk repeats the model

    def feed(self, data: str) -> list[ProviderEvent]:
        chunk = _decode(data, self._provider)
        _raise_error(chunk, self._map_error)
        if chunk.usage is not None:
            self._usage = chunk.usage
        events: list[ProviderEvent] = []
        if not self._named:
            first = chunk.choices[0] if chunk.choices else None
            info = _upstream_info(chunk, (first.delta or first.message) if first else None)
            if info is not None:
                self._named = True
                events.append(info)
        for choice in chunk.choices or []:
            if choice.index != 0:
                continue
            delta = choice.delta or choice.message
            if delta is not None:
                self._delta(delta, events)
            if choice.finish_reason is not None:
                self._finish = choice.finish_reason
        return events

    def _delta(self, delta: _Message, events: list[ProviderEvent]) -> None:
        if delta.role is not None:
            self._role = delta.role
        if delta.functions_state_id:
            self._state_id = delta.functions_state_id
        if delta.reasoning_content:
            events.append(ReasoningDelta(delta.reasoning_content))
        if delta.content and self._role != _IN_PROGRESS:
            events.append(TextDelta(delta.content))
        if delta.function_call is not None:
            self._merge_call(delta.function_call)

    def _merge_call(self, call: _FunctionCall) -> None:
        known = self._call
        if known is None:
            self._call = _FunctionCall(name=call.name, arguments=call.arguments)
            return
        # Documented to arrive whole; a server splitting it is tolerated.
        known.name = known.name or call.name
        if isinstance(known.arguments, str) and isinstance(call.arguments, str):
            known.arguments += call.arguments
        elif call.arguments is not None:
            known.arguments = call.arguments

    def finish(self) -> list[ProviderEvent]:
        """The closing events: the function call (when one came), usage, then Finish."""
        if self._finish is None:
            raise ProviderError(
                f"{self._provider} ended the stream without a finish reason; the answer is "
                "incomplete."
            )
        reason = finish_reason(self._finish, self._call is not None, self._provider)
        events: list[ProviderEvent] = []
        if self._call is not None:
            events.append(_call_event(self._call.name, self._call.arguments, self._state_id))
        if self._usage is not None:
            events.append(UsageReport(usage_of(self._usage)))
        events.append(Finish(reason))
        return events
