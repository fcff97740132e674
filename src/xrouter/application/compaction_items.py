"""XRouter's own compaction items: sealing a summary into one, and expanding one back into
the context a model reads.

A compaction item made by the gateway carries, sealed (the `ItemSealer` port: authenticated
encryption with the server's key), the summary the model wrote and the key it was made for.
Before a request is tokenized and sent upstream, every such item in its window (its input or
the history of `previous_response_id`) is opened and replaced by one user message holding
the summary, so an upstream never sees a compaction item it cannot read. A user message,
not a system or developer one: every chat upstream accepts a user message anywhere in the
conversation, while some refuse a system message after the first turn.

Items the gateway did not seal (a Responses upstream's own opaque `encrypted_content`) pass
through untouched to an upstream that compacts natively, and are refused for any other:
nobody else could read them.
"""

from __future__ import annotations

import msgspec

from xrouter.application.ports import ItemSealer, NativeCompaction
from xrouter.domain.errors import InvalidRequest
from xrouter.domain.responses import InputItem

SUMMARY_PREAMBLE = (
    "This conversation was compacted. Summary of everything before this point, written "
    "to continue from:\n\n"
)
"""What precedes the summary in the message an expanded item becomes (docs/compaction.md)."""


class SealedSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The plaintext inside a gateway-made item. `owner`: the gateway key it was made for
    (None with authentication off); only that key's requests may expand it."""

    summary: str
    owner: str | None
    model: str
    created_at: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SealedSummary)


class CompactionItems:
    """Seals summaries into compaction items and expands them back; no I/O."""

    __slots__ = ("_sealer",)

    def __init__(self, sealer: ItemSealer) -> None:
        self._sealer = sealer

    @classmethod
    def without_key(cls) -> CompactionItems:
        """Items with no sealing key (an engine built without one): nothing is recognised
        as the gateway's, so no item is ever expanded."""
        return cls(_NoKey())

    def seal(self, summary: SealedSummary) -> str:
        """The `encrypted_content` of a new item holding `summary`."""
        return self._sealer.seal(_encoder.encode(summary))

    def expand(
        self,
        items: list[InputItem],
        *,
        own_from: int,
        owner: str | None,
        provider: object,
    ) -> list[InputItem]:
        """`items` with each gateway-made compaction item replaced by its summary message.

        `own_from`: where this request's own input starts in `items` (earlier items are
        history), so an error names `input[i]`; `provider`: the one the request goes to (one
        that compacts natively gets the items the gateway did not make as they are). Raises
        InvalidRequest for an item that cannot be verified. Returns `items` itself when there
        is nothing to do.
        """
        if not any(item.type == "compaction" for item in items):
            return items
        native = isinstance(provider, NativeCompaction) and provider.compacts_natively
        expanded: list[InputItem] = []
        for index, item in enumerate(items):
            if item.type != "compaction":
                expanded.append(item)
                continue
            param = f"input[{index - own_from}]" if index >= own_from else "previous_response_id"
            token = item.encrypted_content or ""
            if not self._sealer.recognizes(token):
                if native:
                    expanded.append(item)
                    continue
                raise InvalidRequest(
                    "The compaction item could not be verified: it was not made by this "
                    "gateway, and the model's provider cannot read another party's compaction "
                    "items. Compact the conversation again through this gateway "
                    "(POST /v1/responses/compact) and send its output back as it came.",
                    param=param,
                    code="invalid_value",
                )
            expanded.append(_summary_message(self._open(token, owner, param)))
        return expanded

    def _open(self, token: str, owner: str | None, param: str) -> SealedSummary:
        plaintext = self._sealer.open(token)
        sealed: SealedSummary | None = None
        if plaintext is not None:
            try:
                sealed = _decoder.decode(plaintext)
            except msgspec.DecodeError:
                sealed = None
        if sealed is None or sealed.owner != owner:
            raise InvalidRequest(
                "The compaction item could not be verified: its encrypted_content was changed, "
                "or it was sealed by another gateway, for another key, or under a compaction "
                "key this gateway no longer has. Send compaction items back exactly as "
                "POST /v1/responses/compact returned them, or compact the conversation again.",
                param=param,
                code="invalid_value",
            )
        return sealed


def _summary_message(sealed: SealedSummary) -> InputItem:
    return InputItem(type="message", role="user", content=SUMMARY_PREAMBLE + sealed.summary)


class _NoKey:
    """The ItemSealer of a gateway with no compaction key: it makes and opens nothing."""

    def seal(self, plaintext: bytes) -> str:
        raise RuntimeError("no compaction key: the composition root gives the engine one")

    def recognizes(self, token: str) -> bool:
        return False

    def open(self, token: str) -> bytes | None:
        return None
