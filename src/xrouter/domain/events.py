"""Responses API stream events, one Struct per event type.

The `type` tag is the SSE `event:` name, so the writer can frame an event without a lookup
table. `sequence_number` is stamped by the builder that creates the events, starting at 0.

The deltas, one per streamed chunk, are `gc=False`: they hold only strings and numbers (and an
empty `logprobs`), never anything that refers back to them, so the collector need not track
them; the wire form is the same.
"""

from __future__ import annotations

from msgspec import Struct, field

from xrouter.domain.responses import (
    JSONObject,
    OutputItem,
    OutputText,
    Refusal,
    Response,
    SummaryText,
)


class ResponseCreated(Struct, tag_field="type", tag="response.created"):
    sequence_number: int
    response: Response


class ResponseInProgress(Struct, tag_field="type", tag="response.in_progress"):
    sequence_number: int
    response: Response


class ResponseCompleted(Struct, tag_field="type", tag="response.completed"):
    sequence_number: int
    response: Response


class ResponseIncomplete(Struct, tag_field="type", tag="response.incomplete"):
    sequence_number: int
    response: Response


class ResponseFailed(Struct, tag_field="type", tag="response.failed"):
    sequence_number: int
    response: Response


class OutputItemAdded(Struct, tag_field="type", tag="response.output_item.added"):
    sequence_number: int
    output_index: int
    item: OutputItem


class OutputItemDone(Struct, tag_field="type", tag="response.output_item.done"):
    sequence_number: int
    output_index: int
    item: OutputItem


class ContentPartAdded(Struct, tag_field="type", tag="response.content_part.added"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | Refusal


class ContentPartDone(Struct, tag_field="type", tag="response.content_part.done"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | Refusal


class OutputTextDelta(Struct, gc=False, tag_field="type", tag="response.output_text.delta"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[JSONObject] = field(default_factory=list)


class OutputTextDone(Struct, tag_field="type", tag="response.output_text.done"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[JSONObject] = field(default_factory=list)


class FunctionCallArgumentsDelta(
    Struct, gc=False, tag_field="type", tag="response.function_call_arguments.delta"
):
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDone(
    Struct, tag_field="type", tag="response.function_call_arguments.done"
):
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


class ReasoningSummaryPartAdded(
    Struct, tag_field="type", tag="response.reasoning_summary_part.added"
):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryPartDone(
    Struct, tag_field="type", tag="response.reasoning_summary_part.done"
):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryTextDelta(
    Struct, gc=False, tag_field="type", tag="response.reasoning_summary_text.delta"
):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    delta: str


class ReasoningSummaryTextDone(
    Struct, tag_field="type", tag="response.reasoning_summary_text.done"
):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    text: str


class ErrorBody(Struct):
    type: str
    code: str | None
    message: str
    param: str | None = None


class ErrorEvent(Struct, tag_field="type", tag="error"):
    """Mid-stream failure. The nested `error` object is what the SDK and Open Responses read;
    the flat copies are what OpenAI's own docs describe, so both readers are served."""

    sequence_number: int
    code: str | None
    message: str
    param: str | None
    error: ErrorBody


StreamEvent = (
    ResponseCreated
    | ResponseInProgress
    | ResponseCompleted
    | ResponseIncomplete
    | ResponseFailed
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
    | ReasoningSummaryPartAdded
    | ReasoningSummaryPartDone
    | ReasoningSummaryTextDelta
    | ReasoningSummaryTextDone
    | ErrorEvent
)

TerminalEvent = ResponseCompleted | ResponseIncomplete | ResponseFailed
TERMINAL_EVENTS = (ResponseCompleted, ResponseIncomplete, ResponseFailed)
