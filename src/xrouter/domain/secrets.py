"""Masking secrets by value.

Pattern masking (`sk-...`, `Bearer ...`) misses keys of other shapes, so every string that
leaves the process (a client's error, a stored response, a log line, a trace) is also cleaned
of the exact values the gateway knows are secret: its configured keys and credentials, the
tokens it obtains at run time, and the client's own token in BYOK mode.

`SecretMasker` is an immutable value: build one from the configured secrets at startup and
derive a per-request one with `including(token)`. `SecretRegistry` is the one mutable piece:
the container owns it, run-time token sources (GigaChat's OAuth) `add` to it, and long-lived
consumers (the engine, the HTTP error handlers, the log filter) hold its `live()` masker, a
SecretMasker that masks with whatever the registry knows at the moment of each call.

Values are masked as they are: a secret that reaches a text in another encoding (URL-encoded,
Base64 of something else) is not recognised; the pattern masking of upstream text
(`adapters/providers/upstream_errors.redact`) stays as a second net for credential shapes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from xrouter.domain.errors import GatewayError

MASK = "***"
"""What a secret is replaced by."""

MIN_SECRET_LENGTH = 8
"""Shorter values are not masked. Masking by value replaces every occurrence anywhere in a
text: a 3-character "secret" such as "abc" would mangle ordinary words in every message and log
line, and no real key or token is that short (a value this short is no protection anyway)."""


class SecretMasker:
    """Replaces every occurrence of each known secret by `MASK`.

    Immutable. Masking costs one substring search per secret when the text holds none (no
    regex, nothing compiled per request), and nothing at all when there are no secrets.
    """

    __slots__ = ("_secrets",)

    _secrets: tuple[str, ...]

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        kept = {secret for secret in secrets if secret and len(secret) >= MIN_SECRET_LENGTH}
        # Longest first: a secret that contains another is masked whole, not left in pieces.
        object.__setattr__(self, "_secrets", tuple(sorted(kept, key=lambda s: (-len(s), s))))

    @classmethod
    def empty(cls) -> SecretMasker:
        """A masker that knows no secret (the default where none is configured)."""
        return cls()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SecretMasker is immutable; use including() to add secrets")

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __len__(self) -> int:
        """How many secrets are masked now (0: `mask` returns its text untouched)."""
        return len(self._secrets)

    def __repr__(self) -> str:
        # Never the values: a repr ends up in logs and tracebacks.
        return f"SecretMasker({len(self._secrets)} secrets)"

    def including(self, *extra: str | None) -> SecretMasker:
        """This masker plus `extra` (a request's own token, say). Returns `self` when nothing
        new is added, so the common case (no BYOK token) allocates nothing."""
        new = [
            secret
            for secret in extra
            if secret and len(secret) >= MIN_SECRET_LENGTH and secret not in self._secrets
        ]
        if not new:
            return self
        return SecretMasker((*self._secrets, *new))

    def mask(self, text: str) -> str:
        """`text` with every occurrence of every secret replaced by `MASK`."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def mask_optional(self, text: str | None) -> str | None:
        return None if text is None else self.mask(text)

    def mask_error(self, error: GatewayError) -> GatewayError:
        """Masks `error`'s `message`, `param` and `code` IN PLACE and returns it.

        In place, not a copy: the error keeps its class, status, `retry_after`,
        `upstream_status`, cause and traceback, which a copy of an exception would lose (the
        subclasses' constructors differ). Whoever logs, stores or sends it afterwards sees only
        the masked text.
        """
        if not self._secrets:
            return error
        message = self.mask(error.message)
        if message != error.message:
            error.message = message
            error.args = (message, *error.args[1:])
        error.param = self.mask_optional(error.param)
        code = error.code
        if code is not None and self.mask(code) != code:
            error.code = self.mask(code)
        return error


class SecretRegistry:
    """The secrets the gateway learns at run time (OAuth access tokens), over the configured
    ones. Owned by the container, never module state.

    Each `add` swaps in a new immutable `SecretMasker`, so a reader of `current` always gets a
    consistent masker without a lock. Only the latest `keep` run-time secrets are remembered:
    tokens are refreshed for as long as the process runs, and a token retired long ago is not
    worth a search in every log line forever.
    """

    __slots__ = ("_configured", "_current", "_learned")

    def __init__(self, configured: SecretMasker | None = None, *, keep: int = 8) -> None:
        self._configured = configured or SecretMasker.empty()
        self._learned: deque[str] = deque(maxlen=keep)
        self._current = self._configured

    @property
    def current(self) -> SecretMasker:
        """The masker for every secret known now: configured plus learned."""
        return self._current

    def live(self) -> SecretMasker:
        """A SecretMasker that always masks with the registry's `current` secrets, for
        consumers built once at startup (before any token is fetched)."""
        return _LiveMasker(self)

    def add(self, secret: str | None) -> None:
        """Remember a secret obtained at run time (idempotent; short values ignored)."""
        if not secret or len(secret) < MIN_SECRET_LENGTH or secret in self._learned:
            return
        self._learned.append(secret)
        self._current = self._configured.including(*self._learned)


class _LiveMasker(SecretMasker):
    """The registry's current masker, looked up on every call. Itself immutable (it always
    reads the same registry); `including` returns a plain snapshot."""

    __slots__ = ("_registry",)

    def __init__(self, registry: SecretRegistry) -> None:
        super().__init__()
        object.__setattr__(self, "_registry", registry)

    _registry: SecretRegistry

    def __bool__(self) -> bool:
        # Always true: a live masker may learn a secret at any moment, so code that swaps an
        # "empty" masker for a default (`masker or SecretMasker.empty()`) must keep this one.
        return True

    def __len__(self) -> int:
        return len(self._registry.current)

    def __repr__(self) -> str:
        return f"live {self._registry.current!r}"

    def including(self, *extra: str | None) -> SecretMasker:
        return self._registry.current.including(*extra)

    def mask(self, text: str) -> str:
        return self._registry.current.mask(text)

    def mask_error(self, error: GatewayError) -> GatewayError:
        return self._registry.current.mask_error(error)
