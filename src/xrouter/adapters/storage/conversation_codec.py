"""How conversations are encoded, in memory and in Redis: msgspec MessagePack, like stored
responses (codec.py). The conversation blob is `[owner, conversation]`, so its encoding starts
with the owner's and a Redis script can check the owner with GETRANGE without decoding it;
each item is encoded on its own, so a page or one item is read without the others.
"""

from __future__ import annotations

import msgspec

from xrouter.domain.conversations import Conversation
from xrouter.domain.responses import InputItem

_PAIR = 0x92
"""MessagePack's first byte of a two-element array."""


class ConversationCodec:
    """Encoders and decoders for one store (msgspec's are not free to build per call)."""

    __slots__ = ("_encoder", "_item", "_meta")

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._meta = msgspec.msgpack.Decoder(tuple[str | None, Conversation])
        self._item = msgspec.msgpack.Decoder(InputItem)

    def encode_meta(self, conversation: Conversation, owner: str | None) -> bytes:
        return self._encoder.encode((owner, conversation))

    def decode_meta(self, data: bytes) -> tuple[str | None, Conversation]:
        return self._meta.decode(data)

    def owner_prefix(self, owner: str) -> bytes:
        """The bytes every blob of `owner` starts with and no other owner's does (a
        MessagePack string carries its length); a blob with owner nil never does."""
        return bytes((_PAIR,)) + self._encoder.encode(owner)

    def encode_item(self, item: InputItem) -> bytes:
        return self._encoder.encode(item)

    def decode_item(self, data: bytes) -> InputItem:
        return self._item.decode(data)
