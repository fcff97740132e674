"""Per-key limits (the KeyLimiter port): in this process (memory.py) or shared in Redis
(adapters/redis/key_limits.py).

Both count in fixed windows aligned to their clock (Unix time divided by the window's
length, one minute by default), so "never more than K per window" is exact and the
x-ratelimit-reset-* values are the seconds to the window's end. What they share is here:
turning what a backend counted into the port's RateState and KeyAdmission, so the two
answer alike.
"""

from __future__ import annotations

from typing import Final

from xrouter.application.ports import KeyAdmission, RateState
from xrouter.domain.keys import KeyLimits

WINDOW_S: Final = 60.0
"""A window's length: the limits are per minute."""
CONCURRENCY_RETRY_S: Final = 1.0
"""Retry-After for a refusal by the concurrency limit: a lease frees when some request of the
key ends, which no window predicts, so a short wait."""

REQUESTS: Final = "requests_per_minute"
TOKENS: Final = "tokens_per_minute"
CONCURRENT: Final = "concurrent"


def rate_state(
    limits: KeyLimits, *, requests_used: int, tokens_used: int, reset_s: float
) -> RateState:
    """The key's standing after this request: `requests_used` and `tokens_used` are the
    window's counts (this request included when it was admitted), `reset_s` the seconds
    left in the window. A limit the key does not have stays None."""
    rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
    return RateState(
        limit_requests=rpm,
        remaining_requests=None if rpm is None else max(0, rpm - requests_used),
        reset_requests_s=None if rpm is None else reset_s,
        limit_tokens=tpm,
        remaining_tokens=None if tpm is None else max(0, tpm - tokens_used),
        reset_tokens_s=None if tpm is None else reset_s,
    )


def refusal(refused_by: str, state: RateState, reset_s: float) -> KeyAdmission:
    """A refusal by `refused_by`: retry when the window ends, or shortly for concurrency."""
    retry_after = CONCURRENCY_RETRY_S if refused_by == CONCURRENT else reset_s
    return KeyAdmission(
        allowed=False, state=state, refused_by=refused_by, retry_after_s=retry_after
    )


UNLIMITED: Final = KeyAdmission(allowed=True, state=RateState())
"""The admission of a key without limits: nothing to count, nothing to hold."""
