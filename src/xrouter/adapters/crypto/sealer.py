"""`AeadSealer`: the ItemSealer port with AES-256-GCM (`cryptography`).

A sealed token is `xrc_` + base64url(version byte | 12-byte random nonce | ciphertext+tag).
The version byte is also authenticated (it is part of the associated data, with a purpose
label), so a token cannot be replayed under another format version or for another purpose,
and a change to any byte makes `open` fail. The key is derived from the operator's secret
with HKDF-SHA256, so any long random text will do as the secret and the AES key is never the
secret itself.

`cryptography` (about 7 MiB and 12 ms to import) is imported at the first seal or open, not at
startup: most gateways never compact. HKDF is two HMACs, done with the standard library
(tests/test_compaction_sealing.py checks it against `cryptography`'s HKDF).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MARKER = "xrc_"
"""What every token of this sealer starts with: how a foreign opaque item is told apart."""
VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_PURPOSE = b"xrouter compaction item"
_KDF_INFO = b"xrouter compaction item key v1"


class AeadSealer:
    """Seals and opens with one AES-256-GCM key. Random 96-bit nonces: safe for far more
    items than a gateway ever seals under one key (NIST's 2^32 bound)."""

    __slots__ = ("_cipher", "_key")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("an AES-256 key is 32 bytes")
        self._key = key
        self._cipher: AESGCM | None = None

    @classmethod
    def from_secret(cls, secret: str) -> AeadSealer:
        """The sealer of an operator's secret: every process given the same secret opens
        what any of them sealed."""
        return cls(hkdf_sha256(secret.encode(), _KDF_INFO))

    @classmethod
    def ephemeral(cls) -> AeadSealer:
        """A sealer with a random key of this process only: what it seals does not open after
        a restart or in another worker."""
        return cls(os.urandom(32))

    @property
    def _aead(self) -> AESGCM:
        if self._cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._cipher = AESGCM(self._key)
        return self._cipher

    def seal(self, plaintext: bytes) -> str:
        version = bytes([VERSION])
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, _PURPOSE + version)
        return MARKER + base64.urlsafe_b64encode(version + nonce + sealed).decode().rstrip("=")

    def recognizes(self, token: str) -> bool:
        return token.startswith(MARKER)

    def open(self, token: str) -> bytes | None:
        if not token.startswith(MARKER):
            return None
        body = token[len(MARKER) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < 1 + _NONCE_BYTES + _TAG_BYTES or raw[0] != VERSION:
            return None
        version, nonce, sealed = raw[:1], raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        aead = self._aead
        from cryptography.exceptions import InvalidTag

        try:
            return aead.decrypt(nonce, sealed, _PURPOSE + version)
        except InvalidTag:
            return None


def hkdf_sha256(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) without a salt, one 32-byte block: extract, then expand."""
    key = hmac.digest(bytes(32), secret, hashlib.sha256)
    return hmac.digest(key, info + b"\x01", hashlib.sha256)
