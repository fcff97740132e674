"""Opening a TCP connection to a host with several addresses: happy eyeballs (RFC 8305).

asyncio's `create_connection(happy_eyeballs_delay=...)` does this, but uvloop (the loop
`xrouter serve` runs on) refuses that argument and tries addresses one after another, so a
black-holed first address (an IPv6 route that drops packets, say) costs the whole connect
timeout. This does it over `getaddrinfo` and `sock_connect`, which every loop has; the socket
is then handed to `create_connection(sock=...)` for the transport and TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

HAPPY_EYEBALLS_DELAY_S = 0.25
"""RFC 8305's connection attempt delay: the next address is tried this long after the
previous one started, or as soon as it failed."""

AddressInfo = tuple[Any, ...]
"""One `getaddrinfo` entry: family, type, proto, canonical name, socket address."""


async def open_tcp_socket(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    delay_s: float = HAPPY_EYEBALLS_DELAY_S,
) -> socket.socket:
    """A connected, non-blocking TCP socket to `host`: its addresses interleaved by family
    and raced with `delay_s` between starts; the first to connect wins, the others are
    cancelled and closed. Raises OSError naming every address's failure."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"getaddrinfo returned no address for {host!r}")
    return await _race(loop, _interleave(infos), delay_s)


def _interleave(infos: list[AddressInfo]) -> list[AddressInfo]:
    """Alternate address families, keeping the resolver's order within each (RFC 8305 4)."""
    families: dict[int, list[AddressInfo]] = {}
    for info in infos:
        families.setdefault(info[0], []).append(info)
    queues = list(families.values())
    ordered = []
    for rank in range(max(len(queue) for queue in queues)):
        ordered += [queue[rank] for queue in queues if rank < len(queue)]
    return ordered


async def _race(
    loop: asyncio.AbstractEventLoop, infos: list[AddressInfo], delay_s: float
) -> socket.socket:
    waiting = list(infos)
    running: dict[asyncio.Task[socket.socket], AddressInfo] = {}
    errors: list[tuple[AddressInfo, BaseException]] = []
    try:
        while waiting or running:
            if waiting:
                info = waiting.pop(0)
                running[loop.create_task(_attempt(loop, info))] = info
            done, _ = await asyncio.wait(
                running,
                timeout=delay_s if waiting else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                info = running.pop(task)
                error = task.exception()
                if error is None:
                    winner = task.result()
                    for other in done - {task}:  # connected in the same turn: not needed
                        _close_if_connected(other)
                    return winner
                errors.append((info, error))
            # a failure starts the next address at once; a silence, after the delay
    finally:
        for task in running:  # still connecting (or connected, unseen): never leak a socket
            task.cancel()
            task.add_done_callback(_close_if_connected)
    if len({str(error) for _, error in errors}) == 1:
        raise errors[0][1]
    raise OSError("; ".join(f"{info[4][0]}: {error}" for info, error in errors))


async def _attempt(loop: asyncio.AbstractEventLoop, info: AddressInfo) -> socket.socket:
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


def _close_if_connected(task: asyncio.Task[socket.socket]) -> None:
    if task.done() and not task.cancelled() and task.exception() is None:
        task.result().close()
