"""Log lines for refusals that can come in floods (over a limit, overloaded): one line per
limit per interval, the next one counting those it left out, so the log still says which
setting acted without becoming the bottleneck itself."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

LOG_INTERVAL_S = 10.0
"""At most one refusal line per setting per interval; the next line counts the ones between."""


class RefusalLog:
    """One line per setting per `interval_s` on `logger`, counting the refusals it did not log."""

    __slots__ = ("_interval_s", "_last", "_logger", "_now", "_unlogged")

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = LOG_INTERVAL_S,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._now = now
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def refused(
        self, setting: str, message: str, *args: object, level: int = logging.WARNING
    ) -> None:
        """Log `message % args` for a refusal by `setting`, unless one was logged lately."""
        now = self._now()
        last = self._last.get(setting)
        if last is not None and now - last < self._interval_s:
            self._unlogged[setting] = self._unlogged.get(setting, 0) + 1
            return
        self._last[setting] = now
        skipped = self._unlogged.pop(setting, 0)
        suffix = f" ({skipped} more refused since the last line)" if skipped else ""
        self._logger.log(level, message + suffix, *args)
