"""The HTTP server behind `xrouter serve`: uvicorn with uvloop and httptools (measured the
fastest, docs/benchmarks.md), the connection limits of `connections.py`, and a graceful
shutdown that starts the moment SIGTERM arrives.

Shutdown, one worker: the first SIGTERM (or Ctrl+C) starts the app's drain
(`shutdown.py`) while the server keeps listening, so `/ready` answers 503 and new requests
get 503 `server_shutting_down`; running generations get `XR_SHUTDOWN_GRACE_S`, those still
running are failed (a stream receives `error` + `response.failed`); then uvicorn's own
shutdown closes the listener and lets the last frames drain. A second signal stops at once.
With several workers uvicorn's supervisor runs them and closes their listeners at once; the
drain then starts when uvicorn asks each connection to finish (`connections.py`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import socket
import sys
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from xrouter.entrypoints.config import Settings
from xrouter.entrypoints.http.connections import (
    ConnectionLimits,
    DrainingWebSocketProtocol,
    GatewayConfig,
)
from xrouter.entrypoints.http.shutdown import begin_drain

APP_FACTORY = "xrouter.entrypoints.http.app:create_app"

WS_PROTOCOL = DrainingWebSocketProtocol
"""uvicorn's `websockets-sansio` WebSocket protocol (measured against `websockets` and
`wsproto`: docs/benchmarks.md, "WebSocket mode"), draining the app at shutdown."""


DRAIN_MARGIN_S = 3.0
"""Beyond the grace: the engine's stop grace for failing what still runs (2 s), then the
last frames reaching their sockets. The process exits within grace + this margin."""

log = logging.getLogger("xrouter")


def build_config(settings: Settings, app: Any = APP_FACTORY, **options: Any) -> GatewayConfig:
    """uvicorn's configuration for the gateway; `options` are further `uvicorn.Config` ones."""
    chosen: dict[str, Any] = {
        "factory": isinstance(app, str),
        "loop": "uvloop",
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "server_header": False,
        # uvicorn's wait for open connections once the listener is closed. After a drain
        # this is only the last frames; without one (several workers) it is the grace.
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_grace_s + DRAIN_MARGIN_S),
        # WebSocket mode of /v1/responses (websocket_routes.py). The handler refuses a message
        # over XR_MAX_BODY_BYTES with an error message and keeps the connection; the protocol
        # closes one over twice that (1009) before buffering more of it.
        "ws": WS_PROTOCOL,
        "ws_max_size": 2 * settings.max_body_bytes,
        # No permessage-deflate: it cost about 7 us of server CPU per message (a quarter of
        # a streamed event's cost, docs/benchmarks.md) and a compressor per connection, for
        # events that SSE sends uncompressed too.
        "ws_per_message_deflate": False,
    }
    chosen.update(options)
    return GatewayConfig(app, limits=ConnectionLimits.from_settings(settings), **chosen)


class GatewayServer(uvicorn.Server):
    """uvicorn's Server whose first stop signal drains the app before the server stops."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await super().startup(sockets)
        finally:
            gc.enable()  # paused by `serve` while the app was built; the app froze its objects

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.should_exit or self._loop is None or not self.started:
            super().handle_exit(sig, frame)  # a second signal, or not serving yet: stop now
            return
        self._draining = True
        # A signal handler runs between two bytecodes of whatever the loop was doing: hand the
        # work to the loop rather than touching its state from here.
        self._loop.call_soon_threadsafe(self._drain, sig, frame)

    def _drain(self, sig: int, frame: FrameType | None) -> None:
        drained = begin_drain(self.lifespan.state)
        if drained is None:
            super().handle_exit(sig, frame)
            return
        drained.add_done_callback(lambda task: self._drained(task, sig, frame))

    def _drained(self, task: asyncio.Task[None], sig: int, frame: FrameType | None) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the shutdown drain failed", exc_info=task.exception())
        # uvicorn's own shutdown now (it re-raises the signal at the end, so the exit status
        # still says why the process stopped).
        super().handle_exit(sig, frame)


def serve(settings: Settings, host: str, port: int, workers: int, **options: Any) -> None:
    """Run the gateway until stopped (`options`: more `uvicorn.Config` ones); exit with
    uvicorn's startup-failure status if it could not start."""
    config = build_config(settings, host=host, port=port, workers=workers, **options)
    if workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    # Building the app makes tens of thousands of objects that live as long as the process:
    # the collector would scan them again and again on the way (and twice in full) only to
    # find them alive. Paused until the app's startup has frozen them:
    # 0.97 -> 0.90 s CPU from importing the app to frozen (median of 12, issue 16).
    gc.disable()
    server = GatewayServer(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
