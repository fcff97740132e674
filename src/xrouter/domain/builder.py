"""Turns a provider's canonical deltas into Responses stream events and the final response.

This is the one place that knows the event grammar of RESPONSES_API.md A4: which events open
and close an item, in what order, with which indexes. The stream and non-stream paths both run
through it; non-stream simply keeps the final response and drops the events.

Every event gets fresh objects (never a struct that is mutated later), because events are
encoded after they leave here, possibly after the builder has moved on.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

from msgspec import structs

from xrouter.domain import events as ev
from xrouter.domain.errors import GatewayError
from xrouter.domain.provider_events import (
    Finish,
    FinishReason,
    ProviderEvent,
    ReasoningData,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UpstreamInfo,
    UsageReport,
)
from xrouter.domain.responses import (
    FunctionCallItem,
    IncompleteDetails,
    ItemStatus,
    MessageItem,
    OutputItem,
    OutputText,
    ReasoningItem,
    Response,
    ResponseError,
    SummaryText,
    Usage,
)

NewId = Callable[[str], str]


@dataclass(slots=True)
class _OpenText:
    item_id: str
    output_index: int
    # One growing buffer, not a list of deltas: a long stream of small deltas would cost
    # a string object per delta (tens of bytes each) instead of ~1x the text.
    text: io.StringIO = field(default_factory=io.StringIO)
    data: str | None = None  # opaque reasoning state (reasoning items only)


@dataclass(slots=True)
class _OpenCall:
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: io.StringIO = field(default_factory=io.StringIO)


class ResponseBuilder:
    """Accumulates one response. Not thread-safe; one builder per request."""

    def __init__(self, response: Response, new_id: NewId) -> None:
        self._response = response
        self._new_id = new_id
        self._seq = 0
        # Output items by output_index; None marks a slot whose item is still open.
        self._output: list[OutputItem | None] = []
        self._message: _OpenText | None = None
        self._reasoning: _OpenText | None = None
        self._calls: dict[int, _OpenCall] = {}
        self.finish_reason: FinishReason | None = None
        self.provider_usage: Usage | None = None
        self.provider_cost: float | None = None
        # What the upstream called the answer (telemetry only, never output): the first
        # value the upstream named wins.
        self.upstream_model: str | None = None
        self.upstream_response_id: str | None = None
        self.chunks = 0

    def next_attempt(self, model: str, *, keep_sequence: bool) -> ResponseBuilder:
        """A builder for another model's attempt, after this one failed before any of its
        output reached the client: nothing it was fed is kept, the response names `model`.
        `keep_sequence`: events were already sent (a background response's opening), so
        numbering goes on from them instead of starting over."""
        fresh = ResponseBuilder(structs.replace(self._snapshot(), model=model), self._new_id)
        if keep_sequence:
            fresh._seq = self._seq
        return fresh

    # --- helpers ---------------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _snapshot(self) -> Response:
        return structs.replace(self._response, output=[], usage=None)

    def _open_slot(self) -> int:
        self._output.append(None)
        return len(self._output) - 1

    # --- the stream --------------------------------------------------------------------------

    def start(self) -> list[ev.StreamEvent]:
        """`response.created` then `response.in_progress`, both with an empty snapshot."""
        return [
            ev.ResponseCreated(sequence_number=self._next_seq(), response=self._snapshot()),
            ev.ResponseInProgress(sequence_number=self._next_seq(), response=self._snapshot()),
        ]

    def feed(self, event: ProviderEvent) -> list[ev.StreamEvent]:
        """The stream events one provider delta produces (possibly none)."""
        if isinstance(event, TextDelta):
            return self._text(event.text)
        if isinstance(event, ToolCallDelta):
            return self._tool_call(event)
        if isinstance(event, ReasoningDelta):
            return self._reasoning_delta(event.text)
        if isinstance(event, ReasoningData):
            out = self._reasoning_delta("")
            assert self._reasoning is not None
            self._reasoning.data = event.data
            return out
        if isinstance(event, UsageReport):
            self.provider_usage = event.usage
            self.provider_cost = event.cost
            return []
        if isinstance(event, Finish):
            self.finish_reason = event.reason
            return []
        if isinstance(event, UpstreamInfo):
            if self.upstream_model is None:
                self.upstream_model = event.model
            if self.upstream_response_id is None:
                self.upstream_response_id = event.response_id
            return []
        raise TypeError(f"unknown provider event {type(event).__name__}")

    def _text(self, text: str) -> list[ev.StreamEvent]:
        out: list[ev.StreamEvent] = []
        if self._message is None:
            out += self._close_reasoning()
            out += self._close_calls()
            index = self._open_slot()
            item_id = self._new_id("msg")
            self._message = _OpenText(item_id, index)
            out.append(
                ev.OutputItemAdded(
                    sequence_number=self._next_seq(),
                    output_index=index,
                    item=MessageItem(id=item_id, status="in_progress", content=[]),
                )
            )
            out.append(
                ev.ContentPartAdded(
                    sequence_number=self._next_seq(),
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    part=OutputText(text=""),
                )
            )
        message = self._message
        if not text:
            return out
        self.chunks += 1
        message.text.write(text)
        out.append(
            ev.OutputTextDelta(
                sequence_number=self._next_seq(),
                item_id=message.item_id,
                output_index=message.output_index,
                content_index=0,
                delta=text,
            )
        )
        return out

    def _reasoning_delta(self, text: str) -> list[ev.StreamEvent]:
        out: list[ev.StreamEvent] = []
        if self._reasoning is None:
            out += self._close_message()
            out += self._close_calls()
            index = self._open_slot()
            item_id = self._new_id("rs")
            self._reasoning = _OpenText(item_id, index)
            out.append(
                ev.OutputItemAdded(
                    sequence_number=self._next_seq(),
                    output_index=index,
                    item=ReasoningItem(id=item_id, summary=[], status="in_progress"),
                )
            )
            out.append(
                ev.ReasoningSummaryPartAdded(
                    sequence_number=self._next_seq(),
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    part=SummaryText(text=""),
                )
            )
        reasoning = self._reasoning
        if not text:
            return out
        self.chunks += 1
        reasoning.text.write(text)
        out.append(
            ev.ReasoningSummaryTextDelta(
                sequence_number=self._next_seq(),
                item_id=reasoning.item_id,
                output_index=reasoning.output_index,
                summary_index=0,
                delta=text,
            )
        )
        return out

    def _tool_call(self, delta: ToolCallDelta) -> list[ev.StreamEvent]:
        out: list[ev.StreamEvent] = []
        call = self._calls.get(delta.index)
        if call is None:
            out += self._close_message()
            out += self._close_reasoning()
            index = self._open_slot()
            call = _OpenCall(
                item_id=self._new_id("fc"),
                output_index=index,
                call_id=delta.call_id or self._new_id("call"),
                name=delta.name or "",
            )
            self._calls[delta.index] = call
            out.append(
                ev.OutputItemAdded(
                    sequence_number=self._next_seq(),
                    output_index=index,
                    item=FunctionCallItem(
                        id=call.item_id,
                        call_id=call.call_id,
                        name=call.name,
                        arguments="",
                        status="in_progress",
                    ),
                )
            )
        elif delta.name and not call.name:
            call.name = delta.name
        if delta.arguments:
            self.chunks += 1
            call.arguments.write(delta.arguments)
            out.append(
                ev.FunctionCallArgumentsDelta(
                    sequence_number=self._next_seq(),
                    item_id=call.item_id,
                    output_index=call.output_index,
                    delta=delta.arguments,
                )
            )
        return out

    # --- closing items -------------------------------------------------------------------------

    def _item_status(self) -> ItemStatus:
        return "incomplete" if self.finish_reason in ("length", "content_filter") else "completed"

    def _close_message(self) -> list[ev.StreamEvent]:
        message = self._message
        if message is None:
            return []
        self._message = None
        text = message.text.getvalue()
        part = OutputText(text=text)
        item = MessageItem(
            id=message.item_id, status=self._item_status(), content=[OutputText(text=text)]
        )
        self._output[message.output_index] = item
        item_id, index = message.item_id, message.output_index
        return [
            ev.OutputTextDone(
                sequence_number=self._next_seq(),
                item_id=item_id,
                output_index=index,
                content_index=0,
                text=text,
            ),
            ev.ContentPartDone(
                sequence_number=self._next_seq(),
                item_id=item_id,
                output_index=index,
                content_index=0,
                part=part,
            ),
            ev.OutputItemDone(
                sequence_number=self._next_seq(), output_index=message.output_index, item=item
            ),
        ]

    def _close_reasoning(self) -> list[ev.StreamEvent]:
        reasoning = self._reasoning
        if reasoning is None:
            return []
        self._reasoning = None
        text = reasoning.text.getvalue()
        item = ReasoningItem(
            id=reasoning.item_id,
            summary=[SummaryText(text=text)],
            status="completed",
            encrypted_content=reasoning.data,
        )
        self._output[reasoning.output_index] = item
        item_id, index = reasoning.item_id, reasoning.output_index
        return [
            ev.ReasoningSummaryTextDone(
                sequence_number=self._next_seq(),
                item_id=item_id,
                output_index=index,
                summary_index=0,
                text=text,
            ),
            ev.ReasoningSummaryPartDone(
                sequence_number=self._next_seq(),
                item_id=item_id,
                output_index=index,
                summary_index=0,
                part=SummaryText(text=text),
            ),
            ev.OutputItemDone(
                sequence_number=self._next_seq(), output_index=reasoning.output_index, item=item
            ),
        ]

    def _close_calls(self) -> list[ev.StreamEvent]:
        out: list[ev.StreamEvent] = []
        for call in sorted(self._calls.values(), key=lambda c: c.output_index):
            arguments = call.arguments.getvalue()
            item = FunctionCallItem(
                id=call.item_id,
                call_id=call.call_id,
                name=call.name,
                arguments=arguments,
                status=self._item_status(),
            )
            self._output[call.output_index] = item
            out.append(
                ev.FunctionCallArgumentsDone(
                    sequence_number=self._next_seq(),
                    item_id=call.item_id,
                    output_index=call.output_index,
                    name=call.name,
                    arguments=arguments,
                )
            )
            out.append(
                ev.OutputItemDone(
                    sequence_number=self._next_seq(), output_index=call.output_index, item=item
                )
            )
        self._calls.clear()
        return out

    def _close_all(self) -> list[ev.StreamEvent]:
        return self._close_reasoning() + self._close_message() + self._close_calls()

    # --- terminal ------------------------------------------------------------------------------

    def generated_text(self) -> str:
        """Everything the model produced so far, for counting output tokens."""
        pieces: list[str] = []
        for item in self._output:
            if isinstance(item, MessageItem):
                pieces.extend(p.text for p in item.content if isinstance(p, OutputText))
            elif isinstance(item, FunctionCallItem):
                pieces.append(item.arguments)
            elif isinstance(item, ReasoningItem):
                pieces.extend(s.text for s in item.summary)
        for open_text in (self._message, self._reasoning):
            if open_text is not None:
                pieces.append(open_text.text.getvalue())
        for call in self._calls.values():
            pieces.append(call.arguments.getvalue())
        return "".join(pieces)

    def close_items(self) -> list[ev.StreamEvent]:
        """Close every open item; call before `complete`, then count usage."""
        return self._close_all()

    def complete(self, usage: Usage, completed_at: int) -> ev.TerminalEvent:
        """The terminal event of a successful generation: completed, or incomplete when the
        provider stopped for length or content filtering."""
        output = [item for item in self._output if item is not None]
        reason = self.finish_reason
        if reason == "length" or reason == "content_filter":
            final = structs.replace(
                self._response,
                status="incomplete",
                output=output,
                usage=usage,
                incomplete_details=IncompleteDetails(
                    reason="max_output_tokens" if reason == "length" else "content_filter"
                ),
            )
            self._response = final
            return ev.ResponseIncomplete(sequence_number=self._next_seq(), response=final)
        final = structs.replace(
            self._response,
            status="completed",
            output=output,
            usage=usage,
            completed_at=completed_at,
        )
        self._response = final
        return ev.ResponseCompleted(sequence_number=self._next_seq(), response=final)

    def fail(self, error: GatewayError, usage: Usage | None) -> list[ev.StreamEvent]:
        """`error` then `response.failed`. Items still open are kept as `incomplete`."""
        partial = self._partial_items()
        output = [
            item if item is not None else partial[index]
            for index, item in enumerate(self._output)
            if item is not None or index in partial
        ]
        code = error.code or "server_error"
        final = structs.replace(
            self._response,
            status="failed",
            output=output,
            usage=usage,
            error=ResponseError(code=code, message=error.message),
        )
        self._response = final
        return [
            ev.ErrorEvent(
                sequence_number=self._next_seq(),
                code=code,
                message=error.message,
                param=error.param,
                error=ev.ErrorBody(
                    type=error.type, code=code, message=error.message, param=error.param
                ),
            ),
            ev.ResponseFailed(sequence_number=self._next_seq(), response=final),
        ]

    def cancel(self, usage: Usage | None) -> list[ev.StreamEvent]:
        """A cancelled background response: `response.failed` carrying status `cancelled`
        and no error (neither OpenAI's nor Open Responses' stream has a cancelled event; the
        SDK raises on an `error` event, and a cancel asked for is not one). Items still open
        are kept as `incomplete`."""
        partial = self._partial_items()
        output = [
            item if item is not None else partial[index]
            for index, item in enumerate(self._output)
            if item is not None or index in partial
        ]
        final = structs.replace(self._response, status="cancelled", output=output, usage=usage)
        self._response = final
        return [ev.ResponseFailed(sequence_number=self._next_seq(), response=final)]

    def _partial_items(self) -> dict[int, OutputItem]:
        """Open items by output_index, frozen as `incomplete`."""
        items: dict[int, OutputItem] = {}
        if self._message is not None:
            text = self._message.text.getvalue()
            items[self._message.output_index] = MessageItem(
                id=self._message.item_id, status="incomplete", content=[OutputText(text=text)]
            )
        if self._reasoning is not None:
            text = self._reasoning.text.getvalue()
            items[self._reasoning.output_index] = ReasoningItem(
                id=self._reasoning.item_id,
                summary=[SummaryText(text=text)],
                status="incomplete",
                encrypted_content=self._reasoning.data,
            )
        for call in self._calls.values():
            items[call.output_index] = FunctionCallItem(
                id=call.item_id,
                call_id=call.call_id,
                name=call.name,
                arguments=call.arguments.getvalue(),
                status="incomplete",
            )
        return items

    @property
    def response(self) -> Response:
        """The response as it stands: final once `complete` or `fail` has run."""
        return self._response
