"""Argument types shared by the commands' parsers (argparse `type=` callables)."""

from __future__ import annotations

import argparse


def positive_int(raw: str) -> int:
    """A whole number of at least 1 (`--max-tokens`, a key's `--rpm`, `--tpm`...)."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} must be at least 1")
    return value
