"""Administering gateway keys: create, list, show, revoke, rotate. Used by `xrouter keys` and
by the admin routes (`/admin/keys`), against the same KeyStore the gateway authenticates with.

A secret exists only in the answer of `create` and `rotate`: the store gets its hash and its
first characters (`display`), so a key that is lost is rotated, never recovered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from msgspec import Struct
from msgspec.structs import replace as _replace

from xrouter.application.ports import KeyHasher, KeyStore
from xrouter.domain.errors import GatewayError, InvalidRequest, NotFound
from xrouter.domain.keys import DISPLAY_CHARS, GatewayKey, KeyLimits

MAX_NAME_CHARS = 100
MAX_MODEL_PATTERNS = 100
MAX_PATTERN_CHARS = 256
_ID_ATTEMPTS = 5
"""New ids are 64 random bits: a collision is a bug or a broken random source, not luck."""


class KeyStoreReadOnly(GatewayError):
    """The key store cannot be changed from here (the server's view of a keys file)."""

    status = 409
    type = "invalid_request_error"
    code = "key_store_read_only"


class KeyNotFound(NotFound):
    code = "key_not_found"

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"No gateway key has the id '{key_id[:80]}'. GET /admin/keys (or `xrouter keys "
            "list`) lists the keys.",
            param="id",
        )


class KeyView(Struct, frozen=True, kw_only=True):
    """A key as the admin views show it: never its hash, never its secret."""

    id: str
    name: str
    display: str
    status: str
    """`active`, `revoked` or `expired` (at the time of the view)."""
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    models: list[str]
    """Glob patterns; empty: every model."""
    limits: KeyLimits


def key_view(key: GatewayKey, now: float) -> KeyView:
    if key.revoked_at is not None and key.revoked_at <= now:
        status = "revoked"
    elif key.expires_at is not None and now >= key.expires_at:
        status = "expired"
    else:
        status = "active"
    return KeyView(
        id=key.id,
        name=key.name,
        display=key.display,
        status=status,
        created_at=int(key.created_at),
        expires_at=None if key.expires_at is None else int(key.expires_at),
        revoked_at=None if key.revoked_at is None else int(key.revoked_at),
        models=list(key.models),
        limits=key.limits,
    )


