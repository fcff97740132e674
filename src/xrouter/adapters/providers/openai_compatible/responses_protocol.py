"""Canonical request <-> an upstream that speaks the Responses API. Pure, no I/O.

Outbound, tools of every kind and `client_metadata` go as the client sent them (the upstream
speaks the same API). The items go as given, with two exceptions forced by `store: false` (the
gateway is the store, the upstream keeps nothing): gateway-made ids are stripped from messages
and calls (the upstream never saw them), and reasoning items without `encrypted_content` are
dropped (a bare summary cannot be continued by another server).

Inbound, `ResponsesStreamParser` reads the upstream's stream events and `parse_response` a
whole response object; both yield the same canonical events. `Finish` comes only from the
upstream saying so: a response object with its `status`, or a `response.completed` /
`response.incomplete` event; a body that is not a response object, and a stream that ends
before its terminal event, are failures.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct, structs

from xrouter.adapters.providers.malformed import decode_answer, malformed_answer
from xrouter.adapters.providers.openai_compatible.chat_protocol import function_definition
from xrouter.adapters.providers.upstream_errors import ErrorMapper
from xrouter.adapters.providers.usage import InputTokenDetails, OutputTokenDetails, canonical_usage
from xrouter.application.ports import GenerationRequest
from xrouter.domain.errors import ProviderError
from xrouter.domain.passthrough import CHAT_ONLY_PASSTHROUGH, RESPONSES_PASSTHROUGH, forwarded
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
from xrouter.domain.responses import InputItem, JSONObject, ToolSpec, Usage

FORWARDED_OPTIONS = RESPONSES_PASSTHROUGH
"""The passthrough options (domain/passthrough.py) a Responses upstream is sent: the ones the
Responses API has."""
DROPPED_OPTIONS = CHAT_ONLY_PASSTHROUGH
"""Chat-only options (a Chat Completions client's): the Responses API has no such fields and
OpenAI rejects unknown ones, so they are not sent."""


def build_responses_payload(call: GenerationRequest, *, stream: bool) -> JSONObject:
    """The JSON body (as builtins) of `POST /responses` for `call`."""
    request = call.request
    payload: JSONObject = {
        "model": call.route.upstream_model,
        "input": [item for item in map(_input_item, call.items) if item is not None],
        "store": False,
        "stream": stream,
    }
    if call.instructions:
        payload["instructions"] = call.instructions
    tools = [tool for tool in map(_tool, request.tools) if tool is not None]
    if tools:
        payload["tools"] = tools
        payload["tool_choice"] = request.tool_choice
        payload["parallel_tool_calls"] = request.parallel_tool_calls
    if request.text is not None:
        payload["text"] = msgspec.to_builtins(request.text)
    if request.reasoning is not None:
        reasoning = {k: v for k, v in msgspec.to_builtins(request.reasoning).items() if v}
        if reasoning:
            payload["reasoning"] = reasoning
    for key in (
        "max_output_tokens",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "top_logprobs",
        "include",
        "truncation",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "service_tier",
        "client_metadata",
    ):
        value = getattr(request, key)
        if value is not None:
            payload[key] = value
    payload.update(forwarded(call.passthrough, FORWARDED_OPTIONS))
    return payload


def _tool(tool: ToolSpec) -> JSONObject | None:
    """A function tool from its fields; any other kind (Codex's `namespace`, `web_search`,
    `mcp`...) as the client sent it: the upstream speaks the same API, so it is the judge."""
    if tool.type == "function":
        return {"type": "function", **function_definition(tool)} if tool.name else None
    # None: a kind a Chat Completions client declared, whose shape is not the Responses
    # API's (chat_mapping keeps only its type): dropped, as a chat upstream drops it.
    return tool.definition


def _input_item(item: InputItem) -> JSONObject | None:
    if item.type == "reasoning" and not item.encrypted_content:
        return None
    data: JSONObject = {"type": item.type, **msgspec.to_builtins(item)}
    if item.type in ("message", "function_call", "function_call_output"):
        data.pop("id", None)
    return data


def upstream_items(items: list[InputItem]) -> list[JSONObject]:
    """`items` as a Responses upstream is sent them (the same mapping as `/responses`)."""
    return [item for item in map(_input_item, items) if item is not None]


# --- upstream wire shapes ---------------------------------------------------------------------


class _Usage(Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int | None = None
    input_tokens_details: InputTokenDetails | None = None
    output_tokens_details: OutputTokenDetails | None = None


class _Part(Struct):
    type: str = ""
    text: str | None = None
    refusal: str | None = None


class _Item(Struct):
    type: str = ""
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    content: list[_Part] | None = None
    summary: list[_Part] | None = None
    encrypted_content: str | None = None


class _Incomplete(Struct):
    reason: str | None = None


class _Response(Struct):
    # Any, not str: an odd id or model is not reported (upstream_info), never a failure.
    id: Any = None
    model: Any = None
    status: str | None = None
    output: list[_Item] | None = None
    usage: _Usage | None = None
    error: Any = None
    incomplete_details: _Incomplete | None = None


class _Event(Struct):
    type: str = ""
    delta: str | None = None
    output_index: int | None = None
    summary_index: int | None = None
    item: _Item | None = None
    response: _Response | None = None
    error: Any = None
    code: Any = None
    message: str | None = None


_event_decoder = msgspec.json.Decoder(_Event)
_response_decoder = msgspec.json.Decoder(_Response)


def _usage(usage: _Usage) -> Usage:
    return canonical_usage(
        usage.input_tokens,
        usage.output_tokens,
        total_tokens=usage.total_tokens,
        input_details=usage.input_tokens_details,
        output_details=usage.output_tokens_details,
    )


def _terminal(
    status: str, response: _Response, saw_calls: bool, map_error: ErrorMapper, provider: str
) -> list[ProviderEvent]:
    """Usage + Finish for a response the upstream ended with `status`; raises for a failed
    one, and for one that has not ended (`in_progress`, `queued`)."""
    if status == "failed" or response.error is not None:
        raise map_error(response.error or {"message": "The upstream response failed."})
    if status not in ("completed", "incomplete"):
        raise ProviderError(f"The provider '{provider}' ended the response with status '{status}'.")
    events: list[ProviderEvent] = []
    if response.usage is not None:
        events.append(UsageReport(_usage(response.usage)))
    reason: FinishReason = "tool_calls" if saw_calls else "stop"
    if status == "incomplete":
        details = response.incomplete_details
        reason = "content_filter" if details and details.reason == "content_filter" else "length"
    events.append(Finish(reason))
    return events


_RESPONSE = "a Responses API response object"


def parse_response(
    body: bytes, *, provider: str, map_error: ErrorMapper, content_type: str | None = None
) -> list[ProviderEvent]:
    """The events of a whole non-stream response object, in stream order. `content_type`
    (the answer's header) only words the error for a body that is not a response object."""
    response = decode_answer(
        _response_decoder, body, provider=provider, expected=_RESPONSE, content_type=content_type
    )
    if response.status == "failed" or response.error is not None:
        raise map_error(response.error or {"message": "The upstream response failed."})
    status = response.status
    if status is None or response.output is None:
        missing = [name for name in ("status", "output") if getattr(response, name) is None]
        problem = "it has no " + " and no ".join(f"`{name}`" for name in missing)
        raise malformed_answer(provider, _RESPONSE, problem, body, content_type)
    events: list[ProviderEvent] = []
    info = upstream_info(response.model, response.id)
    if info is not None:
        events.append(info)
    calls = 0
    for item in response.output:
        if item.type == "reasoning":
            text = "\n\n".join(p.text for p in item.summary or [] if p.text)
            if text:
                events.append(ReasoningDelta(text))
            if item.encrypted_content:
                events.append(ReasoningData(item.encrypted_content))
        elif item.type == "message":
            events.extend(TextDelta(text) for text in map(_part_text, item.content or []) if text)
        elif item.type == "function_call":
            events.append(
                ToolCallDelta(
                    index=calls,
                    call_id=item.call_id,
                    name=item.name,
                    arguments=item.arguments or "",
                )
            )
            calls += 1
    return events + _terminal(status, response, calls > 0, map_error, provider)


def _part_text(part: _Part) -> str:
    if part.type == "refusal":
        return part.refusal or ""
    return part.text or ""


class ResponsesStreamParser:
    """Reads one upstream Responses stream; feed each event's data, then `finish`."""

    def __init__(self, *, provider: str, map_error: ErrorMapper) -> None:
        self._provider = provider
        self._map_error = map_error
        self._calls: dict[int, int] = {}  # upstream output_index -> our call index
        # output_index -> the text/arguments streamed so far, as pieces: joined only when the
        # item is done (adding each delta to one string copies it every time: quadratic).
        self._streamed: dict[int, list[str]] = {}
        self._done = False
        self._named = False  # UpstreamInfo sent (from the first event with a response)

    def feed(self, data: str) -> list[ProviderEvent]:
        try:
            event = _event_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ProviderError(
                f"The provider '{self._provider}' sent a stream event that is not valid JSON "
                f"({exc})."
            ) from None
        if self._named or event.response is None:
            return self._events(event)
        # `response.created` names them; a server that skips it names them on a later event
        # that embeds the response (`response.in_progress`, the terminal one).
        info = upstream_info(event.response.model, event.response.id)
        if info is None:
            return self._events(event)
        self._named = True
        return [info, *self._events(event)]

    def _events(self, event: _Event) -> list[ProviderEvent]:
        """The canonical events of one upstream stream event."""
        kind = event.type
        index = event.output_index if event.output_index is not None else -1
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            return self._streamed_text(index, event.delta or "")
        if kind in (
            "response.reasoning_summary_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning.delta",
        ):
            return [ReasoningDelta(event.delta)] if event.delta else []
        if kind == "response.reasoning_summary_part.added" and (event.summary_index or 0) > 0:
            return [ReasoningDelta("\n\n")]
        if kind == "response.output_item.added" and event.item is not None:
            return self._item_added(index, event.item)
        if kind == "response.function_call_arguments.delta":
            return self._arguments(index, event.delta or "")
        if kind == "response.output_item.done" and event.item is not None:
            return self._item_done(index, event.item)
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self._done = True
            # The event's type is the upstream's word on how it ended, whatever the embedded
            # response object says (or lacks).
            return _terminal(
                kind.removeprefix("response."),
                event.response or _Response(),
                bool(self._calls),
                self._map_error,
                self._provider,
            )
        if kind == "error":
            raise self._map_error(
                event.error or {"code": event.code, "message": event.message or "upstream error"}
            )
        return []

    def _streamed_text(self, index: int, delta: str) -> list[ProviderEvent]:
        if not delta:
            return []
        self._streamed.setdefault(index, []).append(delta)
        return [TextDelta(delta)]

    def _item_added(self, index: int, item: _Item) -> list[ProviderEvent]:
        if item.type != "function_call":
            return []
        ours = len(self._calls)
        self._calls[index] = ours
        self._streamed[index] = [item.arguments or ""]
        return [
            ToolCallDelta(
                index=ours, call_id=item.call_id, name=item.name, arguments=item.arguments or ""
            )
        ]

    def _arguments(self, index: int, delta: str) -> list[ProviderEvent]:
        ours = self._calls.get(index)
        if ours is None or not delta:
            return []
        self._streamed.setdefault(index, []).append(delta)
        return [ToolCallDelta(index=ours, arguments=delta)]

    def _item_done(self, index: int, item: _Item) -> list[ProviderEvent]:
        """Whatever the done item holds that was not streamed (servers that only send `done`
        items), and the reasoning state to hand back next turn."""
        streamed = self._streamed_so_far(index)
        if item.type == "reasoning":
            return [ReasoningData(item.encrypted_content)] if item.encrypted_content else []
        if item.type == "message":
            text = "".join(_part_text(part) for part in item.content or [])
            rest = text[len(streamed) :] if text.startswith(streamed) else ""
            return self._streamed_text(index, rest)
        if item.type == "function_call":
            events: list[ProviderEvent] = []
            if index not in self._calls:
                events += self._item_added(index, structs.replace(item, arguments=""))
            arguments = item.arguments or ""
            streamed = self._streamed_so_far(index)
            if arguments.startswith(streamed) and len(arguments) > len(streamed):
                events += self._arguments(index, arguments[len(streamed) :])
            return events
        return []

    def _streamed_so_far(self, index: int) -> str:
        pieces = self._streamed.get(index)
        if not pieces:
            return ""
        if len(pieces) > 1:
            pieces[:] = ["".join(pieces)]  # joined once; later deltas append to it
        return pieces[0]

    @property
    def done(self) -> bool:
        """Whether a terminal event arrived; nothing after it matters."""
        return self._done

    def finish(self) -> list[ProviderEvent]:
        """Called when the upstream stream ended: it must have sent a terminal event."""
        if not self._done:
            raise ProviderError(
                f"The provider '{self._provider}' ended its stream before response.completed."
            )
        return []
