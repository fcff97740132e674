"""The use cases driven with fake adapters: no web layer, no network."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes import ScriptedProvider, WordCounter, build_harness
from xrouter.application.execution import DisconnectSignal
from xrouter.domain import events as ev
from xrouter.domain.errors import (
    ClientDisconnected,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    Overloaded,
    ProviderError,
    ProviderTimeout,
)
from xrouter.domain.lifecycle import Action
from xrouter.domain.provider_events import Finish, TextDelta, ToolCallDelta, UsageReport
from xrouter.domain.responses import (
    FunctionCallItem,
    InputItem,
    ResponseRequest,
    Usage,
    output_text,
)

HELLO = [TextDelta("Hello "), TextDelta("there "), TextDelta("world"), Finish()]


def request(**fields: object) -> ResponseRequest:
    values: dict[str, object] = {"model": "fake/model", "input": "say hello to me"}
    values.update(fields)
    return ResponseRequest(**values)  # type: ignore[arg-type]


def actions(harness_listener: object, request_id: str) -> list[Action]:
    traces = harness_listener.traces()  # type: ignore[attr-defined]
    return [event.action for event in traces[request_id]]


async def collect(execution: object) -> list[ev.StreamEvent]:
    first = await execution.first_events()  # type: ignore[attr-defined]
    return [*first, *[e async for e in execution.events()]]  # type: ignore[attr-defined]


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
    assert harness.usage.records[-1].usage == reported


async def test_error_before_first_chunk_is_raised_before_the_stream_starts() -> None:
    harness = build_harness(ScriptedProvider([ProviderError("upstream said no")]))
    execution = await harness.create.start(request(stream=True), request_id="r")
    with pytest.raises(ProviderError, match="upstream said no"):
        await execution.first_events()
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


async def test_provider_idle_timeout_fails_with_provider_timeout() -> None:
    harness = build_harness(
        ScriptedProvider(HELLO, delay_s=0.2),  # type: ignore[arg-type]
        provider_idle_timeout_s=0.05,
    )
    with pytest.raises(ProviderTimeout):
        await harness.create.run(request(), request_id="t")
    assert Action.TIME_OUT in actions(harness.listener, "t")


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
    await execution.first_events()
    signal.set()  # the client leaves after the first chunk
    response = await execution.result()
    assert response.status == "completed"
    assert output_text(response) == "Hello there world"
    trace = actions(harness.listener, "g")
    assert trace.index(Action.DISCONNECT_LATE) < trace.index(Action.FINISH)
    assert trace[-1] is Action.RECORD_USAGE
    assert [r.request_id for r in harness.usage.records] == ["g"]
    assert (await harness.get.get(execution.response_id)).status == "completed"


async def test_overload_is_refused_explicitly_and_admits_again_later() -> None:
    harness = build_harness(ScriptedProvider(HELLO, delay_s=0.05), max_inflight=1)  # type: ignore[arg-type]
    first = await harness.create.start(request())
    with pytest.raises(Overloaded) as caught:
        await harness.create.start(request())
    assert caught.value.retry_after is not None
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


async def test_shutdown_cancels_long_generation_into_a_failed_state() -> None:
    harness = build_harness(ScriptedProvider(HELLO, delay_s=5))  # type: ignore[arg-type]
    execution = await harness.create.start(request(), request_id="s")
    await asyncio.sleep(0.01)
    await harness.engine.aclose(grace_s=0.05)
    with pytest.raises(ProviderError, match="shut down"):
        await execution.result()
    assert actions(harness.listener, "s")[-2:] == [Action.PROVIDER_FAIL, Action.RECORD_USAGE]
    assert harness.engine.inflight == 0


async def test_provider_reported_cost_reaches_the_usage_sink() -> None:
    reported = Usage(input_tokens=1, output_tokens=1, total_tokens=2)
    harness = build_harness(
        ScriptedProvider([TextDelta("hi"), UsageReport(reported, cost=0.25), Finish()])
    )
    await harness.create.run(request(), request_id="c")
    (record,) = harness.usage.for_request("c")
    assert record.cost == 0.25
