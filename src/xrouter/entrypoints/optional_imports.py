"""Importing a library while some of what it imports for unused features is kept out.

Some libraries import optional extras whenever those are installed, for features this gateway
never uses (issue 16, docs/benchmarks.md: tens of milliseconds of every start each). Their
first import is wrapped in `optional_imports_hidden`, so they take the extras as absent, or in
`imports_deferred` for a module they import unconditionally, so it loads on first use only.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.abc import MetaPathFinder
from types import ModuleType
from typing import Any


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


class _Deferred(ModuleType):
    """Stands for the module of its name: reading an attribute imports the real one."""

    def __getattr__(self, attribute: str) -> Any:
        if sys.modules.get(self.__name__) is self:  # still inside `imports_deferred`
            raise AttributeError(attribute)
        return getattr(importlib.import_module(self.__name__), attribute)


@contextmanager
def imports_deferred(*names: str) -> Iterator[None]:
    """While the block runs, importing one of `names` that is not imported yet binds a
    stand-in that imports the real module the first time one of its attributes is read;
    afterwards importing them imports the real modules."""
    stand_ins = {name: _Deferred(name) for name in names if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


@contextmanager
def litestar_extras_hidden() -> Iterator[None]:
    """Around the first import of Litestar, two imports for what this gateway does not use
    (some 20 ms of every start):
    - `litestar.typing` imports annotated_types when it is installed (it comes with pydantic,
      for the OpenAI SDK) only to read annotated_types constraints in handler signatures, which
      this gateway's handlers do not use (their constraints are msgspec's): hidden;
    - `litestar.openapi.plugins` imports PyYAML for its YAML render plugin, which the gateway
      does not mount (its OpenAPI document is JSON only): deferred to its first use."""
    with optional_imports_hidden("annotated_types"), imports_deferred("yaml"):
        yield
