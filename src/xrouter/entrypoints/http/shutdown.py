"""Graceful shutdown, the app's side: the moment the server is told to stop.

uvicorn sends the ASGI lifespan shutdown only after every connection has closed, so an app
that waits for it hears of SIGTERM too late: readiness still says yes while the load balancer
keeps sending, and open streams are cut when uvicorn's own timeout ends. `Drain` is what the
server calls at once instead (`entrypoints/http/server.py`): readiness turns false, the engine
stops admitting and gives running generations `XR_SHUTDOWN_GRACE_S`, then fails the rest with
`server_shutting_down`; the task it returns ends when no generation is left, and then the
server stops.

The server finds the drain in the ASGI lifespan state (`scope["state"]` of the lifespan
scope, which uvicorn shares with every connection), where `expose_drain` puts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

DRAIN_KEY = "xrouter.drain"

log = logging.getLogger("xrouter")


class Drain:
    """Starts the app's shutdown once, however many times it is asked."""

    def __init__(
        self,
        stop_ready: Callable[[], None],
        shutdown: Callable[[], Coroutine[Any, Any, None]],
        grace_s: float,
    ) -> None:
        self._stop_ready = stop_ready
        self._shutdown = shutdown
        self._grace_s = grace_s
        self._task: asyncio.Task[None] | None = None

    @property
    def begun(self) -> bool:
        return self._task is not None

    def begin(self) -> asyncio.Task[None]:
        """Start draining (on the event loop); the task ends when no generation is left."""
        if self._task is None:
            self._stop_ready()
            log.info(
                "shutting down: /ready answers 503, new requests 503, running generations "
                "get %g s (XR_SHUTDOWN_GRACE_S)",
                self._grace_s,
            )
            self._task = asyncio.get_running_loop().create_task(self._shutdown())
        return self._task


def expose_drain(app: ASGIApp, drain: Drain) -> ASGIApp:
    """`app`, with `drain` put into the lifespan state for the server to find."""

    async def with_drain(scope: Scope, receive: Receive, send: Send) -> None:
        # Litestar's Scope type knows no lifespan scope; ASGI's has `state` when the server
        # supports lifespan state (uvicorn does).
        raw: Mapping[str, Any] = scope
        state = raw.get("state") if raw["type"] == "lifespan" else None
        if isinstance(state, dict):
            state[DRAIN_KEY] = drain
        await app(scope, receive, send)

    return with_drain


def begin_drain(lifespan_state: Mapping[str, Any]) -> asyncio.Task[None] | None:
    """Start the drain of the app whose lifespan state this is; None when it has none."""
    drain = lifespan_state.get(DRAIN_KEY)
    return drain.begin() if isinstance(drain, Drain) else None
