"""The use cases driven with fake adapters: no web layer, no network."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest

from tests.fakes import ScriptedProvider, Wait, WordCounter, build_harness
from xrouter.application.execution import DisconnectSignal, Execution
from xrouter.application.ports import CallContext
from xrouter.application.registry import ModelRegistry
from xrouter.domain import events as ev
from xrouter.domain.errors import (
    ClientDisconnected,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    ServerShuttingDown,
)
from xrouter.domain.lifecycle import Action, Reason
from xrouter.domain.provider_events import (
    Finish,
    ProviderEvent,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from xrouter.domain.responses import (
    FunctionCallItem,
    InputItem,
    ResponseRequest,
    Usage,
    output_text,
)
from xrouter.domain.secrets import SecretMasker

HELLO = [TextDelta("Hello "), TextDelta("there "), TextDelta("world"), Finish()]


def request(**fields: object) -> ResponseRequest:
    values: dict[str, object] = {"model": "fake/model", "input": "say hello to me"}
    values.update(fields)
    return ResponseRequest(**values)  # type: ignore[arg-type]


def actions(harness_listener: object, request_id: str) -> list[Action]:
    traces = harness_listener.traces()  # type: ignore[attr-defined]
    return [event.action for event in traces[request_id]]


async def collect(execution: Execution) -> list[ev.StreamEvent]:
    return [event async for event in execution.events()]


async def test_non_stream_folds_the_same_events_into_the_final_response() -> None:
    harness = build_harness(ScriptedProvider(HELLO))
    folded = await harness.create.run(request(), request_id="r1")
    streamed_execution = await harness.create.start(request(stream=True), request_id="r2")
    events = await collect(streamed_execution)
    final = events[-1]
    assert isinstance(final, ev.ResponseCompleted)
    assert output_text(folded) == output_text(final.response) == "Hello there world"
    assert folded.status == "completed"
    # Usage from the gateway's own counting: 4 input words, 3 output words.
    assert folded.usage == Usage(input_tokens=4, output_tokens=3, total_tokens=7)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert actions(harness.listener, "r1") == [
        Action.RECEIVE,
        Action.INGEST,
        Action.TOKENIZE,
        Action.EMIT_CHUNK,
        Action.EMIT_CHUNK,
        Action.EMIT_CHUNK,
        Action.FINISH,
        Action.RECORD_USAGE,
    ]


async def test_provider_reported_usage_wins() -> None:
    reported = Usage(input_tokens=100, output_tokens=50, total_tokens=150)
    harness = build_harness(ScriptedProvider([TextDelta("hi"), UsageReport(reported), Finish()]))
    response = await harness.create.run(request())
    assert response.usage == reported
    assert (harness.usage.records[-1].input_tokens, harness.usage.records[-1].output_tokens) == (
        100,
        50,
    )


async def test_error_before_first_chunk_is_raised_before_the_stream_starts() -> None:
    harness = build_harness(ScriptedProvider([ProviderError("upstream said no")]))
    execution = await harness.create.start(request(stream=True), request_id="r")
    with pytest.raises(ProviderError, match="upstream said no"):
        await anext(execution.events())
    assert actions(harness.listener, "r")[-2:] == [Action.PROVIDER_FAIL, Action.RECORD_USAGE]
    stored = await harness.get.get(execution.response_id)
    assert stored.status == "failed"
    assert stored.error is not None and stored.error.code == "provider_error"


async def test_error_mid_stream_sends_error_then_failed() -> None:
    script = [TextDelta("partial "), ProviderError("lost the upstream")]
    harness = build_harness(ScriptedProvider(script))  # type: ignore[arg-type]
    events = await collect(await harness.create.start(request(stream=True)))
    assert isinstance(events[-2], ev.ErrorEvent)
    assert events[-2].error.message == "lost the upstream"
    failed = events[-1]
    assert isinstance(failed, ev.ResponseFailed)
    assert failed.response.status == "failed"
    assert output_text(failed.response) == "partial "
    # Non-stream: the same failure is an exception, never a 200 with partial text.
    with pytest.raises(ProviderError):
        await harness.create.run(request())


async def test_generation_deadline_fails_with_a_timeout_naming_the_setting() -> None:
    harness = build_harness(
        ScriptedProvider(HELLO, delay_s=0.2),  # type: ignore[arg-type]
        generation_timeout_s=0.3,
    )
    with pytest.raises(ProviderTimeout, match="XR_GENERATION_TIMEOUT_S") as caught:
        await harness.create.run(request(), request_id="t")
    assert caught.value.status == 504
    assert actions(harness.listener, "t")[-2:] == [Action.TIME_OUT, Action.RECORD_USAGE]
    (record,) = harness.usage.for_request("t")
    assert record.status == "failed"
    # A stream that had output ends in-band, and the response is stored as failed.
    execution = await harness.create.start(request(stream=True), request_id="ts")
    events = await collect(execution)
    assert [type(e) for e in events[-2:]] == [ev.ErrorEvent, ev.ResponseFailed]
    assert "XR_GENERATION_TIMEOUT_S" in events[-2].error.message  # type: ignore[union-attr]
    stored = await harness.get.get(execution.response_id)
    assert stored.status == "failed" and stored.error is not None
    assert stored.error.code == "provider_timeout"


async def test_a_provider_timeout_keeps_its_own_message() -> None:
    own = ProviderTimeout("upstream 'up' sent nothing for 3 s (the read timeout)")
    harness = build_harness(ScriptedProvider([TextDelta("a"), own]), generation_timeout_s=60)
    with pytest.raises(ProviderTimeout) as caught:
        await harness.create.run(request(), request_id="own")
    assert caught.value.message == "upstream 'up' sent nothing for 3 s (the read timeout)"
    assert Action.TIME_OUT in actions(harness.listener, "own")


async def test_a_bare_timeout_error_from_a_provider_is_not_reported_as_a_timeout() -> None:
    harness = build_harness(ScriptedProvider([TextDelta("a"), TimeoutError()]))
    with pytest.raises(ProviderError, match="failed unexpectedly") as caught:
        await harness.create.run(request(), request_id="bare")
    assert not isinstance(caught.value, ProviderTimeout)
    assert Action.PROVIDER_FAIL in actions(harness.listener, "bare")


async def test_unknown_model_and_bad_input_fail_in_ingest() -> None:
    harness = build_harness(ScriptedProvider(HELLO))
    with pytest.raises(ModelNotFound):
        await harness.create.run(request(model="nope"), request_id="m")
    assert actions(harness.listener, "m") == [Action.RECEIVE, Action.REJECT]
    bad_item = InputItem(type="function_call", call_id="c1")  # no name, no arguments
    with pytest.raises(InvalidRequest) as caught:
        await harness.create.run(request(input=[bad_item]))
    assert caught.value.param == "input[0].name"
    assert harness.provider.calls == []


async def test_disconnect_during_ingest_fails_at_once() -> None:
    harness = build_harness(ScriptedProvider(HELLO), catalog_delay_s=5)
    signal = DisconnectSignal()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, signal.set)
    started = loop.time()
    with pytest.raises(ClientDisconnected):
        await harness.create.start(request(), request_id="d", disconnect=signal)
    assert loop.time() - started < 1
    assert actions(harness.listener, "d") == [Action.RECEIVE, Action.DISCONNECT_EARLY]
    assert harness.provider.calls == []
    assert harness.engine.inflight == 0


async def test_disconnect_during_tokenize_fails_at_once() -> None:
    harness = build_harness(ScriptedProvider(HELLO), counter=WordCounter(delay_s=5))
    signal = DisconnectSignal()
    asyncio.get_running_loop().call_later(0.05, signal.set)
    with pytest.raises(ClientDisconnected):
        await harness.create.start(request(), request_id="d", disconnect=signal)
    assert actions(harness.listener, "d") == [
        Action.RECEIVE,
        Action.INGEST,
        Action.DISCONNECT_EARLY,
    ]
    assert harness.provider.calls == []


async def test_disconnect_during_generate_lets_generation_finish() -> None:
    harness = build_harness(ScriptedProvider(HELLO, delay_s=0.02))  # type: ignore[arg-type]
    signal = DisconnectSignal()
    execution = await harness.create.start(request(stream=True), request_id="g", disconnect=signal)
    events = execution.events()
    await anext(events)
    signal.set()  # the client leaves after the first chunk
    assert [e async for e in events] == []  # the reader is released at once
    with pytest.raises(ClientDisconnected):
        await execution.result()
    response = await execution.outcome()
    assert response.status == "completed"
    assert output_text(response) == "Hello there world"
    trace = actions(harness.listener, "g")
    assert trace.index(Action.DISCONNECT_LATE) < trace.index(Action.FINISH)
    assert trace[-1] is Action.RECORD_USAGE
    assert [r.request_id for r in harness.usage.records] == ["g"]
    assert (await harness.get.get(execution.response_id)).status == "completed"


async def test_overload_is_refused_explicitly_and_admits_again_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = build_harness(ScriptedProvider(HELLO, delay_s=0.05), max_inflight=1)  # type: ignore[arg-type]
    first = await harness.create.start(request())
    with caplog.at_level(logging.WARNING, logger="xrouter.engine"):
        for _ in range(3):
            with pytest.raises(Overloaded) as caught:
                await harness.create.start(request())
    assert caught.value.retry_after is not None
    # One line names the limit; the refusals right after it are counted, not logged.
    refusals = [r.getMessage() for r in caplog.records if "XR_MAX_INFLIGHT" in r.getMessage()]
    assert len(refusals) == 1, refusals
    await first.result()
    assert (await harness.create.run(request())).status == "completed"


async def test_previous_response_id_sends_the_history_to_the_provider() -> None:
    provider = ScriptedProvider(
        [ToolCallDelta(0, '{"city":"Paris"}', "call_1", "weather"), Finish("tool_calls")]
    )
    harness = build_harness(provider)
    first = await harness.create.run(request(instructions="be brief"))
    call = first.output[0]
    assert isinstance(call, FunctionCallItem) and call.arguments == '{"city":"Paris"}'
    follow_up = [InputItem(type="function_call_output", call_id="call_1", output="sunny")]
    await harness.create.run(request(input=follow_up, previous_response_id=first.id))
    sent = provider.calls[-1]
    assert [item.type for item in sent.items] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert sent.instructions is None  # instructions are not inherited
    with pytest.raises(InvalidRequest) as caught:
        await harness.create.run(request(previous_response_id="resp_missing"))
    assert caught.value.code == "previous_response_not_found"


async def test_store_false_keeps_nothing_and_delete_removes() -> None:
    harness = build_harness(ScriptedProvider(HELLO))
    unstored = await harness.create.run(request(store=False))
    with pytest.raises(NotFound):
        await harness.get.get(unstored.id)
    stored = await harness.create.run(request())
    items = await harness.get.input_items(stored.id)
    assert [item["type"] for item in items.data] == ["message"]
    assert items.data[0]["id"].startswith("msg_")
    assert (await harness.get.delete(stored.id)).deleted is True
    with pytest.raises(NotFound):
        await harness.get.delete(stored.id)


async def test_shutdown_lets_short_generations_finish_and_fails_the_rest() -> None:
    harness = build_harness(ScriptedProvider(HELLO, delay_s=0.1))  # type: ignore[arg-type]
    slow = ScriptedProvider([TextDelta("a "), Wait(math.inf), Finish()], name="slow")
    harness.engine._catalog = ModelRegistry([harness.provider, slow])  # type: ignore[attr-defined]
    quick = await harness.create.start(request(), request_id="quick")
    plain = await harness.create.start(request(model="slow/model"), request_id="plain")
    streamed = await harness.create.start(request(model="slow/model", stream=True))
    events = streamed.events()
    first = await anext(events)  # the stream has started: its failure is in-band
    assert isinstance(first, ev.ResponseCreated)
    shutdown = asyncio.create_task(harness.engine.shutdown(grace_s=0.5))
    await asyncio.sleep(0.05)
    with pytest.raises(ServerShuttingDown) as refused:  # no admission once shutting down
        await harness.create.start(request(), request_id="late")
    assert refused.value.status == 503 and refused.value.code == "server_shutting_down"
    assert actions(harness.listener, "late") == [Action.RECEIVE, Action.REJECT]
    assert harness.listener.traces()["late"][-1].reason is Reason.SHUTTING_DOWN
    rest = [e async for e in events]
    await asyncio.wait_for(shutdown, 5)
    # Finished within the grace: completed as usual.
    assert (await quick.result()).status == "completed"
    # Still running at its end: failed explicitly, stored as failed, usage recorded.
    with pytest.raises(ServerShuttingDown, match="XR_SHUTDOWN_GRACE_S"):
        await plain.result()
    assert actions(harness.listener, "plain")[-2:] == [Action.PROVIDER_FAIL, Action.RECORD_USAGE]
    assert [type(e) for e in rest[-2:]] == [ev.ErrorEvent, ev.ResponseFailed]
    assert rest[-2].error.code == "server_shutting_down"  # type: ignore[union-attr]
    for execution in (plain, streamed):
        stored = await harness.get.get(execution.response_id)
        assert stored.status == "failed" and stored.error is not None
        assert stored.error.code == "server_shutting_down"
        (record,) = harness.usage.for_request(execution.request_id)
        assert record.status == "failed"
    assert harness.engine.inflight == 0 and len(harness.engine.running) == 0


async def test_shutdown_stops_a_generation_whose_client_does_not_read() -> None:
    words: list[ProviderEvent | Exception | Wait] = [TextDelta("word ") for _ in range(10)]
    harness = build_harness(ScriptedProvider([*words, Finish()]), stream_buffer=1)
    # A client that stopped reading: generation waits on the full channel. Shutdown stops
    # it at the end of the grace, without waiting for the client to read its failure.
    execution = await harness.create.start(request(stream=True), request_id="stuck")
    await asyncio.sleep(0.05)
    assert not execution.settled
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(harness.engine.shutdown(grace_s=0.05), 5)
    assert asyncio.get_running_loop().time() - started < 1
    assert execution.settled
    assert actions(harness.listener, "stuck")[-2:] == [Action.PROVIDER_FAIL, Action.RECORD_USAGE]
    assert harness.engine.inflight == 0
    # Should the client read again, its stream still ends with the failure.
    events = await collect(execution)
    assert [type(e) for e in events[-2:]] == [ev.ErrorEvent, ev.ResponseFailed]


async def test_a_finished_generation_does_not_wait_for_a_client_that_stopped_reading() -> None:
    words: list[ProviderEvent | Exception | Wait] = [TextDelta("word ") for _ in range(3)]
    harness = build_harness(ScriptedProvider([*words, Finish()]), stream_buffer=1)
    execution = await harness.create.start(request(stream=True), request_id="unread")
    events = execution.events()
    await anext(events)  # reads the opening batch, then stops reading
    await asyncio.sleep(0.05)
    assert not execution.settled  # backpressure: the provider waits for the reader
    remaining = [e async for e in events]
    assert isinstance(remaining[-1], ev.ResponseCompleted)
    # The opening batch fills the channel; the terminal events are queued after it without
    # waiting for a reader that never comes.
    harness.provider.script = [TextDelta("one"), Finish()]
    unread = await harness.create.start(request(stream=True), request_id="full")
    assert (await asyncio.wait_for(unread.outcome(), 1)).status == "completed"
    assert harness.engine.inflight == 0


async def test_provider_reported_cost_reaches_the_usage_sink() -> None:
    reported = Usage(input_tokens=1, output_tokens=1, total_tokens=2)
    harness = build_harness(
        ScriptedProvider([TextDelta("hi"), UsageReport(reported, cost=0.25), Finish()])
    )
    await harness.create.run(request(), request_id="c")
    (record,) = harness.usage.for_request("c")
    assert record.cost == 0.25


async def test_a_stream_that_ends_without_finish_is_a_provider_error() -> None:
    # No silent success: a cut stream is neither `completed` nor stored as completed.
    harness = build_harness(ScriptedProvider([]))
    with pytest.raises(ProviderError, match="without saying it had finished"):
        await harness.create.run(request(), request_id="empty")
    harness.provider.script = [TextDelta("half an ans")]
    execution = await harness.create.start(request(stream=True), request_id="cut")
    events = await collect(execution)
    assert [type(e) for e in events[-2:]] == [ev.ErrorEvent, ev.ResponseFailed]
    assert events[-2].error.code == "provider_error"  # type: ignore[union-attr]
    stored = await harness.get.get(execution.response_id)
    assert stored.status == "failed" and output_text(stored) == "half an ans"
    assert [r.status for r in harness.usage.records] == ["failed", "failed"]
    assert actions(harness.listener, "cut")[-2:] == [Action.PROVIDER_FAIL, Action.RECORD_USAGE]


async def test_run_applies_the_request_passthrough_options_like_start() -> None:
    harness = build_harness(ScriptedProvider(HELLO))
    routing = {"order": ["a", "b"]}
    await harness.create.run(request(provider=routing, transforms=["middle-out"]))
    assert harness.provider.calls[-1].passthrough == {
        "provider": routing,
        "transforms": ["middle-out"],
    }


async def test_delete_while_generating_wins() -> None:
    harness = build_harness(ScriptedProvider([TextDelta("slow "), Wait(0.2), Finish()]))
    execution = await harness.create.start(request(), request_id="del")
    await asyncio.sleep(0.05)
    deleted = await harness.get.delete(execution.response_id)
    assert deleted.deleted is True and deleted.id == execution.response_id
    assert (await execution.result()).status == "completed"  # the client still gets it
    with pytest.raises(NotFound):
        await harness.get.get(execution.response_id)
    with pytest.raises(NotFound):  # deleted once: a second delete finds nothing
        await harness.get.delete(execution.response_id)
    assert [r.status for r in harness.usage.records] == ["completed"]


async def test_a_running_response_with_store_false_cannot_be_deleted() -> None:
    harness = build_harness(ScriptedProvider([Wait(0.1), Finish()]))
    execution = await harness.create.start(request(store=False))
    with pytest.raises(NotFound):
        await harness.get.delete(execution.response_id)
    await execution.result()


async def test_failures_are_masked_before_they_are_logged_stored_or_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configured, client_token = "operator-key-0123456789", "client-byok-token-42"
    leak = ProviderError(f"upstream rejected key {configured} for {client_token}")
    harness = build_harness(
        ScriptedProvider([TextDelta("x "), leak]), masker=SecretMasker([configured])
    )
    context = CallContext(client_token=client_token)
    execution = await harness.create.start(request(stream=True), context=context)
    events = await collect(execution)
    with pytest.raises(ProviderError) as caught:
        await execution.outcome()
    stored = await harness.get.get(execution.response_id)
    assert stored.error is not None
    sent = events[-2]
    assert isinstance(sent, ev.ErrorEvent)
    for text in (caught.value.message, stored.error.message, sent.error.message, caplog.text):
        assert configured not in text and client_token not in text
    assert "upstream rejected key *** for ***" in caplog.text


async def test_the_reader_is_released_when_the_client_leaves_before_any_output() -> None:
    harness = build_harness(ScriptedProvider([Wait(0.2), *HELLO]))
    signal = DisconnectSignal()
    execution = await harness.create.start(request(stream=True), request_id="r", disconnect=signal)
    reader = asyncio.create_task(anext(execution.events(), None))
    await asyncio.sleep(0.02)
    signal.set()
    assert await asyncio.wait_for(reader, 1) is None  # woken at once, no events
    assert (await execution.outcome()).status == "completed"  # generation went on
    trace = actions(harness.listener, "r")
    assert trace.index(Action.DISCONNECT_LATE) < trace.index(Action.FINISH)


async def test_a_detached_generation_logs_when_the_client_leaves_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="xrouter.engine")
    harness = build_harness(ScriptedProvider([Wait(0.1), *HELLO]))
    signal = DisconnectSignal()
    execution = await harness.create.start(request(stream=True), disconnect=signal)
    signal.set()
    await execution.outcome()
    lines = [r.getMessage() for r in caplog.records if execution.response_id in r.getMessage()]
    assert len(lines) == 2
    assert "client left during generate" in lines[0] and "XR_GENERATION_TIMEOUT_S" in lines[0]
    assert "ended completed after" in lines[1]
