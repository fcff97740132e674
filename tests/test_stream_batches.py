"""A stream read in batches (`Execution.batches`, `ChatExecution.chunk_batches`): what is ready
together goes out together, nothing waits for what is not ready yet, and the events are the
same, in the same order, as read one by one (issue 16: one write per batch, not per chunk)."""

from __future__ import annotations

import random
from typing import get_args

import msgspec
import pytest

from tests.fakes import ScriptedProvider, Wait, build_harness
from xrouter.application.chat_completions import ChatCompletions
from xrouter.application.chat_mapping import ChatTextChunk, ChunkMapper
from xrouter.domain import events as ev
from xrouter.domain.chat import ChatCompletionChunk, ChatRequest
from xrouter.domain.errors import ProviderError
from xrouter.domain.provider_events import Finish, ProviderEvent, TextDelta
from xrouter.domain.responses import ResponseRequest
from xrouter.entrypoints.http.codec import Codec
from xrouter.entrypoints.http.sse import SSEWriter

WORDS = [TextDelta(f"w{i} ") for i in range(20)]


def _request() -> ResponseRequest:
    return ResponseRequest(model="fake/model", input="say it", stream=True)


async def test_events_ready_together_come_as_one_batch_in_the_same_order() -> None:
    one_by_one = build_harness(ScriptedProvider([*WORDS, Finish()]))
    events = [e async for e in (await one_by_one.create.start(_request())).events()]
    batched = build_harness(ScriptedProvider([*WORDS, Finish()]))
    execution = await batched.create.start(_request())
    batches = [b async for b in execution.batches()]
    flat = [e for batch in batches for e in batch]
    assert [type(e) for e in flat] == [type(e) for e in events]
    assert [e.sequence_number for e in flat] == list(range(len(flat)))
    deltas = [e.delta for e in flat if isinstance(e, ev.OutputTextDelta)]
    assert deltas == [w.text for w in WORDS]
    # The provider yielded every delta without pausing: far fewer batches than events.
    assert all(batches) and len(batches) < len(flat) / 4
    assert isinstance(flat[-1], ev.ResponseCompleted)


async def test_a_delta_is_never_held_back_for_the_next_one() -> None:
    script: list[ProviderEvent | Exception | Wait] = [
        TextDelta("a"),
        Wait(0.05),
        TextDelta("b"),
        Wait(0.05),
        TextDelta("c"),
        Finish(),
    ]
    harness = build_harness(ScriptedProvider(script))
    execution = await harness.create.start(_request())
    texts = []
    async for batch in execution.batches():
        texts.append("".join(e.delta for e in batch if isinstance(e, ev.OutputTextDelta)))
    # The first batch carries the opening events with "a", sent before "b" existed.
    assert texts[:3] == ["a", "b", "c"]


async def test_a_failure_before_output_is_raised_by_the_first_batch() -> None:
    harness = build_harness(ScriptedProvider([ProviderError("upstream said no")]))
    execution = await harness.create.start(_request())
    with pytest.raises(ProviderError, match="upstream said no"):
        await anext(execution.batches())


async def test_chat_chunk_batches_map_each_batch_and_skip_chunkless_ones() -> None:
    harness = build_harness(ScriptedProvider([*WORDS, Finish()]))
    chat = msgspec.convert(
        {
            "model": "fake/model",
            "messages": [{"role": "user", "content": "say it"}],
            "stream": True,
        },
        ChatRequest,
    )
    execution = await ChatCompletions(harness.create).start(chat)
    batches = [b async for b in execution.chunk_batches()]
    assert all(batches)
    assert sum(isinstance(c, ChatTextChunk) for batch in batches for c in batch) == len(WORDS)
    chunks = [c.chunk() if isinstance(c, ChatTextChunk) else c for b in batches for c in b]
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    first, *middle, last = chunks
    assert isinstance(first, ChatCompletionChunk) and first.choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in middle] == [w.text for w in WORDS]  # type: ignore[union-attr]
    assert last.choices[0].finish_reason == "stop"  # type: ignore[union-attr]
    assert len({c.id for c in chunks}) == 1  # type: ignore[union-attr]


async def test_a_batch_is_written_as_the_frames_one_by_one_would_be() -> None:
    harness = build_harness(ScriptedProvider([*WORDS, Finish()]))
    events = [e async for e in (await harness.create.start(_request())).events()]
    codec = Codec()
    sse = SSEWriter(codec, get_args(ev.StreamEvent))
    assert sse.frames(events) == b"".join(sse.frame(e) for e in events)
    mapper = ChunkMapper(include_usage=True)
    chunks = [c for e in events for c in mapper.map(e)]
    full = [c.chunk() if isinstance(c, ChatTextChunk) else c for c in chunks]
    assert sse.chat_frames(chunks) == b"".join(b"data: " + codec.encode(c) + b"\n\n" for c in full)


def _random_text(rng: random.Random) -> str:
    """Text with what JSON must escape or may encode specially: quotes, backslashes, control
    characters, non-ASCII, astral characters, lone surrogate-free unicode, and the empty."""
    alphabet = ['"', "\\", "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "/", "<", "é", "Ж", "世", "🌍"]
    alphabet += ["a", " ", "{", "}", ":", ","]
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))


def test_a_text_chunk_frame_is_the_encoding_of_its_full_chunk() -> None:
    rng = random.Random(16)
    codec = Codec()
    sse = SSEWriter(codec, get_args(ev.StreamEvent))
    for _ in range(300):
        identity = (_random_text(rng) or "chatcmpl-x", rng.randrange(0, 2**40), _random_text(rng))
        texts = [_random_text(rng) for _ in range(rng.randrange(1, 6))]
        chunks: list[ChatTextChunk] = [ChatTextChunk(*identity, text) for text in texts]
        expected = b"".join(b"data: " + codec.encode(c.chunk()) + b"\n\n" for c in chunks)
        assert sse.chat_frames(list(chunks)) == expected
        assert b"".join(sse.chat_frame(c) for c in chunks) == expected


async def test_a_chat_stream_frames_text_chunks_of_another_identity_too() -> None:
    sse = SSEWriter(Codec(), get_args(ev.StreamEvent))
    first = [ChatTextChunk("a", 1, "m", "x")]
    rest = [ChatTextChunk("b", 2, "n", '"y"'), ChatTextChunk("a", 1, "m", "")]

    async def batches():  # type: ignore[no-untyped-def]
        yield rest

    written = b"".join([frame async for frame in sse.chat(first, batches(), lambda: None)])
    assert written == sse.chat_frames([*first, *rest]) + b"data: [DONE]\n\n"
    assert written.count(b'"id":"b"') == 1 and written.count(b'"content":""') == 1
