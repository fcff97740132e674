"""The gateway without HTTP: the container built and started for a command, then stopped.

`ask`, `chat` (and any command that needs models, the store or the catalog) run the same
container as `xrouter serve` in the command's own process, so a model, an alias, a provider's
key or the storage behaves on the command line exactly as it does behind the HTTP API. The
start and stop are the HTTP app's own (entrypoints/runtime.py), minus what only a server needs
(readiness, the HTTP routes, periodic metrics files).

Two differences from the server, both because the person at the terminal already holds the
environment (every upstream key is in it):
- gateway keys (XR_AUTH=keys) guard the server's port, not this process: access control is
  off here, every configured model can be called;
- no periodic metrics are written (a command is not a worker of a server: its files would add
  to a server's /metrics); traces and a final OTLP metrics push still happen at `stop`.

Commands drive it from an `asyncio.Runner` so that one event loop serves several awaits with
blocking reads of the terminal in between (`chat`):

    with asyncio.Runner() as runner:
        gateway = runner.run(start_gateway(settings))
        try:
            runner.run(work(gateway.container))
        finally:
            runner.run(gateway.stop(grace_s))
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from xrouter.entrypoints.cli.failure import EXIT_BAD_ARGUMENTS, CommandFailed
from xrouter.entrypoints.config import ConfigError, Settings

if TYPE_CHECKING:
    from xrouter.entrypoints.container import Container

# The container (and with it every adapter) is imported inside `start_gateway`: the `xrouter`
# script imports this module's callers on every run, and `xrouter --version` must stay instant.

EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT), as shells report a process that signal ended: 128 + 2."""

STOP_NOW_S = 0.0
"""Grace for running generations when the user interrupted: none, they are failed at once."""


class Gateway:
    """A started container and how to stop it. Made by `start_gateway`."""

    def __init__(self, container: Container, settings: Settings) -> None:
        self.container = container
        self.settings = settings

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop as the server's shutdown does: generations first (given `grace_s`, default
        XR_SHUTDOWN_GRACE_S, to finish), then discovery, providers, stores, analytics,
        telemetry and Redis. `grace_s=STOP_NOW_S` after an interrupt."""
        from xrouter.entrypoints.runtime import stop_services

        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        # The analytics queue still gets a moment after an interrupt: it holds this run's usage.
        await stop_services(self.container, grace, max(grace, 1.0))


def cli_logging(debug: bool) -> None:
    """Log lines on stderr, prefixed so they are not mistaken for the answer: errors only
    (a failure is already reported as the command's own one line), everything from INFO
    with --debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("xrouter: %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if debug else logging.ERROR)
    for name in ("httpx", "httpcore"):  # one INFO line per upstream call, even with --debug
        logging.getLogger(name).setLevel(logging.WARNING)


async def start_gateway(settings: Settings) -> Gateway:
    """Build the container from `settings` and start what the server starts: discovery
    (waiting up to XR_DISCOVERY_STARTUP_TIMEOUT_S, as the server does) and the analytics
    queue. A configuration the server would refuse raises CommandFailed with exit code 2."""
    # The container first: it imports dependency-injector without its optional extras.
    from xrouter.entrypoints.container import Container  # isort: skip
    from dependency_injector import providers

    from xrouter.entrypoints.logging_setup import install_secret_filter
    from xrouter.entrypoints.runtime import start_services

    container = Container()
    container.settings.override(providers.Object(settings))
    container.access.override(providers.Object(None))  # see the module docstring
    try:
        # Everything a request needs, resolved now: a configuration error surfaces here, as
        # the server's does at startup, not in the middle of the first answer.
        container.engine()
        container.create_response()
        container.analytics()
        masker = container.secret_masker()
    except ConfigError as exc:
        raise CommandFailed(f"configuration error: {exc}", EXIT_BAD_ARGUMENTS) from None
    install_secret_filter(masker)
    await start_services(container, periodic_telemetry=False)
    return Gateway(container, settings)


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[Container]:
    """`start_gateway` and `Gateway.stop` around one await, for a command that runs on one
    `asyncio.run`: stopped with the usual grace when the body ends, at once when it raised
    (an interrupt cancels the body: nothing is left to wait for)."""
    gateway = await start_gateway(settings)
    try:
        yield gateway.container
    except BaseException:
        await gateway.stop(STOP_NOW_S)
        raise
    await gateway.stop()
