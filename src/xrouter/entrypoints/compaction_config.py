"""The compaction items' sealer the settings ask for (docs/compaction.md)."""

from __future__ import annotations

import logging

from xrouter.adapters.crypto.sealer import AeadSealer
from xrouter.application.compaction_items import CompactionItems
from xrouter.entrypoints.config import Settings, env_name

log = logging.getLogger("xrouter.compaction")


def build_compaction_items(settings: Settings) -> CompactionItems:
    """Sealed with XR_COMPACTION_KEY; without it, a random key of this process, said loudly:
    a single-process gateway works as it is, several workers or instances need the key."""
    if settings.compaction_key:
        return CompactionItems(AeadSealer.from_secret(settings.compaction_key))
    log.warning(
        "%s is not set: compaction items are sealed with a random key of this process, so "
        "they cannot be used after a restart or by another worker or instance (a 400 that "
        "says the item could not be verified). Set %s to the same random value everywhere "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))').",
        env_name("compaction_key"),
        env_name("compaction_key"),
    )
    return CompactionItems(AeadSealer.ephemeral())
