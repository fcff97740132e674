"""Text streamed live when Yandex sends cumulative snapshots instead of deltas.

Some Yandex models stream `response.output_text.delta` events whose `delta` is the whole text
so far ("He", "Hello", "Hello world"), not the new part. Passed on as they are, the client
would print "HeHelloHello world". The stream is taken as cumulative when its second piece of
text extends the first (the first piece is always sent as it is: it is both the first delta
and the first snapshot); from then on each piece is turned into the part past what was sent,
by prefix difference. A piece that does not extend the text means the upstream sends deltas
after all: it, and every piece after it, is passed on unchanged. Pure, no I/O.
"""

from __future__ import annotations

from typing import Literal

Mode = Literal["unknown", "cumulative", "deltas"]


class SnapshotDeltas:
    """Turns the text pieces of one answer into deltas; feed each piece in order."""

    def __init__(self) -> None:
        self._mode: Mode = "unknown"
        self._sent = ""  # all text passed on so far (needed only to compare snapshots)
        self._pieces = 0

    def feed(self, piece: str) -> str:
        """The new text `piece` adds ("" when it adds none)."""
        if not piece:
            return ""
        self._pieces += 1
        if self._mode == "deltas":
            return piece
        if self._pieces == 1:
            self._sent = piece
            return piece
        if self._mode == "unknown":
            extends = len(piece) > len(self._sent) and piece.startswith(self._sent)
            self._mode = "cumulative" if extends else "deltas"
            if not extends:
                self._sent = ""
                return piece
        if piece.startswith(self._sent):
            delta = piece[len(self._sent) :]
            self._sent = piece
            return delta
        # Not a snapshot of what was sent: the upstream switched to deltas.
        self._mode = "deltas"
        self._sent = ""
        return piece
