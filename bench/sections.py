"""Generated sections of docs/benchmarks.md, each between its own pair of markers, so that one
suite can be rerun without touching the figures of the others."""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of section `name` ("" is the original local suite's)."""
    if not name:
        return "<!-- bench:begin (written by bench/run.py) -->", "<!-- bench:end -->"
    return (
        f"<!-- bench-{name}:begin (written by bench/run.py --suite {name}) -->",
        f"<!-- bench-{name}:end -->",
    )


def wrap(name: str, body: list[str]) -> str:
    """`body` between the markers of section `name`."""
    begin, end = markers(name)
    return "\n".join([begin, "", *body, "", end]) + "\n"


def write(path: Path, name: str, markdown: str) -> None:
    """Replace section `name` of `path` with `markdown` (which includes the markers), keeping
    everything else; append the section when the file does not have it yet."""
    begin, end = markers(name)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, stop = text.find(begin), text.find(end)
    if start >= 0 and stop > start:
        text = text[:start] + markdown.rstrip("\n") + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + markdown
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
