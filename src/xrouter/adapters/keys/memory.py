"""Gateway keys in this process's memory: for tests and embedding, and for a gateway whose
keys are created over `/admin/keys` and need not survive a restart."""

from __future__ import annotations

from collections.abc import Iterable

from xrouter.domain.keys import GatewayKey


class MemoryKeyStore:
    """Implements the KeyStore port with two dicts: by id and by hash."""

    def __init__(self, keys: Iterable[GatewayKey] = ()) -> None:
        self._by_id: dict[str, GatewayKey] = {}
        self._id_by_hash: dict[str, str] = {}
        for key in keys:
            self._put(key, None)

    def __repr__(self) -> str:
        return f"MemoryKeyStore({len(self._by_id)} keys)"

    @property
    def writable(self) -> bool:
        return True

    async def find(self, key_hash: str) -> GatewayKey | None:
        key_id = self._id_by_hash.get(key_hash)
        return None if key_id is None else self._by_id.get(key_id)

    async def get(self, key_id: str) -> GatewayKey | None:
        return self._by_id.get(key_id)

    async def list_keys(self) -> list[GatewayKey]:
        return sorted(self._by_id.values(), key=lambda key: (key.created_at, key.id))

    async def save(self, key: GatewayKey, *, replaces_hash: str | None = None) -> None:
        self._put(key, replaces_hash)

    async def start(self) -> None:
        """No background work."""

    async def aclose(self) -> None:
        """Nothing to close."""

    def _put(self, key: GatewayKey, replaces_hash: str | None) -> None:
        previous = self._by_id.get(key.id)
        # The hash the key had before must stop authenticating, whether or not the caller
        # named it.
        for old in {replaces_hash, previous.hash if previous else None} - {None, key.hash}:
            if old is not None and self._id_by_hash.get(old) == key.id:
                del self._id_by_hash[old]
        self._by_id[key.id] = key
        self._id_by_hash[key.hash] = key.id