class KeyAdmin:
    """The key administration use case over a KeyStore and the server secret's KeyHasher."""

    def __init__(
        self,
        store: KeyStore,
        hasher: KeyHasher,
        clock: Callable[[], float],
        new_secret: Callable[[], str],
        new_key_id: Callable[[], str],
    ) -> None:
        """`clock`: wall-clock Unix seconds (created, revoked, expiry checks)."""
        self.store = store
        self._hasher = hasher
        self._clock = clock
        self._new_secret = new_secret
        self._new_key_id = new_key_id

    def now(self) -> float:
        return self._clock()

    async def create(
        self,
        name: str,
        *,
        expires_at: float | None = None,
        models: Sequence[str] = (),
        limits: KeyLimits | None = None,
    ) -> tuple[GatewayKey, str]:
        """A new key and its secret, which is shown this once and never stored."""
        self._require_writable()
        now = self._clock()
        name = _checked_name(name)
        _check_expiry(expires_at, now)
        patterns = _checked_models(models)
        limits = _checked_limits(limits or KeyLimits())
        key_id = await self._unused_id()
        secret = self._new_secret()
        key = GatewayKey(
            id=key_id,
            name=name,
            hash=self._hasher.hash(secret),
            display=secret[:DISPLAY_CHARS],
            created_at=now,
            expires_at=expires_at,
            models=patterns,
            limits=limits,
        )
        await self.store.save(key)
        return key, secret

    async def list_keys(self) -> list[GatewayKey]:
        return await self.store.list_keys()

    async def show(self, key_id: str) -> GatewayKey:
        key = await self.store.get(key_id)
        if key is None:
            raise KeyNotFound(key_id)
        return key

    async def revoke(self, key_id: str) -> GatewayKey:
        """Revoked from now on, at once everywhere the store is read. Revoking a revoked key
        changes nothing (its first revocation time stays)."""
        self._require_writable()
        key = await self.show(key_id)
        if key.revoked_at is not None:
            return key
        revoked = _replace(key, revoked_at=self._clock())
        await self.store.save(revoked)
        return revoked

    async def rotate(self, key_id: str) -> tuple[GatewayKey, str]:
        """A new secret for the same key (id, name, models, limits, expiry kept); the old
        secret stops working at once."""
        self._require_writable()
        key = await self.show(key_id)
        if key.revoked_at is not None:
            raise InvalidRequest(
                f"The key '{key.id}' is revoked: a revoked key is never usable again, so it "
                "is not rotated. Create a new key instead.",
                param="id",
                code="key_revoked",
            )
        secret = self._new_secret()
        rotated = _replace(key, hash=self._hasher.hash(secret), display=secret[:DISPLAY_CHARS])
        await self.store.save(rotated, replaces_hash=key.hash)
        return rotated, secret

    async def update(
        self,
        key_id: str,
        *,
        name: str | None = None,
        expires_at: float | None = None,
        clear_expiry: bool = False,
        models: Sequence[str] | None = None,
        limits: KeyLimits | None = None,
    ) -> GatewayKey:
        """Change a key's name, expiry, models or limits (None: unchanged); its secret stays."""
        self._require_writable()
        key = await self.show(key_id)
        if expires_at is not None:
            _check_expiry(expires_at, self._clock())
        changed = _replace(
            key,
            name=_checked_name(name) if name is not None else key.name,
            expires_at=None if clear_expiry else (expires_at or key.expires_at),
            models=_checked_models(models) if models is not None else key.models,
            limits=_checked_limits(limits) if limits is not None else key.limits,
        )
        await self.store.save(changed)
        return changed

    def _require_writable(self) -> None:
        if not self.store.writable:
            raise KeyStoreReadOnly(
                "This gateway reads its keys from a keys file and does not change it: create, "
                "revoke and rotate keys with `xrouter keys` on the gateway's host (the "
                "gateway sees the change within a second), or keep the keys in Redis to "
                "administer them here."
            )

    async def _unused_id(self) -> str:
        for _ in range(_ID_ATTEMPTS):
            key_id = self._new_key_id()
            if await self.store.get(key_id) is None:
                return key_id
        raise RuntimeError(f"{_ID_ATTEMPTS} new key ids in a row were already taken")


def _has_control(text: str) -> bool:
    return any(char < " " or char == "\x7f" for char in text)


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or _has_control(name):
        raise InvalidRequest(
            f"A key's name must be 1 to {MAX_NAME_CHARS} printable characters (who or what "
            "uses the key: `ci`, `alice laptop`).",
            param="name",
            code="invalid_value",
        )
    return name


def _check_expiry(expires_at: float | None, now: float) -> None:
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest(
            "`expires_at` is in the past: give a moment in the future (Unix seconds), or none "
            "for a key that does not expire.",
            param="expires_at",
            code="invalid_value",
        )


def _checked_models(models: Sequence[str]) -> tuple[str, ...]:
    patterns = tuple(model.strip() for model in models)
    if len(patterns) > MAX_MODEL_PATTERNS or any(
        not pattern or len(pattern) > MAX_PATTERN_CHARS or _has_control(pattern)
        for pattern in patterns
    ):
        raise InvalidRequest(
            f"`models` must be at most {MAX_MODEL_PATTERNS} non-empty patterns such as "
            "`openai/*`, `openai/gpt-4o` or an alias; none: every model.",
            param="models",
            code="invalid_value",
        )
    return patterns


def _checked_limits(limits: KeyLimits) -> KeyLimits:
    for name in ("requests_per_minute", "tokens_per_minute", "concurrent"):
        value = getattr(limits, name)
        if value is not None and (isinstance(value, bool) or value < 1):
            raise InvalidRequest(
                f"`{name}` must be a whole number of at least 1, or none for no limit.",
                param=f"limits.{name}",
                code="invalid_value",
            )
    return limits
