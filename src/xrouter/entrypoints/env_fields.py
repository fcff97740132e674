"""The pieces every settings class is built from: parsers for environment values, and
`setting(...)`, a dataclass field that carries its parser and its documentation, so the docs
tables are generated from the same place the values are read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A variable has a value we cannot use; the message names it and says what is expected."""


def setting(default: Any, parse: Callable[[str], Any], doc: str, *, secret: bool = False) -> Any:
    """A settings field: its default, how to read it from a string, one line of docs, and
    whether its value must stay out of logs and reprs."""
    return field(default=default, metadata={"parse": parse, "doc": doc, "secret": secret})


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def positive(parse: Callable[[str], T]) -> Callable[[str], T]:
    def check(raw: str) -> T:
        value = parse(raw)
        if value <= 0:  # type: ignore[operator]
            raise ValueError("expected a number greater than 0")
        return value

    return check


def non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected 0 or more")
    return value


def comma_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def one_of(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return raw

    return parse


@dataclass(frozen=True, slots=True)
class EnvNames:
    """A provider's settings named as the operator sets them: the field `max_inflight` of
    the provider whose variables start `XR_OPENAI_` is `XR_OPENAI_MAX_INFLIGHT`. Adapters get
    this as their `SettingNames`, so this is the one place the scheme is spelled for them."""

    prefix: str

    def __call__(self, name: str) -> str:
        return self.prefix + name.upper()


def masked_repr(settings: Any) -> str:
    """`Name(field=value, ...)` with every `secret=True` field that is set shown as `***`, so
    keys stay out of logs and tracebacks."""
    shown = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        secret = f.metadata.get("secret") and value
        shown.append(f"{f.name}={'***' if secret else repr(value)}")
    return f"{type(settings).__name__}({', '.join(shown)})"


def show_default(default: Any) -> str:
    """A default as the docs show it: as it would be written in the environment."""
    if default is None:
        return "(unset)"
    if isinstance(default, tuple):
        return ",".join(default) or "(none)"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)
