"""Importing a library while some of its optional extras are kept out.

Some libraries import optional extras whenever those are installed, for features this gateway
never uses (issue 16, docs/benchmarks.md: tens of milliseconds of every start each). Their
first import is wrapped in `optional_imports_hidden`, so they take the extras as absent.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.abc import MetaPathFinder


class _Hidden(MetaPathFinder):
    """Finds `names` (and their submodules) nowhere: importing them raises ImportError."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname.partition(".")[0] in self._names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


@contextmanager
def optional_imports_hidden(*names: str) -> Iterator[None]:
    """While the block runs, importing one of `names` that is not imported yet fails as if it
    were not installed; afterwards it imports as usual. (A finder rather than None entries in
    sys.modules: Cython-compiled modules take those as the module itself.)"""
    finder = _Hidden(tuple(name for name in names if name not in sys.modules))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


@contextmanager
def litestar_extras_hidden() -> Iterator[None]:
    """Around the first import of Litestar: `litestar.typing` imports annotated_types when it
    is installed (it comes with pydantic, for the OpenAI SDK), some 10 ms of every start, only
    to read annotated_types constraints in handler signatures, which this gateway's handlers
    do not use (their constraints are msgspec's)."""
    with optional_imports_hidden("annotated_types"):
        yield
