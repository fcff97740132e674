"""Real Redis servers for the tests: `redis-server` processes on free loopback ports.

`.ci/run` installs redis-server from Debian's packages when it is missing; a machine without
it fails these tests with a message that says so (they are the acceptance of the Redis store,
and a skip would hide that they never ran).

Fixtures (registered through `pytest_plugins` in conftest.py):
- `redis_server`: one server for the session, emptied (FLUSHALL) before each test;
- `redis_factory`: `start()` a dedicated server a test may pause, kill and restart;
- `redis_cluster`: a three-master Redis Cluster for the session, emptied before each test.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_cluster_port() -> int:
    """A free port for a cluster node: at most 55535, with its cluster bus port (+10000) free
    too (redis-server refuses to start a cluster node on a higher port)."""
    while True:
        port = _free_port()
        if port > 55535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _require_redis() -> tuple[str, str]:
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.fail(
            "redis-server and redis-cli are needed for the Redis tests: "
            "`apt-get install -y redis-server` (.ci/run does it)",
            pytrace=False,
        )
    return REDIS_SERVER, REDIS_CLI


@dataclass
class RedisServer:
    """One redis-server process on 127.0.0.1:`port`, its data in `directory`."""

    port: int
    directory: Path
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        server, _ = _require_redis()
        self.process = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_until_up()
        return self

    def wait_until_up(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        # A server with --requirepass answers NOAUTH: it is up all the same.
        while self.cli("PING", check=False) != "PONG" and "NOAUTH" not in self.cli(
            "PING", check=False
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def cli(self, *args: str, check: bool = True) -> str:
        _, cli = _require_redis()
        done = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            timeout=10,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(done.stderr.decode(errors="replace"))
        return done.stdout.decode(errors="replace").strip()

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections and answers nothing (a hung Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: connections reset, the port refuses (a crashed Redis)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture(scope="session")
def _session_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(_free_port(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def redis_server(_session_redis: RedisServer) -> RedisServer:
    """The session's Redis, empty."""
    if _session_redis.cli("PING", check=False) != "PONG":
        _session_redis.restart()  # a test broke it; the next one gets a working one
    _session_redis.cli("FLUSHALL")
    return _session_redis


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """`start(*extra_args) -> RedisServer`: dedicated servers, killed after the test."""
    started: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        directory = tmp_path / f"redis-{len(started)}"
        directory.mkdir()
        server = RedisServer(_free_port(), directory, list(extra))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


@dataclass
class RedisCluster:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        """Any node's URL: the cluster client discovers the others."""
        return self.nodes[0].url

    def flush(self) -> None:
        for node in self.nodes:
            node.cli("FLUSHALL")


@pytest.fixture(scope="session")
def _session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    _, cli = _require_redis()
    nodes: list[RedisServer] = []
    try:
        for index in range(3):
            directory = tmp_path_factory.mktemp(f"redis-cluster-{index}")
            node = RedisServer(
                _free_cluster_port(),
                directory,
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(directory / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
            nodes.append(node)
            node.start()
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=30,
            check=True,
        )
        deadline = time.monotonic() + 20
        while not all("cluster_state:ok" in node.cli("CLUSTER", "INFO") for node in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the test Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        yield RedisCluster(nodes)
    finally:
        for node in nodes:
            node.kill()


@pytest.fixture
def redis_cluster(_session_cluster: RedisCluster) -> RedisCluster:
    """A three-master Redis Cluster on loopback, empty."""
    _session_cluster.flush()
    return _session_cluster
