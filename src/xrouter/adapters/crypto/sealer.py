"""`AeadSealer`: the ItemSealer port with AES-256-GCM (`cryptography`).

A sealed token is `xrc_` + base64url(version byte | 12-byte random nonce | ciphertext+tag).
The version byte is also authenticated (it is part of the associated data, with a purpose
label), so a token cannot be replayed under another format version or for another purpose,
and a change to any byte makes `open` fail. The key is derived from the operator's secret
with HKDF-SHA256, so any long random text will do as the secret and the AES key is never the
secret itself.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("an AES-256 key is 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_secret(cls, secret: str) -> AeadSealer:
        """The sealer of an operator's secret: every process given the same secret opens
        what any of them sealed."""
        kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO)
        return cls(kdf.derive(secret.encode()))

    @classmethod
    def ephemeral(cls) -> AeadSealer:
        """A sealer with a random key of this process only: what it seals does not open after
        a restart or in another worker."""
        return cls(AESGCM.generate_key(bit_length=256))

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
        try:
            return self._aead.decrypt(nonce, sealed, _PURPOSE + version)
        except InvalidTag:
            return None
