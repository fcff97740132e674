"""Gateway keys in a TOML file, for a single-node gateway without Redis.

The file holds hashes, never a secret (`xrouter keys` shows a secret once and writes only its
hash), so it may be backed up like any configuration; it is still written 0600, since a hash
and the server secret together check guesses offline.

    [keys.key_0123456789abcdef]
    name = "ci"
    hash = "5d41402abc4b2a76b9719d911017c592..."
    display = "xr-AbCde"
    created_at = 2026-11-29T10:30:00Z
    expires_at = 2026-12-29T10:30:00Z      # optional, like every line below
    revoked_at = 2026-11-30T08:00:00Z
    models = ["openai/*", "fast"]
    requests_per_minute = 60
    tokens_per_minute = 100000
    concurrent = 4

Two classes share the format:

- `TomlKeyStore`, the server's read-only view. It re-reads the file when its identity, mtime
  or size changes, looked at no more than every `check_every_s` (one stat), so a key revoked
  or rotated by `xrouter keys` stops working within half a second, with no restart. A file
  that does not parse keeps the keys last read (an ERROR names the file and the line): a typo
  in a hand edit must not lock every client out, nor let revoked keys back in.
- `TomlKeyFile`, what `xrouter keys` writes through: every read is fresh, every save rewrites
  the file atomically (a temporary file renamed over it, so the server never reads half a
  file) under an exclusive lock, so two commands at once do not lose each other's change.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xrouter.domain.errors import StorageUnavailable
from xrouter.domain.keys import GatewayKey, KeyLimits

log = logging.getLogger("xrouter.keys")

CHECK_EVERY_S = 0.5
LOCK_TIMEOUT_S = 10.0
"""Longest `xrouter keys` waits for another one's change to the file."""
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_LIMITS = ("requests_per_minute", "tokens_per_minute", "concurrent")
_FIELDS = frozenset(
    {"name", "hash", "display", "created_at", "expires_at", "revoked_at", "models", *_LIMITS}
)
_HEADER = (
    "# XRouter gateway keys, written by `xrouter keys` (docs/security.md).\n"
    "# Hashes only: a key's secret is shown once when it is made and never stored.\n"
)


class KeyFileError(ValueError):
    """The file is not a keys file we can use; the message names the file and where."""


# -- the format ------------------------------------------------------------------------------


def parse_keys(text: str, where: str) -> list[GatewayKey]:
    """The keys of a keys file's text; KeyFileError naming `where` and the line or the key."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends "(at line N, column M)".
        raise KeyFileError(f"{where} is not valid TOML: {exc}") from None
    tables = document.get("keys", {})
    if not isinstance(tables, dict):
        raise KeyFileError(f"{where}: `keys` must be a table of [keys.<id>] tables")
    keys = []
    for key_id, table in tables.items():
        if not isinstance(table, dict):
            raise KeyFileError(f"{where}: [keys.{key_id}] must be a table")
        try:
            keys.append(_key(key_id, table))
        except (TypeError, ValueError) as exc:
            raise KeyFileError(f"{where}: [keys.{key_id}]: {exc}") from None
    return keys


def render_keys(keys: Iterable[GatewayKey]) -> str:
    """The file's text for `keys`, oldest first (hashes and public fields only)."""
    parts = [_HEADER]
    for key in sorted(keys, key=lambda key: (key.created_at, key.id)):
        table = key.id if _BARE_KEY.match(key.id) else _string(key.id)
        lines = [
            f"\n[keys.{table}]",
            f"name = {_string(key.name)}",
            f"hash = {_string(key.hash)}",
            f"display = {_string(key.display)}",
            f"created_at = {_moment(key.created_at)}",
        ]
        if key.expires_at is not None:
            lines.append(f"expires_at = {_moment(key.expires_at)}")
        if key.revoked_at is not None:
            lines.append(f"revoked_at = {_moment(key.revoked_at)}")
        if key.models:
            lines.append(f"models = [{', '.join(_string(model) for model in key.models)}]")
        for name in _LIMITS:
            value = getattr(key.limits, name)
            if value is not None:
                lines.append(f"{name} = {value}")
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


def _key(key_id: str, table: dict[str, Any]) -> GatewayKey:
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})")
    for required in ("name", "hash", "display", "created_at"):
        if required not in table:
            raise ValueError(f"`{required}` is missing")
    models = table.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ValueError("`models` must be a list of strings")
    return GatewayKey(
        id=key_id,
        name=_text(table, "name"),
        hash=_text(table, "hash"),
        display=_text(table, "display"),
        created_at=_seconds(table, "created_at"),
        expires_at=_seconds(table, "expires_at") if "expires_at" in table else None,
        revoked_at=_seconds(table, "revoked_at") if "revoked_at" in table else None,
        models=tuple(models),
        limits=KeyLimits(**{name: _count(table, name) for name in _LIMITS if name in table}),
    )


def _text(table: dict[str, Any], name: str) -> str:
    value = table[name]
    if not isinstance(value, str):
        raise ValueError(f"`{name}` must be a string")
    return value


def _seconds(table: dict[str, Any], name: str) -> float:
    """A moment: a TOML date-time (UTC when it names no offset) or Unix seconds."""
    value = table[name]
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"`{name}` must be a date-time such as 2026-11-29T10:30:00Z")


