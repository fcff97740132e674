"""Per-key limits in this process: the KeyLimiter of a gateway without Redis (one worker), and
of the tests.

Exact within the process: `admit` checks and counts with no await in between, so on one event
loop no two admissions interleave. Several worker processes each keep their own counts (N
workers may together admit N times a limit): a deployment with several workers shares limits
through Redis (adapters/redis/key_limits.py).

Memory stays bounded: a key's counts are kept for the current window only (the first call in
a new window drops every key's counts of past ones), and a key's lease set is dropped with
its last lease. Leases do not expire here: they die with the process that holds them.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable

from xrouter.adapters.limits import (
    CONCURRENT,
    REQUESTS,
    TOKENS,
    UNLIMITED,
    WINDOW_S,
    rate_state,
    refusal,
)
from xrouter.application.ports import KeyAdmission
from xrouter.domain.keys import GatewayKey


class _Window:
    """One key's counts in window `index`."""

    __slots__ = ("index", "requests", "tokens")

    def __init__(self, index: int) -> None:
        self.index = index
        self.requests = 0
        self.tokens = 0


class MemoryKeyLimiter:
    """KeyLimiter in this process (see the module docstring)."""

    def __init__(
        self, clock: Callable[[], float] = time.time, *, window_s: float = WINDOW_S
    ) -> None:
        """`clock`: Unix seconds (windows are aligned to it); `window_s`: a window's length
        (a minute; tests shorten it)."""
        self._clock = clock
        self._window_s = window_s
        self._windows: dict[str, _Window] = {}
        self._leases: dict[str, set[str]] = {}
        self._current = -1
        """The newest window index seen: older windows were dropped when it was reached."""
        self._tokens = itertools.count(1)

    def __repr__(self) -> str:
        return f"MemoryKeyLimiter(keys={len(self._windows)}, leased={len(self._leases)})"

    async def admit(self, key: GatewayKey) -> KeyAdmission:
        limits = key.limits
        if not limits.any:
            return UNLIMITED
        window, reset_s = self._window(key.id)
        requests = window.requests if window is not None else 0
        tokens = window.tokens if window is not None else 0
        rpm, tpm, concurrent = (
            limits.requests_per_minute,
            limits.tokens_per_minute,
            limits.concurrent,
        )
        refused_by = None
        if rpm is not None and requests >= rpm:
            refused_by = REQUESTS
        elif tpm is not None and tokens >= tpm:
            refused_by = TOKENS
        elif concurrent is not None and len(self._leases.get(key.id, ())) >= concurrent:
            refused_by = CONCURRENT
        if refused_by is not None:
            state = rate_state(limits, requests_used=requests, tokens_used=tokens, reset_s=reset_s)
            return refusal(refused_by, state, reset_s)
        # Admitted: count and hold, with no await since the checks (the exactness).
        lease = None
        if concurrent is not None:
            lease = str(next(self._tokens))
            self._leases.setdefault(key.id, set()).add(lease)
        if rpm is not None or tpm is not None:
            if window is None:
                window = self._windows[key.id] = _Window(self._current)
            window.requests += 1
            requests = window.requests
        state = rate_state(limits, requests_used=requests, tokens_used=tokens, reset_s=reset_s)
        return KeyAdmission(allowed=True, state=state, lease=lease)

    async def charge_tokens(self, key: GatewayKey, tokens: int) -> None:
        if key.limits.tokens_per_minute is None or tokens <= 0:
            return
        window, _ = self._window(key.id)
        if window is None:
            window = self._windows[key.id] = _Window(self._current)
        window.tokens += tokens

    def release(self, key: GatewayKey, lease: str) -> None:
        leases = self._leases.get(key.id)
        if leases is None:
            return
        leases.discard(lease)
        if not leases:
            del self._leases[key.id]

    async def aclose(self) -> None:
        self._windows.clear()
        self._leases.clear()

    def _window(self, key_id: str) -> tuple[_Window | None, float]:
        """The key's counts in the current window (None: nothing counted yet) and the seconds
        left in it; entering a new window drops the counts of every past one."""
        now = self._clock()
        index = math.floor(now / self._window_s)
        if index != self._current:
            self._current = index
            self._windows = {k: w for k, w in self._windows.items() if w.index == index}
        reset_s = (index + 1) * self._window_s - now
        return self._windows.get(key_id), reset_s
