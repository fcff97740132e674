"""The suite-wide secret audit (issue 11 item 4): no secret ever appears in a log line.

Every `xrouter serve` process a test starts hands its whole output here when it ends, and a
handler on the root logger records every line the in-process test servers log (formatted as
the product formats them, after the `SecretMaskingFilter` the app puts on the root's
handlers). The secrets are the values of the environment variables the tests give a gateway
whose names say they are secret, the password inside a `*_URL`, and the values tests register
with `register_secret` (a BYOK client token only ever travels in a header). At the end of the
session (`tests/test_zz_log_audit.py`, then `pytest_sessionfinish`) every line is searched for
every secret.

`SESSION_AUDIT` is the one collector of the session. It is module state on purpose, like
conftest's ALL_TRACES: the process helpers that feed it are plain context managers, called
from tests that know nothing of fixtures, and the session hook must read what they fed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from threading import Lock
from urllib.parse import urlsplit

from xrouter.entrypoints.logging_setup import FORMAT

SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_PASSWORD", "_SECRET", "_CREDENTIALS")
"""Names that say their value is secret (`_API_KEY` ends in `_KEY`)."""

MIN_AUDITED_LENGTH = 8
"""Shorter values ("k", "true") would match ordinary text: not grepped (the masker does not
mask them either, see domain/secrets.MIN_SECRET_LENGTH)."""


def current_test() -> str:
    """The test running now (pytest sets PYTEST_CURRENT_TEST during setup, call and
    teardown); a line logged between tests by a session server is charged to the next one."""
    running = os.environ.get("PYTEST_CURRENT_TEST")
    return running.rsplit(" ", 1)[0] if running else "(outside any test)"


def secrets_in_env(env: Mapping[str, str]) -> dict[str, str]:
    """{value: variable name} of the secret values in `env`: variables named as secrets, and
    the password of a URL (`redis://:password@host`)."""
    found: dict[str, str] = {}
    for name, value in env.items():
        upper = name.upper()
        if upper.endswith(SECRET_SUFFIXES):
            found[value] = name
        elif upper.endswith("_URL"):
            try:
                password = urlsplit(value).password
            except ValueError:  # not a URL after all
                password = None
            if password:
                found[password] = f"password in {name}"
    return {value: name for value, name in found.items() if len(value) >= MIN_AUDITED_LENGTH}


@dataclass(frozen=True)
class Leak:
    """A log line holding a secret, as it may be shown: every secret in it replaced by
    `<secret NAME>`."""

    line: str
    secret: str
    """The secret's name (the variable or the label it was registered with), never its value."""
    logged_by: str
    """The test during which the line was written (or whose gateway process wrote it)."""
    given_by: str
    """The test that configured or registered the secret."""

    def __str__(self) -> str:
        return (
            f"{self.secret} (given in {self.given_by}) in a line of {self.logged_by}:\n"
            f"    {self.line}"
        )


@dataclass(frozen=True)
class _Secret:
    name: str
    given_by: str


class LogAudit:
    """Collects log text and secrets during the session; `leaks()` searches one in the other.

    Text is kept in blocks (a whole process output, or one logged line) and each block is
    searched once per secret, so the audit costs a substring search per block and secret."""

    def __init__(self) -> None:
        self._lock = Lock()  # the in-process servers log from their own threads
        self._blocks: list[tuple[str, str]] = []  # (text, test)
        self._pending: list[tuple[Callable[[], str], str]] = []  # output still being read
        self._secrets: dict[str, _Secret] = {}
        self.handler: logging.Handler = _AuditHandler(self)
        """Audits every record it is given (INFO and above), formatted like the product's
        text lines; installed once on the root logger for the session."""

    def add_secret(self, value: str, name: str) -> None:
        """Audit `value` (ignored when shorter than MIN_AUDITED_LENGTH)."""
        if len(value) >= MIN_AUDITED_LENGTH:
            with self._lock:
                self._secrets.setdefault(value, _Secret(name, current_test()))

    def add_env(self, env: Mapping[str, str]) -> None:
        """Audit the secrets of an environment a test gives a gateway."""
        for value, name in secrets_in_env(env).items():
            self.add_secret(value, name)

    def add_text(self, text: str, test: str | None = None) -> None:
        """Audit `text` (lines a gateway wrote), charged to `test` (default: the current)."""
        if text:
            with self._lock:
                self._blocks.append((text, test or current_test()))

    def add_text_later(self, read: Callable[[], str]) -> None:
        """Audit what `read()` returns at audit time: the output of a process whose reader
        thread may still be draining it when the test ends."""
        with self._lock:
            self._pending.append((read, current_test()))

    def counts(self) -> tuple[int, int]:
        """(lines, secrets) audited so far."""
        blocks = self._settled()
        return sum(len(text.splitlines()) for text, _ in blocks), len(self._secrets)

    def secret_names(self) -> list[str]:
        """The names of the secrets audited (never their values), for the session's report."""
        with self._lock:
            return sorted({secret.name for secret in self._secrets.values()})

    def leaks(self) -> list[Leak]:
        """Every audited line that holds an audited secret, secrets masked."""
        blocks = self._settled()
        with self._lock:
            secrets = dict(self._secrets)
        found: list[Leak] = []
        for text, test in blocks:
            for value, secret in secrets.items():
                if value not in text:
                    continue
                for line in text.splitlines():
                    if value in line:
                        shown = _masked(line, secrets)
                        found.append(Leak(shown, secret.name, test, secret.given_by))
        return found

    def _settled(self) -> list[tuple[str, str]]:
        """The blocks, with the deferred outputs read (once) and added."""
        with self._lock:
            pending, self._pending = self._pending, []
        for read, test in pending:
            self.add_text(read(), test)
        with self._lock:
            return list(self._blocks)


def _masked(line: str, secrets: Mapping[str, _Secret]) -> str:
    for value in sorted(secrets, key=len, reverse=True):  # a secret inside another: whole
        line = line.replace(value, f"<secret {secrets[value].name}>")
    return line


class _AuditHandler(logging.Handler):
    def __init__(self, audit: LogAudit) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(FORMAT))
        self._audit = audit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._audit.add_text(self.format(record))
        except Exception:  # a logging handler never raises into the code that logs
            self.handleError(record)


SESSION_AUDIT = LogAudit()


def register_secret(value: str, name: str) -> None:
    """Audit `value` for the rest of the session: for secrets a test uses that no gateway
    environment names (a BYOK client's token, sent in a header)."""
    SESSION_AUDIT.add_secret(value, name)
