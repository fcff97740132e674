"""Client connection limits, enforced in uvicorn's httptools protocol.

uvicorn closes idle keep-alive connections but nothing else: a client that connects and sends
its request head slowly (slowloris), or never, holds a socket forever, and httptools has no
header size limit (it buffers a header until its end: one 100 MB header blocked the event loop
for seconds). `GuardedHttpToolsProtocol` adds, per connection:

- a deadline for the request head (`XR_HEADER_TIMEOUT_S`): from the connection's first byte
  opportunity, or from a keep-alive request's first byte, to the end of its headers -> 408;
- limits on the head's bytes and header count (`XR_MAX_HEADER_BYTES`,
  `XR_MAX_HEADER_COUNT`) -> 431, checked as bytes arrive, so no more than one read beyond
  the limit is ever buffered;
- a limit on open connections (`XR_MAX_CONNECTIONS`) -> 503 before reading anything;
- the keep-alive idle timeout (`XR_KEEPALIVE_TIMEOUT_S`, uvicorn's own timer).

Each refusal answers a short JSON error with `connection: close`, closes the socket, and logs a
line naming the setting, rate-limited so a flood does not flood the log.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httptools
import msgspec
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from xrouter.application.refusal_log import RefusalLog
from xrouter.entrypoints.config import Settings
from xrouter.entrypoints.http.shutdown import begin_drain

log = logging.getLogger("xrouter.connections")

LAST_FRAMES_S = 0.5
"""After the drain, how long a WebSocket turn failed by it has to send its last events before
the socket is closed (1012)."""

LINGER_S = 1.0
"""After answering 408/431 the socket is half-closed and what the client still sends is read
and dropped for up to this long: closing with unread input would send a TCP reset, which can
destroy the answer before the client reads it."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0
    max_header_bytes: int = 65_536
    max_header_count: int = 100
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout_s=settings.header_timeout_s,
            keepalive_timeout_s=settings.keepalive_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            max_connections=settings.max_connections,
        )


class GatewayConfig(Config):
    """uvicorn's Config carrying the connection limits to every protocol instance (and to
    every worker process: it is what uvicorn pickles for them)."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(
            app,
            http=GuardedHttpToolsProtocol,
            # uvicorn's keep-alive timer; the protocol sets the exact (float) value itself.
            timeout_keep_alive=max(1, round(limits.keepalive_timeout_s)),
            **kwargs,
        )
        self.limits = limits
        self.refusals = RefusalLog(log)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request head over a limit. httptools
    wraps it in HttpParserCallbackError, which `data_received` tells apart from a malformed
    request (400)."""

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(detail)
        self.setting = setting
        self.detail = detail


def _error_response(status: int, message: str, code: str) -> bytes:
    body = msgspec.json.encode(
        {
            "error": {
                "message": message,
                "type": "server_error" if status >= 500 else "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    )
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `GatewayConfig.limits`."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, GatewayConfig), "serve with GatewayConfig"
        self.limits = config.limits
        self.refusals = config.refusals
        self.timeout_keep_alive = self.limits.keepalive_timeout_s  # type: ignore[assignment]
        self._in_head = True
        self._head_bytes = 0  # bytes read while the head was incomplete
        self._head_parsed = 0  # bytes of URL and headers the parser handed over
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # --- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            self._refused = True
            peer = transport.get_extra_info("peername")
            self.refusals.refused(
                "XR_MAX_CONNECTIONS",
                "refused a connection from %s: %d connections open (XR_MAX_CONNECTIONS=%d)",
                peer[0] if peer else "?",
                len(self.connections),
                self.limits.max_connections,
            )
            transport.write(
                _error_response(
                    503,
                    "The gateway has too many open connections; retry shortly "
                    "(operators: XR_MAX_CONNECTIONS).",
                    "too_many_connections",
                )
            )
            transport.close()
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()  # the client has read our answer and hung up

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already; lingering reads are dropped
        # uvicorn's data_received, with the limits' refusals told apart from parse errors.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _HeadTooLarge):
                self._refuse_head(431, refusal.setting, refusal.detail)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        if self._in_head and not self._refused and not self.transport.is_closing():
            # The head is still incomplete: everything read since it began is head.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse_head(
                    431,
                    "XR_MAX_HEADER_BYTES",
                    f"The request headers are larger than {self.limits.max_header_bytes} bytes",
                )

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.refusals.refused(
                "XR_KEEPALIVE_TIMEOUT_S",
                "closed an idle keep-alive connection from %s after %g s (%s)",
                self.client[0] if self.client else "?",
                self.limits.keepalive_timeout_s,
                "XR_KEEPALIVE_TIMEOUT_S",
                level=logging.DEBUG,  # routine: clients leave connections idle all the time
            )
        super().timeout_keep_alive_handler()

    def shutdown(self) -> None:
        """The server is stopping (after SIGTERM). Where uvicorn's own supervisor runs the
        workers, this is the first the app hears of it: start its drain now, not after the
        connections closed (see `entrypoints/http/shutdown.py`)."""
        begin_drain(self.app_state)
        super().shutdown()

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._head_parsed = 0
        self._header_count = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_header_count:
            raise _HeadTooLarge(
                "XR_MAX_HEADER_COUNT",
                f"The request has more than {self.limits.max_header_count} headers",
            )
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def _count_head(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.limits.max_header_bytes:
            raise _HeadTooLarge(
                "XR_MAX_HEADER_BYTES",
                f"The request headers are larger than {self.limits.max_header_bytes} bytes",
            )

    # --- head deadline --------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        self._refuse_head(
            408,
            "XR_HEADER_TIMEOUT_S",
            f"The request headers did not arrive within {self.limits.header_timeout_s:g} s",
        )

    def _refuse_head(self, status: int, setting: str, detail: str) -> None:
        self._refused = True
        self._cancel_head_timer()
        self.refusals.refused(
            setting,
            "closed a connection from %s: %s (%s)",
            self.client[0] if self.client else "?",
            detail,
            setting,
        )
        if self.cycle is not None and not self.cycle.response_complete:
            # Mid-response on this connection (a pipelined head): no room for an answer.
            self.transport.close()
            return
        code = "request_timeout" if status == 408 else "request_header_fields_too_large"
        message = f"{detail}; the connection is closed (operators: {setting})."
        self.transport.write(_error_response(status, message, code))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


class DrainingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol (WebSocket mode of /v1/responses) whose shutdown
    drains the app first, as `GuardedHttpToolsProtocol.shutdown` does: where uvicorn's
    supervisor runs the workers, a turn running when the worker is told to stop keeps its
    socket for the grace and receives its last events, then the socket is closed (1012).
    With one worker the server has drained already and this closes at once."""

    def shutdown(self) -> None:
        drained = begin_drain(self.app_state)
        if drained is None or drained.done():
            super().shutdown()
            return
        drained.add_done_callback(lambda _: self.loop.call_later(LAST_FRAMES_S, self._shutdown_now))

    def _shutdown_now(self) -> None:
        if not self.transport.is_closing():
            super().shutdown()
