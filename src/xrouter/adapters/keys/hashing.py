"""The keyed hash gateway keys are stored and found by, and the making of new secrets and ids.

A key store holds `HMAC-SHA256(server secret, key secret)`, never the secret: a copy of the
store (a Redis dump, the keys file, a backup) gives no usable key, and without the server
secret not even a way to test guesses offline. The hash is deterministic, so the store can
index keys by it and a request costs one lookup, not a comparison with every key; the lookup
by an exact hash is what "constant time" means here (no prefix of a secret is ever compared).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from xrouter.domain.keys import KEY_ID_PREFIX, KEY_PREFIX

MIN_SECRET_CHARS = 16
"""Shorter server secrets are refused: the HMAC key is all that protects the stored hashes."""

_SECRET_BYTES = 32
"""token_urlsafe(32): 256 random bits, 43 characters after the prefix."""
_ID_BYTES = 8
"""16 hex characters: ids only need to be unique among one gateway's keys."""


class HmacKeyHasher:
    """Implements the KeyHasher port: hex HMAC-SHA256 with the server secret."""

    __slots__ = ("_base",)

    def __init__(self, secret: str, *, setting_name: str = "auth_secret") -> None:
        """`setting_name`: what the operator calls the server secret (entrypoints passes its
        variable), for the refusal of a missing or short one."""
        if len(secret) < MIN_SECRET_CHARS:
            what = "is not set" if not secret else f"is {len(secret)} characters long"
            raise ValueError(
                f"{setting_name} {what}: gateway keys are hashed with it, so it must be a random "
                f"secret of at least {MIN_SECRET_CHARS} characters (for example the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), the same on "
                "every instance and for `xrouter keys`."
            )
        # The key's inner and outer pads are computed once; each hash copies them (about
        # half the cost of hmac.new per request).
        self._base = hmac.new(secret.encode(), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "HmacKeyHasher(***)"

    def hash(self, secret: str) -> str:
        digest = self._base.copy()
        digest.update(secret.encode())
        return digest.hexdigest()


def new_secret() -> str:
    """A new gateway key: the prefix and 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def new_key_id() -> str:
    """A new public key id, `key_` and 16 random hex characters."""
    return KEY_ID_PREFIX + secrets.token_hex(_ID_BYTES)
