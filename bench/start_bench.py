"""Issue 16, start and idle memory: `xrouter serve` (one worker, default settings: telemetry
on) timed from process spawn to its first relayed chat completion answered 200, as the peers
suite times it (bench/peer_gateways.py), and measured after that answer.

XRouter's modules are byte-compiled first, as an installed package is: with
PYTHONDONTWRITEBYTECODE set (as in this project's sessions) every module edited since its .pyc
was written would otherwise be compiled again at every start (tenths of a second).

Per run: start to first 200 (wall), the CPU the gateway's process tree used until then (less
noisy than wall time on a shared machine), and its idle RSS once settled (the whole tree).
Several runs, one after another; medians.

    .venv/bin/python bench/start_bench.py [--runs 7] [--no-pin] [--env XR_NAME=value ...]
                                          [--src DIR ...]

With several `--src` (a `src` directory of another revision, e.g. from
`git archive REV src | tar -x -C DIR`), the revisions are measured in turn, run after run
(A B A B ...), so that the machine's other load falls on all alike.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_gateways
import rss
import servers
import upstream_env

INHERITED = ("XR_", "OTEL_")  # settings inherited from the shell would change the defaults


def _tree_rss_mib(server: servers.Server) -> float:
    rss.wait_settled(server.process.pid)
    return sum(rss.vm_kib(pid) for pid in server.tree()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    parser.add_argument("--env", action="append", default=[], help="NAME=value for xrouter")
    parser.add_argument(
        "--src", action="append", type=Path, default=[], help="import xrouter from here"
    )
    args = parser.parse_args()
    for name in [k for k in os.environ if k.startswith(INHERITED)]:
        del os.environ[name]
    extra = dict(item.split("=", 1) for item in args.env)
    gateway_cpus, upstream_cpus = (None, None) if args.no_pin else ({0}, {1})
    upstream = servers.start("uvicorn", upstream_env.FAKE_UPSTREAM, cpus=upstream_cpus)
    sources: list[Path | None] = list(args.src) or [None]
    for src in sources:
        package = (src or Path(__file__).resolve().parents[1] / "src") / "xrouter"
        compileall.compile_dir(package, quiet=1)
    figures: dict[Path | None, list[tuple[float, float, float]]] = {src: [] for src in sources}
    try:
        for run in range(args.runs):
            for src in sources:
                spec = peer_gateways.xrouter(upstream.port, src, env=extra)
                server = peer_gateways.start(spec, gateway_cpus)
                try:
                    cpu = server.cpu_s()
                    idle = _tree_rss_mib(server)
                finally:
                    server.stop()
                figures[src].append((server.startup_s, cpu, idle))
                print(
                    f"run {run + 1} {src or 'installed'}: start to first 200 "
                    f"{server.startup_s:.3f} s, CPU {cpu:.2f} s, idle RSS {idle:.1f} MiB",
                    flush=True,
                )
    finally:
        upstream.stop()
    for src, runs in figures.items():
        wall, cpu, idle = (statistics.median(column) for column in zip(*runs, strict=True))
        print(
            f"median of {len(runs)}, {src or 'installed'}: start to first 200 {wall:.3f} s, "
            f"CPU {cpu:.2f} s, idle RSS {idle:.1f} MiB"
        )


if __name__ == "__main__":
    main()
