"""Gateway keys: who may call the gateway, which models they may use, and how much.

A gateway key is a random secret with a recognisable prefix (`xr-...`), shown once when it is
created. The gateway keeps only its keyed hash (HMAC-SHA256 with the server secret,
adapters/keys/hashing.py) and a public id (`key_...`) that logs, analytics and
the admin routes use: the secret itself is never stored, logged or shown again.

Pure: no I/O, no clock (callers pass `now`), no randomness (adapters make ids and secrets).
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from msgspec import Struct, field

KEY_PREFIX = "xr-"
"""Every gateway key starts with it, so a leaked key is recognisable (secret scanners, logs)."""
KEY_ID_PREFIX = "key_"
DISPLAY_CHARS = 8
"""How much of a key the admin views show (`xr-AbCde...`): enough to tell keys apart."""


class KeyLimits(Struct, frozen=True, kw_only=True):
    """Per-key limits; None: no limit of that kind."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    """Input tokens are charged at tokenize, output tokens when the request ends."""
    concurrent: int | None = None
    """Requests of this key admitted and not yet terminal (a lease that expires if its worker
    dies)."""

    @property
    def any(self) -> bool:
        return (
            self.requests_per_minute is not None
            or self.tokens_per_minute is not None
            or self.concurrent is not None
        )


class GatewayKey(Struct, frozen=True, kw_only=True):
    """One key as the key store keeps it (never the secret)."""

    id: str
    """Public, stable across rotation: `key_<hex>`."""
    name: str
    hash: str
    """Hex HMAC-SHA256 of the secret with the server secret."""
    display: str
    """The secret's first DISPLAY_CHARS characters, for people telling keys apart."""
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    models: tuple[str, ...] = ()
    """Glob patterns over `provider/model` ids and aliases (`openai/*`, `fast`); empty: all."""
    limits: KeyLimits = field(default_factory=KeyLimits)

    def usable_at(self, now: float) -> bool:
        """Not revoked and not expired at `now` (Unix seconds)."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at

    def allows(self, names: Iterable[str]) -> bool:
        """Whether any of `names` (the model as asked for, its alias, the routed public id)
        matches one of the key's patterns. Case-sensitive, like model ids."""
        if not self.models:
            return True
        return any(fnmatchcase(name, pattern) for name in names for pattern in self.models)


class Principal(Struct, frozen=True):
    """Who a request is made for: the authenticated key (None when auth is off)."""

    key: GatewayKey | None = None

    @property
    def owner(self) -> str | None:
        """The owner id stored with responses this principal creates."""
        return self.key.id if self.key is not None else None

    @property
    def key_name(self) -> str | None:
        return self.key.name if self.key is not None else None


ANONYMOUS = Principal()
"""Auth off (no gateway keys, or BYOK alone): everything is allowed and owned by nobody."""


def looks_like_key(token: str) -> bool:
    """A cheap shape check before hashing: a gateway key, not some other bearer token."""
    return token.startswith(KEY_PREFIX) and 16 <= len(token) <= 256
