"""Logging for `xrouter serve`, and the filter that masks secrets in every log line.

The sources of log lines already keep secrets out (errors are masked before they are logged,
tokens have no repr). `SecretMaskingFilter` is the net under them: every record that reaches a
handler has its message, arguments, exception text and stack text masked by value with the
gateway's secrets (configured ones, and tokens fetched at run time). It sits on handlers, not
loggers, because a logger's filters never see the records its children propagate.

The app factory installs it (`install_secret_filter`) on the handlers the host configured
(Litestar's own logging configuration is off: the host owns logging), so it applies to
`xrouter serve` and to any embedding of the app alike.

A request's own token (BYOK) is not known here; the engine masks the errors it logs with it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from xrouter.domain.secrets import SecretMasker

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

MASKED_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
"""Loggers whose handlers get the filter: the root (every `xrouter.*` line) and uvicorn's own,
which do not propagate to the root."""


class SecretMaskingFilter(logging.Filter):
    """Masks a record's text by value; never drops a record."""

    def __init__(self, masker: SecretMasker) -> None:
        super().__init__()
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        masker = self.masker
        if not len(masker):  # nothing to mask (yet): no formatting cost at all
            return True
        message = record.getMessage()
        if masker.mask(message) != message:
            self._mask_message(record, masker)
        if record.exc_info and not record.exc_text:
            # Formatters reuse `exc_text` when it is set, so the traceback goes out masked.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = masker.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = masker.mask(record.stack_info)
        return True

    @staticmethod
    def _mask_message(record: logging.LogRecord, masker: SecretMasker) -> None:
        """Mask the string arguments, keeping them (some formatters read `args`, uvicorn's
        access formatter among them); when a secret still shows once formatted (inside an
        exception or an object), fall back to the masked text without arguments."""
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(masker.mask(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: masker.mask(v) if isinstance(v, str) else v for k, v in args.items()}
        if isinstance(record.msg, str):
            record.msg = masker.mask(record.msg)
        message = record.getMessage()
        masked = masker.mask(message)
        if masked != message:
            record.msg = masked
            record.args = None


def install_secret_filter(
    masker: SecretMasker, logger_names: Iterable[str] = MASKED_LOGGERS
) -> None:
    """Put a SecretMaskingFilter with `masker` on every handler of `logger_names`, replacing
    one installed before (one gateway per process: the latest app's secrets apply)."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            for old in [f for f in handler.filters if isinstance(f, SecretMaskingFilter)]:
                handler.removeFilter(old)
            handler.addFilter(SecretMaskingFilter(masker))


def serve_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration plus a root handler at `level`, for `xrouter serve`.

    Given to uvicorn rather than applied once here, so that every worker process (which
    configures logging afresh) has a root handler for the lines logged before the app is built.
    """
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)  # uvicorn edits what it is given
    config["formatters"]["xrouter"] = {"format": FORMAT}
    config["handlers"]["xrouter"] = {
        "class": "logging.StreamHandler",
        "formatter": "xrouter",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["xrouter"], "level": level}
    return config
