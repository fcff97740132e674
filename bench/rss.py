"""Samples a process's resident memory (VmRSS in /proc/<pid>/status) from a thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def vm_kib(pid: int, field: str = "VmRSS") -> int:
    """A `Vm*` field of /proc/<pid>/status in KiB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RSSSampler:
    """`with RSSSampler(pid, 0.02) as s:` samples VmRSS every `interval_s` until the block ends;
    then `s.peak_kib`, `s.samples`."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(vm_kib(self.pid))
            if self._stop.wait(self.interval_s):
                self.samples.append(vm_kib(self.pid))
                return

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_kib(self) -> int:
        return max(self.samples, default=0)


def wait_settled(pid: int, quiet_s: float = 0.3, timeout_s: float = 3.0) -> int:
    """VmRSS once it has not changed for `quiet_s` (or after `timeout_s`), in KiB."""
    deadline = time.perf_counter() + timeout_s
    last, since = vm_kib(pid), time.perf_counter()
    while time.perf_counter() < deadline:
        time.sleep(0.05)
        now = vm_kib(pid)
        if now != last:
            last, since = now, time.perf_counter()
        elif time.perf_counter() - since >= quiet_s:
            break
    return last
