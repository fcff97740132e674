"""Rich output as text, for commands that print tables.

On a terminal the text keeps its colours and fits the window. Piped or captured it has no
colours, no width to fit (a wrapped model id or URL is useless to grep or to copy) and no
trailing blanks. Rendering to text first also lets a command mask secrets in what it is about
to write (config check does). rich is imported here, so only by a command that runs.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TextIO

from rich.console import Console, RenderableType


def render(renderables: Iterable[RenderableType], out: TextIO) -> str:
    """The text `renderables` make on `out` (a terminal or not)."""
    terminal = out.isatty()
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=terminal,
        width=None if terminal else 10_000,
        soft_wrap=not terminal,
    )
    for renderable in renderables:
        console.print(renderable)
    text = buffer.getvalue()
    if terminal:
        return text
    return "".join(line.rstrip() + "\n" for line in text.splitlines())
