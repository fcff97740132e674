"""Access control from the settings: XR_AUTH=keys builds it from the key store, the hasher and
the per-key limiter; any other mode has none (every caller is anonymous)."""

from __future__ import annotations

from collections.abc import Callable

from xrouter.application.access import AccessControl
from xrouter.application.ports import Clock, KeyHasher, KeyLimiter, KeyStore
from xrouter.entrypoints.config import Settings


def build_access(
    settings: Settings,
    clock: Clock,
    store: Callable[[], KeyStore],
    hasher: Callable[[], KeyHasher],
    limiter: Callable[[], KeyLimiter],
) -> AccessControl | None:
    """The key store, hasher and limiter are built only when keys are on (the hasher needs
    XR_AUTH_SECRET, which other modes do not)."""
    if settings.auth != "keys":
        return None
    return AccessControl(store=store(), hasher=hasher(), limiter=limiter(), clock=clock)
