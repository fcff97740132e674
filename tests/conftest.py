"""Shared fixtures: the real app served by uvicorn on a loopback port, in a thread.

Every app built here records its lifecycle traces (RecordingLifecycleListener), so the trace
conformance checks of formal/ can replay them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import uvicorn
from dependency_injector import providers

from xrouter.adapters.telemetry.lifecycle import RecordingLifecycleListener
from xrouter.entrypoints.config import Settings
from xrouter.entrypoints.container import Container
from xrouter.entrypoints.http.app import create_app
from xrouter.entrypoints.http.server import GatewayServer, build_config

from .log_audit import SESSION_AUDIT
from .serve_process import Gateway, gateway_processes

# The fake upstream servers' fixtures (`fake_upstream`), for every test module.
pytest_plugins = ["tests.upstreams", "tests.redis_servers"]

ALL_TRACES: list[RecordingLifecycleListener] = []


def make_container(**overrides: Any) -> Container:
    """A container on default settings (plus `overrides`) that records lifecycle traces."""
    container = Container()
    SESSION_AUDIT.add_env({name: v for name, v in overrides.items() if isinstance(v, str)})
    container.settings.override(providers.Object(replace(Settings(), **overrides)))
    listener = RecordingLifecycleListener()
    ALL_TRACES.append(listener)
    container.lifecycle_listener.override(providers.Object(listener))
    return container


@dataclass
class LiveServer:
    base_url: str
    host: str
    port: int
    container: Container

    @property
    def listener(self) -> RecordingLifecycleListener:
        listener = self.container.lifecycle_listener()
        assert isinstance(listener, RecordingLifecycleListener)
        return listener

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10, **kwargs)


def _serve(container: Container, *, as_served: bool = False) -> Iterator[LiveServer]:
    """`as_served`: the server `xrouter serve` runs (httptools, uvloop, the connection limits
    of entrypoints/http/connections.py), rather than plain uvicorn on h11."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    environ = container.environ()
    if environ is not os.environ:  # a test's own environment for the gateway
        SESSION_AUDIT.add_env(environ)
    if as_served:
        config: uvicorn.Config = build_config(
            container.settings(),
            create_app(container),
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        server: uvicorn.Server = GatewayServer(config)
    else:
        config = uvicorn.Config(
            create_app(container),
            loop="asyncio",
            http="h11",
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://{host}:{port}", host, port, container)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    """One shared server on default settings, for tests that do not change settings."""
    yield from _serve(make_container())


@pytest.fixture
def serve_with() -> Iterator[Any]:
    """Start a dedicated server with settings overrides: `serve_with(generation_timeout_s=0.1)`.
    Pass `container=` to serve a container you prepared (e.g. with a fake adapter)."""
    yield from _servers(as_served=False)


@pytest.fixture
def serve_as_cli() -> Iterator[Any]:
    """Like `serve_with`, but on the server `xrouter serve` runs (httptools, uvloop, the
    connection limits): `serve_as_cli(max_header_count=5)`."""
    yield from _servers(as_served=True)


def _servers(*, as_served: bool) -> Iterator[Any]:
    """Yields `start(container=None, **overrides) -> LiveServer`; stops them all afterwards."""
    stack: list[Iterator[LiveServer]] = []

    def start(container: Container | None = None, **overrides: Any) -> LiveServer:
        generator = _serve(container or make_container(**overrides), as_served=as_served)
        stack.append(generator)
        return next(generator)

    yield start
    for generator in stack:
        for _ in generator:
            pass


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every lifecycle trace recorded in this session must be a behaviour of formal/xrouter.tla."""
    from tests.formal.trace_check import check_all_traces

    problems = check_all_traces(ALL_TRACES, require_complete=True)
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "lifecycle traces formal/xrouter.tla does not allow", red=True)
            for problem in problems[:50]:
                reporter.write_line(f"  {problem}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _report_log_audit(session)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Audit every line the in-process servers log (tests/log_audit.py). On the root logger
    before any app is built, so each app's `install_secret_filter` covers it; the root's own
    level is left alone (what caplog-based tests see does not change)."""
    logging.getLogger().addHandler(SESSION_AUDIT.handler)


def _report_log_audit(session: pytest.Session) -> None:
    """No secret in any log line of the session (tests/test_zz_log_audit.py fails on the
    same leaks as a test; this also covers runs that do not select it)."""
    leaks = SESSION_AUDIT.leaks()
    lines, secrets = SESSION_AUDIT.counts()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        names = ", ".join(SESSION_AUDIT.secret_names())
        reporter.write_line(
            f"log audit: {lines} log lines searched for {secrets} secrets ({names})"
        )
        if leaks:
            reporter.write_sep("=", "secrets in log lines (tests/log_audit.py)", red=True)
            for leak in leaks[:50]:
                reporter.write_line(f"  {leak}")
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def start_gateway() -> Iterator[Any]:
    """`start(**env)` runs `xrouter serve` as a real process (tests/serve_process.py); its
    environment's secrets and its whole output go to the log audit."""
    processes = gateway_processes()
    start = next(processes)

    def audited_start(**env: str) -> Gateway:
        SESSION_AUDIT.add_env(env)
        gateway: Gateway = start(**env)
        SESSION_AUDIT.add_text_later(gateway.log)  # read at audit time: drained by then
        return gateway

    yield audited_start
    for _ in processes:  # its clean-up: kills what still runs
        pass
