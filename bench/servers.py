"""Starting, probing and stopping the server under test, and reading its memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
GATEWAY = "xrouter.entrypoints.http.app:create_app"
GATEWAY_NOFREEZE = "app_nofreeze:create_app"
BASELINE = "baseline_app:create_app"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(server: str, target: str, port: int) -> list[str]:
    """The command line serving the app factory `target` with one worker.

    - `xrouter`: the product as it runs. For the gateway, the `xrouter serve` console script
      itself (since issue 9: uvicorn with xrouter's own Server subclass and connection-limiting
      httptools protocol, entrypoints/http/server.py); for another factory (the no-freeze
      variant), bench/serve_as_product.py, which runs the same CLI with only the factory
      replaced. At a revision from before issue 9 this is whatever `xrouter serve` did then.
    - `uvicorn`: stock uvicorn from its own CLI, with the options `xrouter serve` passed it
      before issue 9 (uvloop, httptools, no access log, no server header): the server the
      baseline and the fake upstream run on, and the gateway without xrouter's protocol.
    - `granian`: granian's ASGI interface on uvloop (no xrouter protocol: granian has its own).
    """
    if server == "xrouter":
        if target == GATEWAY:
            return [str(VENV_BIN / "xrouter"), "serve", "--host", "127.0.0.1",
                    "--port", str(port), "--workers", "1"]  # fmt: skip
        return [sys.executable, str(BENCH_DIR / "serve_as_product.py"), target, str(port)]
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", target, "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--no-server-header", "--log-level", "info",
        ]  # fmt: skip
    if server == "granian":
        return [
            str(VENV_BIN / "granian"), "--interface", "asgi", "--loop", "uvloop", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--no-access-log", "--log-level", "info", target,
        ]  # fmt: skip
    raise ValueError(f"unknown server {server!r}")


def _health_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@dataclass
class Server:
    """A running server process (and its workers), pinned to `cpus`."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    startup_s: float
    log_path: Path

    def tree(self) -> list[int]:
        """The server process and all its descendants."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
        pids, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(children.get(pid, []))
        return pids

    def peak_rss_mib(self) -> tuple[float, float]:
        """(largest VmHWM of one process, sum of VmHWM over the process tree), in MiB."""
        peaks = [_vm_hwm_kib(pid) for pid in self.tree()]
        peaks = [p for p in peaks if p > 0]
        return max(peaks) / 1024, sum(peaks) / 1024

    def cpu_s(self) -> float:
        """CPU time (user + system) used so far by the process tree, in seconds."""
        ticks = 0
        for pid in self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / CLOCK_TICKS

    def stop(self, keep_log: bool = False) -> None:
        """Stop the server (SIGINT, then SIGKILL after 10 s); remove its log unless kept."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not keep_log:
            self.log_path.unlink(missing_ok=True)


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def start(
    server: str,
    target: str,
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
    src: Path | None = None,
    timeout_s: float = 30.0,
) -> Server:
    """Start a server and wait for the first 200 on /health; `startup_s` is the time from
    process start to that answer. With `cpus`, the server (and every process it forks) is
    pinned to those CPUs. With `src`, xrouter is imported from that directory instead of the
    installed (editable) package."""
    port = free_port()
    env = {**(env or {}), "PYTHONPATH": bench_path(src)}
    return launch(
        server, port, command(server, target, port), env, cpus, lambda: _health_ok(port),
        timeout_s, f"{server} {target} did not answer /health",
    )  # fmt: skip


def bench_path(src: Path | None) -> str:
    """PYTHONPATH for a spawned server: `src` (xrouter from there, when given), then bench/."""
    return os.pathsep.join(str(p) for p in (src, BENCH_DIR) if p is not None)


def launch(
    name: str,
    port: int,
    argv: list[str],
    env: dict[str, str],
    cpus: set[int] | None,
    ready: Callable[[], bool],
    timeout_s: float,
    failure: str,
) -> Server:
    """Spawn `argv` (our environment updated with `env`; pinned to `cpus`, like every process
    it forks), its output to a temporary log, and wait until `ready()`: `startup_s` is the
    time from spawn to then. Not ready within `timeout_s`, or exited: stopped, log kept,
    RuntimeError(`failure`, naming the log)."""
    fd, log_name = tempfile.mkstemp(prefix=f"bench-{name.split(',')[0]}-", suffix=".log")
    mine = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)  # inherited by the child at fork
    try:
        started = time.perf_counter()
        with os.fdopen(fd, "wb") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )
    finally:
        os.sched_setaffinity(0, mine)
    running = Server(name, port, process, 0.0, Path(log_name))
    while time.perf_counter() - started < timeout_s:
        if ready():
            running.startup_s = time.perf_counter() - started
            return running
        if process.poll() is not None:
            break
        time.sleep(0.005)
    running.stop(keep_log=True)
    raise RuntimeError(f"{failure}; see {log_name}")
