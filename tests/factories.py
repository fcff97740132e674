"""Polyfactory factories for valid `POST /v1/responses` bodies against the local provider.

`build_request_body(seed).to_body()` gives a reproducible JSON-ready dict that the gateway
must accept (200) for every combination of the optional fields it draws; the schema tests
then validate what comes back against Open Responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random
from typing import Any, Literal

from polyfactory import Use
from polyfactory.factories import DataclassFactory

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
LOCAL_TEXT_MODELS = ("local/echo", "local/think")
TOOL_NAMES = ("get_weather", "lookup", "noop")

JSON = dict[str, Any]


@dataclass
class FunctionToolSpec:
    name: str
    description: str | None
    with_parameters: bool
    strict: Literal["absent", "null", "true", "false"]

    def to_json(self) -> JSON:
        tool: JSON = {"type": "function", "name": self.name}
        if self.description is not None:
            tool["description"] = self.description
        if self.with_parameters:
            tool["parameters"] = {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            }
        if self.strict != "absent":
            tool["strict"] = {"null": None, "true": True, "false": False}[self.strict]
        return tool


@dataclass
class RequestBody:
    """The request fields a valid body may carry; `None` means the key is left out."""

    model: str
    input: str
    instructions: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    tool_choice: Literal["auto", "none"] | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    reasoning: JSON | None = None
    text: JSON | None = None
    tools: list[FunctionToolSpec] = field(default_factory=list)

    def to_body(self, *, stream: bool = False) -> JSON:
        body: JSON = {"model": self.model, "input": self.input}
        optional = {
            "instructions": self.instructions,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "store": self.store,
            "metadata": self.metadata,
            "reasoning": self.reasoning,
            "text": self.text,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        if self.tools:
            body["tools"] = [tool.to_json() for tool in self.tools]
        if stream:
            body["stream"] = True
        return body


def _rng() -> Random:
    """The random source of every field here, so one seed fixes a whole body."""
    return RequestBodyFactory.__random__


class FunctionToolSpecFactory(DataclassFactory[FunctionToolSpec]):
    name = Use(lambda: _rng().choice(TOOL_NAMES))
    description = Use(lambda: _rng().choice((None, "Looks something up.", "")))
    with_parameters = Use(lambda: _rng().random() < 0.5)
    strict = Use(lambda: _rng().choice(("absent", "null", "true", "false")))


def _words() -> str:
    rng = _rng()
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))


def _maybe(value: Any) -> Any:
    return value if _rng().random() < 0.5 else None


def _text_format() -> JSON | None:
    rng = _rng()
    kind = rng.choice(("absent", "text", "json_object", "json_schema"))
    if kind == "absent":
        return None
    if kind == "json_schema":
        fmt: JSON = {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}
        if rng.random() < 0.5:
            fmt["strict"] = rng.choice((True, False))
        if rng.random() < 0.5:
            fmt["description"] = "An answer."
        return {"format": fmt, "verbosity": rng.choice(("low", "medium", "high"))}
    return {"format": {"type": kind}}


def _tools() -> list[FunctionToolSpec]:
    """Zero to two function tools with distinct names."""
    rng = _rng()
    names = rng.sample(TOOL_NAMES, rng.randint(0, 2))
    return [FunctionToolSpecFactory.build(name=name) for name in names]


class RequestBodyFactory(DataclassFactory[RequestBody]):
    __random_seed__ = 20260424

    model = Use(lambda: _rng().choice(LOCAL_TEXT_MODELS))
    input = Use(_words)
    instructions = Use(lambda: _maybe("Be brief."))
    temperature = Use(lambda: _maybe(round(_rng().uniform(0, 2), 2)))
    top_p = Use(lambda: _maybe(round(_rng().uniform(0, 1), 2)))
    max_output_tokens = Use(lambda: _maybe(_rng().randint(1, 64)))
    tool_choice = Use(lambda: _maybe(_rng().choice(("auto", "none"))))
    parallel_tool_calls = Use(lambda: _maybe(_rng().random() < 0.5))
    store = Use(lambda: _maybe(_rng().random() < 0.5))
    metadata = Use(lambda: _maybe({"suite": "schema", "case": str(_rng().randint(0, 99))}))
    reasoning = Use(
        lambda: _maybe(
            {
                "effort": _rng().choice(("low", "medium", "high")),
                "summary": _rng().choice(("auto", "concise", "detailed")),
            }
        )
    )
    text = Use(_text_format)
    tools = Use(_tools)


def build_request_body(seed: int) -> RequestBody:
    """A reproducible random body: the same seed always gives the same request."""
    RequestBodyFactory.seed_random(seed)
    return RequestBodyFactory.build()
