"""Content-Encoding decoding of upstream answers, bounded while it inflates.

httpx's own decoders inflate each network chunk whole: 64 KiB of a gzip bomb becomes 64 MiB in
one call, before anyone can count it. Here the transport reads the raw bytes
(`Response.aiter_raw()`) and decodes them with `zlib.decompressobj`, asking for at most
`PIECE_BYTES` of output per call (`max_length`) and feeding the rest of the input back from
`unconsumed_tail`. The caller consumes each piece before the next is made, and the total is
checked before a piece is handed out, so memory stays at one piece plus what the caller keeps.

Only the encodings the gateway asks for are decoded: identity, gzip (and its alias x-gzip) and
deflate (zlib-wrapped as RFC 9110 says, or raw, as some servers send it). Anything else, or
stacked encodings, is refused: `UndecodableBody`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from xrouter.adapters.providers.body_limits import LimitExceeded

PIECE_BYTES = 64 * 1024
"""Most output one decompress call may produce."""
ACCEPTED_ENCODINGS = "gzip, deflate"
"""The `accept-encoding` the gateway sends when it wants compression."""

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS


class UndecodableBody(Exception):
    """The answer's Content-Encoding is one the gateway does not decode, or its compressed
    data is corrupt. The message says which, without quoting the body."""


class BodyDecoder:
    """Decodes one answer's body: `feed()` each raw chunk and iterate the pieces it yields,
    then `finish()` at the clean end of the body.

    `max_decoded_bytes` bounds what a compressed body may inflate to, in total (an identity
    body is not counted here: the caller's own limits apply to it). Over it, the iteration
    raises LimitExceeded before the piece that crossed it is handed out.
    """

    __slots__ = ("_encoding", "_limit", "_started", "_zlib", "produced")

    def __init__(self, content_encoding: str | None, max_decoded_bytes: int) -> None:
        self._encoding = _encoding(content_encoding)
        self._limit = max_decoded_bytes
        self._zlib = self._decompressor()
        self._started = False
        self.produced = 0
        """Bytes of decoded output handed out so far."""

    @property
    def encoding(self) -> str:
        return self._encoding

    def feed(self, raw: bytes) -> Iterator[bytes]:
        """The decoded pieces of `raw`, each at most PIECE_BYTES."""
        if self._zlib is None:
            if raw:
                yield raw
            return
        first = not self._started
        self._started = True
        try:
            yield from self._inflate(raw)
        except zlib.error:
            if not (first and self._encoding == "deflate" and self.produced == 0):
                raise UndecodableBody(
                    f"its {self._encoding} data is corrupt and cannot be decoded"
                ) from None
            # "deflate" without the zlib wrapper (RFC 1951), as some servers send it.
            self._zlib = zlib.decompressobj(_RAW_DEFLATE_WBITS)
            try:
                yield from self._inflate(raw)
            except zlib.error:
                raise UndecodableBody("its deflate data is corrupt") from None

    def finish(self) -> None:
        """Check the end of the body: compressed data must have reached its own end."""
        if self._zlib is not None and self._started and not self._zlib.eof:
            raise UndecodableBody(f"its {self._encoding} data ends before its end")

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        decompressor = self._zlib
        assert decompressor is not None
        while True:
            allowed = min(PIECE_BYTES, self._limit - self.produced + 1)
            piece = decompressor.decompress(data, allowed)
            data = decompressor.unconsumed_tail
            if piece:
                self.produced += len(piece)
                if self.produced > self._limit:
                    raise LimitExceeded(
                        f"the decompressed ({self._encoding}) answer",
                        self._limit,
                        "MAX_DECOMPRESSED_BYTES",
                    )
                yield piece
            if decompressor.eof:
                rest = decompressor.unused_data
                if not rest or self._encoding != "gzip":
                    return  # bytes after the end of a deflate stream are ignored, as zlib does
                # A gzip body may hold several members, one after another.
                decompressor = self._zlib = zlib.decompressobj(_GZIP_WBITS)
                data = rest
                continue
            if not data and len(piece) < allowed:
                return  # all input consumed and no output left pending

    def _decompressor(self) -> zlib._Decompress | None:
        if self._encoding == "gzip":
            return zlib.decompressobj(_GZIP_WBITS)
        if self._encoding == "deflate":
            return zlib.decompressobj(_ZLIB_WBITS)
        return None


def _encoding(header: str | None) -> str:
    """The one coding applied to the body ("identity", "gzip" or "deflate")."""
    codings = [
        coding
        for coding in (part.strip().lower() for part in (header or "").split(","))
        if coding and coding != "identity"
    ]
    if not codings:
        return "identity"
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return "deflate" if codings[0] == "deflate" else "gzip"
    shown = ", ".join(codings)[:60]
    raise UndecodableBody(
        f"it is encoded as `{shown}`, which the gateway does not decode "
        f"(it accepts {ACCEPTED_ENCODINGS} or identity)"
    )