def _count(table: dict[str, Any], name: str) -> int:
    value = table[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a whole number of at least 1")
    return value


def _moment(seconds: float) -> str:
    """A TOML offset date-time in UTC, to the microsecond."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _string(value: str) -> str:
    """A TOML basic string: quote and backslash escaped, control characters as \\uXXXX."""
    out = ['"']
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


# -- the server's view -----------------------------------------------------------------------

_Signature = tuple[int, int, int]
"""(inode, mtime in ns, size): an atomic replace changes the inode even within one mtime tick
and at the same size (a rotation does not change the file's length)."""


class TomlKeyStore:
    """Implements the KeyStore port, read-only, over a keys file (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        check_every_s: float = CHECK_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._check_every_s = check_every_s
        self._monotonic = monotonic
        self._by_id: dict[str, GatewayKey] = {}
        self._by_hash: dict[str, GatewayKey] = {}
        self._seen: _Signature | None = None
        self._missing_logged = False
        self._next_check = 0.0
        self._refresh()

    def __repr__(self) -> str:
        return f"TomlKeyStore({str(self.path)!r}, {len(self._by_id)} keys)"

    @property
    def writable(self) -> bool:
        return False

    async def find(self, key_hash: str) -> GatewayKey | None:
        self._refresh()
        return self._by_hash.get(key_hash)

    async def get(self, key_id: str) -> GatewayKey | None:
        self._refresh()
        return self._by_id.get(key_id)

    async def list_keys(self) -> list[GatewayKey]:
        self._refresh()
        return sorted(self._by_id.values(), key=lambda key: (key.created_at, key.id))

    async def save(self, key: GatewayKey, *, replaces_hash: str | None = None) -> None:
        raise StorageUnavailable(
            f"The server only reads its keys file {self.path}; change keys with `xrouter "
            "keys` on this host (the server sees the change within a second)."
        )

    async def start(self) -> None:
        """No background work: the file is looked at when a request needs it."""

    async def aclose(self) -> None:
        """Nothing to close: the file is opened only while it is read."""

    def _refresh(self) -> None:
        now = self._monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._check_every_s
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            self._missing()
            return
        except OSError as exc:
            log.error(
                "keys file %s cannot be read (%s); keeping the keys read before", self.path, exc
            )
            return
        signature = (status.st_ino, status.st_mtime_ns, status.st_size)
        if signature == self._seen:
            return
        self._seen = signature
        self._missing_logged = False
        try:
            keys = parse_keys(self.path.read_text(encoding="utf-8"), str(self.path))
        except (KeyFileError, OSError, UnicodeDecodeError) as exc:
            log.error(
                "%s; keeping the %d keys read before until the file is fixed",
                exc,
                len(self._by_id),
            )
            return
        self._by_id = {key.id: key for key in keys}
        self._by_hash = {key.hash: key for key in keys}
        log.info("keys file %s read: %d keys", self.path, len(keys))

    def _missing(self) -> None:
        """No file: no keys (a deleted file revokes them all: fail closed)."""
        self._seen = None
        self._by_id = {}
        self._by_hash = {}
        if not self._missing_logged:
            self._missing_logged = True
            log.warning(
                "keys file %s does not exist: no gateway key is accepted until `xrouter keys "
                "create` writes it",
                self.path,
            )


# -- what `xrouter keys` writes through ------------------------------------------------------


class TomlKeyFile:
    """Implements the KeyStore port, writable, over a keys file: each call reads the file
    afresh; `save` rewrites it (atomic replace, 0600, under a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"TomlKeyFile({str(self.path)!r})"

    @property
    def writable(self) -> bool:
        return True

    def read(self) -> list[GatewayKey]:
        """The keys in the file (none when it does not exist yet); StorageUnavailable when it
        cannot be read or parsed (never overwritten then: the operator fixes it first)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise StorageUnavailable(f"The keys file {self.path} cannot be read: {exc}") from None
        try:
            return parse_keys(text, str(self.path))
        except KeyFileError as exc:
            raise StorageUnavailable(f"{exc}. Fix the file, then run the command again.") from None

    def write(self, keys: Iterable[GatewayKey]) -> None:
        """Replace the file with `keys`, atomically, readable by its owner only."""
        text = render_keys(keys).encode()
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchmod(descriptor, 0o600)  # whatever the umask
                os.write(descriptor, text)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise StorageUnavailable(
                f"The keys file {self.path} cannot be written: {exc}"
            ) from None

    async def find(self, key_hash: str) -> GatewayKey | None:
        return next((key for key in self.read() if key.hash == key_hash), None)

    async def get(self, key_id: str) -> GatewayKey | None:
        return next((key for key in self.read() if key.id == key_id), None)

    async def list_keys(self) -> list[GatewayKey]:
        return sorted(self.read(), key=lambda key: (key.created_at, key.id))

    async def save(self, key: GatewayKey, *, replaces_hash: str | None = None) -> None:
        """The key replaces the one with its id (so its old hash goes with it)."""
        with self._locked():
            keys = {existing.id: existing for existing in self.read()}
            keys[key.id] = key
            self.write(keys.values())

    async def start(self) -> None:
        """No background work."""

    async def aclose(self) -> None:
        """Nothing to close."""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on `<file>.lock` for a read-change-write."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageUnavailable(f"The keys file {self.path} cannot be locked: {exc}") from None
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StorageUnavailable(
                            f"The keys file {self.path} stayed locked for {LOCK_TIMEOUT_S:.0f} s "
                            f"by another `xrouter keys` ({lock_path}); try again."
                        ) from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(descriptor)
