"""Access control: who is calling, which models they may use, and how much (gateway keys).

The engine asks at ingest, in this order, and stops at the first refusal with no upstream
call: `authenticate` (401 `invalid_api_key`), `check_model` (403 `model_not_allowed`), then
`admit` against the key's limits (429 `rate_limit_exceeded`). Tokenize charges the input
tokens, the terminal state the output tokens and gives back the concurrency lease
(`finish`). With auth off every caller is the anonymous principal and nothing is checked.

The stored-response routes authenticate too (`authenticate`), and compare owners.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence

from xrouter.application.ports import Clock, KeyAdmission, KeyHasher, KeyLimiter, KeyStore
from xrouter.domain.errors import ModelNotAllowed, RateLimited, Unauthorized
from xrouter.domain.keys import ANONYMOUS, KEY_PREFIX, Principal, looks_like_key

log = logging.getLogger("xrouter.access")

_LIMIT_NAMES = {
    "requests_per_minute": "requests per minute",
    "tokens_per_minute": "tokens per minute",
    "concurrent": "concurrent requests",
}


class AccessControl:
    __slots__ = ("_clock", "_hasher", "_limiter", "_store", "enabled")

    def __init__(
        self,
        *,
        store: KeyStore | None = None,
        hasher: KeyHasher | None = None,
        limiter: KeyLimiter | None = None,
        clock: Clock,
    ) -> None:
        """With a store and a hasher, gateway keys are required; without, auth is off."""
        self.enabled = store is not None and hasher is not None
        self._store = store
        self._hasher = hasher
        self._limiter = limiter
        self._clock = clock

    @classmethod
    def off(cls, clock: Clock) -> AccessControl:
        return cls(clock=clock)

    async def authenticate(self, token: str | None) -> Principal:
        """The key `token` is, or Unauthorized. Looked up by its keyed hash, so the time taken
        does not depend on how much of a guess matches a real key; the stored hash is
        compared in constant time all the same."""
        if not self.enabled:
            return ANONYMOUS
        assert self._store is not None and self._hasher is not None
        if token is None:
            raise Unauthorized(
                "This gateway needs a gateway key: send it as `Authorization: Bearer "
                f"{KEY_PREFIX}...`. Ask the gateway's operator for one."
            )
        if not looks_like_key(token):
            raise _incorrect()
        digest = self._hasher.hash(token)
        key = await self._store.find(digest)
        if key is None or not hmac.compare_digest(key.hash, digest):
            raise _incorrect()
        now = self._clock.now()
        if key.revoked_at is not None and key.revoked_at <= now:
            raise Unauthorized(
                f"The gateway key {key.display}... was revoked. Ask the gateway's operator for "
                "a new one."
            )
        if not key.usable_at(now):
            raise Unauthorized(
                f"The gateway key {key.display}... has expired. Ask the gateway's operator for "
                "a new one."
            )
        return Principal(key)

    def check_model(self, principal: Principal, requested: str, names: Sequence[str]) -> None:
        """ModelNotAllowed unless the key may use the model under one of `names` (as asked,
        the alias, the routed public id)."""
        key = principal.key
        if key is not None and not key.allows(names):
            raise ModelNotAllowed(requested, key.name)

    async def admit(
        self, principal: Principal, on_state: Callable[[KeyAdmission], None] | None = None
    ) -> KeyAdmission | None:
        """Count the request against the key's limits; RateLimited when over one. `on_state`
        sees the decision either way (the host's x-ratelimit-* headers)."""
        key = principal.key
        if key is None or self._limiter is None or not key.limits.any:
            return None
        admission = await self._limiter.admit(key)
        if on_state is not None:
            on_state(admission)
        if not admission.allowed:
            limit = _LIMIT_NAMES.get(admission.refused_by or "", admission.refused_by or "")
            wait = admission.retry_after_s
            raise RateLimited(
                f"The key '{key.name}' is over its limit of {limit}."
                + (f" Retry after {wait:.0f} s." if wait is not None else ""),
                retry_after=wait,
            )
        return admission

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Tokens against the key's tokens-per-minute (never refuses: admission checked)."""
        key = principal.key
        if key is None or self._limiter is None or key.limits.tokens_per_minute is None:
            return
        if tokens > 0:
            try:
                await self._limiter.charge_tokens(key, tokens)
            except Exception as exc:  # the request is served; only the count is short
                log.warning("could not charge %d tokens to key %s: %s", tokens, key.id, exc)

    async def start(self) -> None:
        """Start the key store's background work (at server startup)."""
        if self._store is not None:
            await self._store.start()

    async def aclose(self) -> None:
        """Close the key store and the limiter (at shutdown)."""
        if self._limiter is not None:
            await self._limiter.aclose()
        if self._store is not None:
            await self._store.aclose()

    def finish(self, principal: Principal, admission: KeyAdmission | None) -> None:
        """Give back the concurrency lease of a request that ended."""
        key = principal.key
        if key is not None and admission is not None and admission.lease is not None:
            assert self._limiter is not None
            self._limiter.release(key, admission.lease)


def _incorrect() -> Unauthorized:
    return Unauthorized(
        "Incorrect gateway key provided. Gateway keys start with "
        f"`{KEY_PREFIX}`; ask the gateway's operator for one."
    )
