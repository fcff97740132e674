"""Admission: who may start. At most `max_inflight` requests at once (ingest to terminal),
and none once the gateway is shutting down."""

from __future__ import annotations

import logging

from xrouter.application.refusal_log import RefusalLog
from xrouter.domain.errors import Overloaded, ServerShuttingDown

log = logging.getLogger("xrouter.engine")


class Admission:
    __slots__ = (
        "_max_inflight",
        "_refusals",
        "_retry_after_s",
        "_setting",
        "closing",
        "inflight",
    )

    def __init__(
        self, max_inflight: int, retry_after_s: float, *, max_inflight_setting: str
    ) -> None:
        """`max_inflight_setting`: the operator's name of the limit, for the 429's message."""
        self._max_inflight = max_inflight
        self._retry_after_s = retry_after_s
        self._setting = max_inflight_setting
        self.inflight = 0
        self.closing = False
        self._refusals = RefusalLog(log)

    def admit(self) -> None:
        """Take a slot, or raise ServerShuttingDown (503) / Overloaded (429)."""
        if self.closing:
            self._refusals.refused(
                "shutdown",
                "refusing new requests: the gateway is shutting down",
                level=logging.INFO,
            )
            raise ServerShuttingDown(
                "The gateway is shutting down and takes no new requests; retry against "
                "another instance.",
                retry_after=self._retry_after_s,
            )
        if self.inflight >= self._max_inflight:
            self._refusals.refused(
                self._setting,
                "refusing requests with 429: %d in flight, the limit set by %s",
                self.inflight,
                self._setting,
            )
            raise Overloaded(
                f"The gateway is handling {self.inflight} requests, its configured limit "
                f"({self._setting}). Retry after a short wait.",
                retry_after=self._retry_after_s,
            )
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1

    def close(self) -> None:
        """Refuse every request from now on (shutdown)."""
        self.closing = True
