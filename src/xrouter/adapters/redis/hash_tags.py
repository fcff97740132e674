"""The keys of one record (a response, a conversation) under one hash tag: `<prefix>:{<id>}:`
starts each of them, so a Redis Cluster keeps them on one slot and a script may touch them all
(no CROSSSLOT). Only the first `{...}` of a key is hashed, hence no braces in the prefix or
the id.
"""

from __future__ import annotations

from typing import Final

MAX_ID_CHARS: Final = 256
"""Longer ids are never ours (ours are a short type prefix and 48 hex digits): such an id is
unknown, and no key is built from it."""


def check_key_prefix(key_prefix: str) -> None:
    """Refuse (ValueError) a prefix with a brace: it would become the hash tag."""
    if "{" in key_prefix or "}" in key_prefix:
        raise ValueError("key_prefix must not contain braces (they make the hash tag)")


def tagged_base(key_prefix: str, record_id: str) -> str | None:
    """`<prefix>:{<id>}:`, to which each key of the record adds its suffix; None for an id
    that is not ours: empty, too long, or with a brace (it would change which part of the key
    is hashed)."""
    if not record_id or len(record_id) > MAX_ID_CHARS or "{" in record_id or "}" in record_id:
        return None
    return f"{key_prefix}:{{{record_id}}}:"
