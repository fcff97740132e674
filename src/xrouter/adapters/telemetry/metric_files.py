"""Each worker's metrics in a file, so any worker can answer `/metrics` for all of them.

Every worker writes its own snapshot, now and then, to `worker-<pid>.msgpack` in a shared
directory (atomically: a temporary file, then `os.replace`, so a reader sees the old file or
the new one, never half of one). The worker serving a scrape merges its live snapshot with
`others()`. This is Prometheus multiprocess mode's idea with one file per worker instead of
one per metric and process, and msgspec MessagePack instead of mmapped dicts.

A worker that died (or was restarted under a new pid) keeps its file: its counters and
histograms still count, as its past requests happened, but its gauges are dropped, as an
in-flight gauge of a dead process would read forever. Files of dead workers untouched for a
day are removed. The directory should be emptied once when the server starts (`clear()`,
from the process that starts the workers), or counters of a previous run would carry over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time

import msgspec

from xrouter.adapters.telemetry.metrics import MetricFamily, MetricsSnapshot

log = logging.getLogger("xrouter.metrics")

_WORKER_FILE = re.compile(r"^worker-(\d+)\.msgpack$")
DEAD_FILE_MAX_AGE = 24 * 3600.0


class MetricFiles:
    """The shared directory as seen by one worker (`pid`, by default this process).
    Reads and writes are blocking file I/O on a few kilobytes: call them from a background
    task's thread or accept a fraction of a millisecond on the loop, not per request."""

    def __init__(
        self,
        directory: str,
        pid: int | None = None,
        dead_file_max_age: float = DEAD_FILE_MAX_AGE,
    ) -> None:
        self._directory = directory
        self._pid = os.getpid() if pid is None else pid
        self._dead_file_max_age = dead_file_max_age
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(MetricsSnapshot)
        os.makedirs(directory, exist_ok=True)

    @property
    def path(self) -> str:
        """This worker's file."""
        return os.path.join(self._directory, f"worker-{self._pid}.msgpack")

    def write(self, snapshot: MetricsSnapshot) -> None:
        """Replaces this worker's file with `snapshot`; a reader never sees a partial one."""
        target = self.path
        temporary = f"{target}.{time.monotonic_ns()}.tmp"
        try:
            with open(temporary, "wb") as file:
                file.write(self._encoder.encode(snapshot))
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def others(self) -> list[MetricsSnapshot]:
        """Every other worker's last snapshot, without the gauges of workers no longer alive.
        A file that cannot be read or decoded (being removed, from an older version, cut
        short) is skipped and logged at DEBUG: one scrape without it beats a failed scrape."""
        snapshots: list[MetricsSnapshot] = []
        for name in sorted(self._list()):
            match = _WORKER_FILE.match(name)
            if match is None or int(match.group(1)) == self._pid:
                continue
            path = os.path.join(self._directory, name)
            snapshot = self._read(path)
            if snapshot is None:
                continue
            if not _alive(snapshot.pid):
                self._remove_if_stale(path)
                snapshot = _without_gauges(snapshot)
            snapshots.append(snapshot)
        return snapshots

    def clear(self) -> None:
        """Removes every worker file: once, when the server starts, before workers write."""
        for name in self._list():
            if _WORKER_FILE.match(name) or name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._directory, name))

    def _list(self) -> list[str]:
        try:
            return os.listdir(self._directory)
        except OSError as error:
            log.debug("metric files: cannot list %s: %s", self._directory, error)
            return []

    def _read(self, path: str) -> MetricsSnapshot | None:
        try:
            with open(path, "rb") as file:
                snapshot = self._decoder.decode(file.read())
        except (OSError, msgspec.DecodeError) as error:
            log.debug("metric files: skipping %s: %s", path, error)
            return None
        if not all(_consistent(family) for family in snapshot.families):
            log.debug("metric files: skipping %s: inconsistent series", path)
            return None
        return snapshot

    def _remove_if_stale(self, path: str) -> None:
        try:
            if time.time() - os.stat(path).st_mtime > self._dead_file_max_age:
                os.unlink(path)
        except OSError as error:
            log.debug("metric files: cannot remove %s: %s", path, error)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's process, say): keep its gauges
    return True


def _without_gauges(snapshot: MetricsSnapshot) -> MetricsSnapshot:
    families = tuple(
        family if family.kind != "gauge" else msgspec.structs.replace(family, series=())
        for family in snapshot.families
    )
    return msgspec.structs.replace(snapshot, families=families)


def _consistent(family: MetricFamily) -> bool:
    """Decoding checks types, not shapes; a series that does not fit its family would make
    the exposition raise, so a file holding one is not used at all."""
    buckets = len(family.bounds) + 1 if family.kind == "histogram" else 0
    return all(
        len(series.labels) == len(family.labels) and len(series.bucket_counts) == buckets
        for series in family.series
    )
