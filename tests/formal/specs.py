"""Reading formal/: the names a TLA+ module defines, its VARIABLES, the disjuncts of a
definition, a TLC .cfg's sections, and the state counts formal/README.md records."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

FORMAL = Path(__file__).resolve().parents[2] / "formal"

_COMMENT_LINE = re.compile(r"\\\*.*$", re.MULTILINE)
_COMMENT_BLOCK = re.compile(r"\(\*.*?\*\)", re.DOTALL)
_DEFINITION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?\s*==", re.MULTILINE)


def strip_comments(text: str) -> str:
    return _COMMENT_LINE.sub("", _COMMENT_BLOCK.sub("", text))


@dataclass
class Module:
    name: str
    text: str
    """Without comments."""
    definitions: set[str] = field(default_factory=set)
    variables: list[str] = field(default_factory=list)
    constants: list[str] = field(default_factory=list)

    def body(self, name: str) -> str:
        """The text of definition `name`, up to the next top-level definition."""
        match = re.search(rf"^{name}\s*(?:\([^)]*\))?\s*==(.*?)(?=^\S|\Z)", self.text, re.M | re.S)
        if match is None:
            raise KeyError(name)
        return match.group(1)

    def disjuncts(self, name: str) -> list[str]:
        """The operator names applied in definition `name` (its actions, for Next)."""
        return re.findall(r"(?<![\\\w])([A-Z][A-Za-z0-9_]*)\b", self.body(name))


def _declared(text: str, keyword: str) -> list[str]:
    match = re.search(rf"^{keyword}S?\b(.*?)(?=^\s*$|^\S)", text, re.M | re.S)
    if match is None:
        return []
    return [name.strip() for name in match.group(1).split(",") if name.strip()]


def read_module(name: str) -> Module:
    text = strip_comments((FORMAL / f"{name}.tla").read_text())
    module = Module(name=name, text=text)
    module.definitions = set(_DEFINITION.findall(text))
    module.variables = _declared(text, "VARIABLE")
    module.constants = _declared(text, "CONSTANT")
    return module


@dataclass
class Config:
    specification: str
    constants: dict[str, str]
    invariants: list[str]
    properties: list[str]


def read_config(name: str) -> Config:
    """The sections of formal/<name>.cfg that this project uses."""
    lines = strip_comments((FORMAL / f"{name}.cfg").read_text()).splitlines()
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        keyword, _, rest = line.partition(" ")
        if keyword in ("SPECIFICATION", "CONSTANTS", "CONSTANT", "INVARIANTS", "INVARIANT"):
            current = sections.setdefault(keyword.rstrip("S") + "S", [])
        elif keyword in ("PROPERTIES", "PROPERTY"):
            current = sections.setdefault("PROPERTIES", [])
        else:
            current.append(line)
            continue
        if rest.strip():
            current.append(rest.strip())
    constants = {}
    for entry in sections.get("CONSTANTS", []):
        key, _, value = entry.partition("=")
        constants[key.strip()] = value.strip()
    (specification,) = sections["SPECIFICATIONS"]
    return Config(
        specification=specification,
        constants=constants,
        invariants=sections.get("INVARIANTS", []),
        properties=sections.get("PROPERTIES", []),
    )


def recorded_state_count(cfg_name: str) -> int:
    """The distinct-state count formal/README.md records for `cfg_name`.cfg. TLC's figure and
    the transcription's are recorded side by side and must agree."""
    readme = " ".join((FORMAL / "README.md").read_text().split())
    pattern = (
        rf"`{re.escape(cfg_name)}\.cfg`: TLC finds (\d+) distinct states [^;]*; "
        rf"the Python transcription finds (\d+) distinct states"
    )
    match = re.search(pattern, readme)
    if match is None:
        raise AssertionError(f"formal/README.md records no state count for {cfg_name}.cfg")
    tlc, transcription = int(match.group(1)), int(match.group(2))
    if tlc != transcription:
        raise AssertionError(
            f"formal/README.md: TLC found {tlc} states for {cfg_name}.cfg, the transcription "
            f"{transcription}; the transcription is wrong"
        )
    return tlc
