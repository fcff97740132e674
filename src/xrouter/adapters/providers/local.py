"""The built-in `local` provider: deterministic, no network, streams in several chunks.

It lets a newcomer run the gateway with no keys and lets tests (ours and users') trigger every
path of the lifecycle on purpose. Models (docs/local-provider.md):

- `local/echo`: answers with the text of the last user message, a word per chunk. When the
  last input item is a function call output, it answers `Tool <name> returned: <output>`.
  With function tools declared, `call <tool> {json}` in the user text makes a function call
  (several `call` phrases make parallel calls); `tool_choice` `required` or a named function
  forces a call with `{}` arguments.
- `local/agent`: as echo, but with function tools declared and a user message last, it calls
  the first declared tool (or the named `tool_choice`) with arguments built from the tool's
  JSON schema (`local_agent.py`), as a tool-using model would; `call <tool>` phrases still win.
- `local/think`: as echo, preceded by a reasoning summary.
- `local/slow`: as echo, the first chunk at once, then `slow_delay_s` before each further
  chunk (mid-stream timeouts, disconnects during generate).
- `local/error`: fails before its first chunk.
- `local/error-mid-stream`: fails after two chunks.

`max_output_tokens` counts a word as a token here: the answer stops there, `incomplete`.
It reports no usage, so the gateway counts tokens itself. It names the model that answered
(`echo`, ...) as an upstream would, and no response id of its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from xrouter.adapters.providers.local_agent import agent_call
from xrouter.application.ports import GenerationRequest
from xrouter.domain.errors import ProviderError
from xrouter.domain.models import ModelInfo
from xrouter.domain.provider_events import (
    Finish,
    ProviderEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UpstreamInfo,
)
from xrouter.domain.responses import InputItem

MODELS = ("echo", "agent", "think", "slow", "error", "error-mid-stream")
_WORDS = re.compile(r"\s*\S+\s*|\s+")
_CALL = re.compile(r"\bcall\s+([A-Za-z_][A-Za-z0-9_.-]*)(?:\s+(\{[^{}]*\}))?")
_ARGUMENT_FRAGMENTS = 3


class LocalProvider:
    """Implements the Provider port without any I/O."""

    def __init__(self, slow_delay_s: float = 0.2, created: int = 1_700_000_000) -> None:
        self._slow_delay_s = slow_delay_s
        self._models = [
            ModelInfo(id=f"local/{m}", owned_by="xrouter", created=created) for m in MODELS
        ]

    @property
    def name(self) -> str:
        return "local"

    def knows_model(self, upstream_model: str) -> bool:
        return upstream_model in MODELS

    def static_models(self) -> list[ModelInfo]:
        return list(self._models)

    async def list_models(self) -> list[ModelInfo]:
        return list(self._models)

    async def aclose(self) -> None:
        """Nothing to release: no connections, no tasks."""

    async def stream(self, call: GenerationRequest) -> AsyncIterator[list[ProviderEvent]]:
        # One delta per batch: this provider has no reads to group them by.
        model = call.route.upstream_model
        if model == "error":
            raise ProviderError(
                "The local provider failed before its first chunk, as model 'local/error' "
                "always does.",
            )
        yield [UpstreamInfo(model=model)]  # after the failure an upstream would answer instead
        delay = self._slow_delay_s if model == "slow" else 0.0
        text = _last_user_text(call.items)
        tool_calls = _requested_calls(call, text)
        if model == "think":
            count = len(text.split())
            yield [ReasoningDelta(f"The user wrote {count} word{'s' if count != 1 else ''}; ")]
            yield [ReasoningDelta("I will repeat them.")]
        if tool_calls:
            for index, (name, arguments) in enumerate(tool_calls):
                yield [ToolCallDelta(index=index, call_id=f"call_local_{index}", name=name)]
                for fragment in _split(arguments, _ARGUMENT_FRAGMENTS):
                    yield [ToolCallDelta(index=index, arguments=fragment)]
            yield [Finish("tool_calls")]
            return
        answer = _answer(call.items, text)
        words = _WORDS.findall(answer)
        limit = call.request.max_output_tokens
        truncated = limit is not None and len(words) > limit
        if truncated:
            words = words[:limit]
        for index, word in enumerate(words):
            if model == "error-mid-stream" and index == 2:
                raise ProviderError(
                    "The local provider failed mid-stream, as model 'local/error-mid-stream' "
                    "always does after two chunks."
                )
            if delay and index > 0:
                await asyncio.sleep(delay)
            yield [TextDelta(word)]
        if model == "error-mid-stream":
            raise ProviderError("The local provider failed mid-stream (short input).")
        yield [Finish("length" if truncated else "stop")]


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        str(part.get("text", ""))
        for part in content
        if part.get("type") in ("input_text", "output_text", "text")
    )


def _last_user_text(items: Sequence[InputItem]) -> str:
    for item in reversed(items):
        if item.type == "message" and item.role == "user":
            return _text_of(item.content)
    return ""


def _answer(items: Sequence[InputItem], user_text: str) -> str:
    """Echo the user, or report a tool's output when the last item is one."""
    if items and items[-1].type == "function_call_output":
        last = items[-1]
        name = (
            next(
                (
                    i.name
                    for i in reversed(items)
                    if i.type == "function_call" and i.call_id == last.call_id
                ),
                None,
            )
            or "unknown"
        )
        output = last.output if isinstance(last.output, str) else _text_of(last.output)
        return f"Tool {name} returned: {output}"
    return user_text


def _requested_calls(call: GenerationRequest, text: str) -> list[tuple[str, str]]:
    """(name, arguments JSON) for each function call the input asks for."""
    request = call.request
    if _ends_with_tool_output(call.items):
        return []
    tools = [tool.name for tool in request.tools if tool.type == "function" and tool.name]
    if not tools or request.tool_choice == "none":
        return []
    calls = [
        (match.group(1), match.group(2) or "{}")
        for match in _CALL.finditer(text)
        if match.group(1) in tools
    ]
    if not request.parallel_tool_calls:
        calls = calls[:1]
    if calls:
        return [(name, _normalise_json(arguments)) for name, arguments in calls]
    if call.route.upstream_model == "agent":
        chosen = agent_call(request, call.items, text)
        return [chosen] if chosen else []
    choice = request.tool_choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return [(str(choice["name"]), "{}")]
    if choice == "required":
        return [(tools[0], "{}")]
    return []


def _ends_with_tool_output(items: Sequence[InputItem]) -> bool:
    return bool(items) and items[-1].type == "function_call_output"


def _normalise_json(arguments: str) -> str:
    """Arguments as compact JSON; text that is not JSON becomes `{"input": text}`."""
    try:
        return msgspec.json.encode(msgspec.json.decode(arguments)).decode()
    except msgspec.DecodeError:
        return msgspec.json.encode({"input": arguments}).decode()


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]
