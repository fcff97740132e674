"""Clock and id generation from the operating system."""

from __future__ import annotations

import os
import time


class SystemClock:
    """Implements the Clock port."""

    def now(self) -> float:
        return time.time()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


class RandomIds:
    """Implements the IdGenerator port: `<prefix>_` + 24 random bytes in hex (192 bits),
    unguessable so a response id works as a capability for GET/DELETE."""

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{os.urandom(24).hex()}"
