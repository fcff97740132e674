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

`XR_LOG_FORMAT=json` (`JsonFormatter`) writes one JSON object per line. It formats records the
filter has already masked (message and exception text), and the filter masks the access line's
fields too, so both formats carry the same masked text.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from xrouter.application.request_facts import CURRENT_REQUEST
from xrouter.domain.secrets import SecretMasker
from xrouter.entrypoints.http.access_log import FIELDS_ATTR

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
            self._mask_fields(record, masker)
        if record.exc_info and not record.exc_text:
            # Formatters reuse `exc_text` when it is set, so the traceback goes out masked.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = masker.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = masker.mask(record.stack_info)
        return True

    @staticmethod
    def _mask_fields(record: logging.LogRecord, masker: SecretMasker) -> None:
        """The access line's values (for the JSON format). Its message holds every one of
        them, so they are only masked when the message was."""
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, dict):
            setattr(
                record,
                FIELDS_ATTR,
                {k: masker.mask(v) if isinstance(v, str) else v for k, v in fields.items()},
            )

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


class TextFormatter(logging.Formatter):
    """FORMAT, with the date and time part made once per second instead of once per line
    (`time.strftime` was a sixth of an access line's cost)."""

    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
        return f"{self._stamp},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (ISO-8601, UTC), `level`, `logger`, `message`,
    `request_id` when the line belongs to a request (read from the request's context, so the
    generation task's lines have it too), `trace_id` and `span_id` of the request's server
    span (null when it is not traced),
    `exception` when there is one, and an access line's own fields (method, path, status,
    latency_ms, model, provider, ttft_ms, input_tokens, output_tokens).

    The message and exception text are the ones `SecretMaskingFilter` already masked."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        facts = CURRENT_REQUEST.get()
        span = None
        if facts is not None:
            line["request_id"] = facts.request_id
            span = facts.span
        if span is not None:  # the request's server span (W3C hex ids, as trace UIs show)
            line["trace_id"] = f"{span.context.trace_id:032x}"
            line["span_id"] = f"{span.context.span_id:016x}"
        else:
            line["trace_id"] = None
            line["span_id"] = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, dict):
            line.update(fields)
        return self._encoder.encode(line).decode()


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


def serve_log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging configuration plus a root handler at `level`, for `xrouter serve`;
    with `log_format` "json" (XR_LOG_FORMAT) every handler writes `JsonFormatter` lines.

    Given to uvicorn rather than applied once here, so that every worker process (which
    configures logging afresh) has a root handler for the lines logged before the app is built.
    """
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)  # uvicorn edits what it is given
    config["formatters"]["xrouter"] = {"()": "xrouter.entrypoints.logging_setup.TextFormatter"}
    config["handlers"]["xrouter"] = {
        "class": "logging.StreamHandler",
        "formatter": "xrouter",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["xrouter"], "level": level}
    if log_format == "json":
        json_formatter = {"()": "xrouter.entrypoints.logging_setup.JsonFormatter"}
        for name in config["formatters"]:
            config["formatters"][name] = dict(json_formatter)
    return config
