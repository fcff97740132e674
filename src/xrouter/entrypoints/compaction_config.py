"""The compaction items' sealer the settings ask for (docs/compaction.md)."""

from __future__ import annotations

import logging

from xrouter.adapters.crypto.sealer import AeadSealer
from xrouter.application.compaction_items import CompactionItems
from xrouter.entrypoints.config import Settings, env_name

log = logging.getLogger("xrouter.compaction")


def build_compaction_items(settings: Settings) -> CompactionItems:
    """Sealed with XR_COMPACTION_KEY; without it, with a key derived from XR_AUTH_SECRET
    (HKDF: a key of its own, not the secret), which every worker and instance of a keyed
    gateway already shares; without either, a random key of this process, said loudly: a
    single-process gateway works as it is, several workers or instances need a key."""
    if settings.compaction_key:
        return CompactionItems(AeadSealer.from_secret(settings.compaction_key))
    if settings.auth_secret:
        log.info(
            "compaction items are sealed with a key derived from %s (%s is not set)",
            env_name("auth_secret"),
            env_name("compaction_key"),
        )
        return CompactionItems(AeadSealer.from_secret(settings.auth_secret))
    log.warning(
        "neither %s nor %s is set: compaction items are sealed with a random key of this "
        "process, so they cannot be used after a restart or by another worker or instance "
        "(a 400 that says the item could not be verified). Set %s to the same random value "
        "everywhere (python -c 'import secrets; print(secrets.token_urlsafe(32))').",
        env_name("compaction_key"),
        env_name("auth_secret"),
        env_name("compaction_key"),
    )
    return CompactionItems(AeadSealer.ephemeral())
