"""Reads one long streamed (chunked) HTTP answer without keeping it: fast, or slowly.

For the constant-memory test: the client must not be what holds the stream, and a slow client
must really be slow at the TCP level (a small receive buffer, reads of a fixed size with a
pause between them), so that backpressure reaches the server.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

from loadgen import HOST, Request

END = b"data: [DONE]\n\n\r\n0\r\n\r\n"  # the last SSE frame, then the last chunk


@dataclass(frozen=True, slots=True)
class StreamRead:
    status: int
    wire_bytes: int  # everything received, headers and chunked framing included
    ttfb_s: float
    total_s: float
    complete: bool  # ended with `data: [DONE]` and the last chunk


async def read_stream(
    port: int,
    request: Request,
    *,
    read_size: int = 65536,
    pause_s: float = 0.0,
    rcvbuf: int | None = None,
    timeout_s: float = 120.0,
) -> StreamRead:
    """Send `request`, read the answer `read_size` bytes at a time, sleeping `pause_s` after
    each read; `rcvbuf` sets SO_RCVBUF before connecting (a small one keeps the kernel from
    buffering much on the client's side)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (HOST, request.port or port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=read_size)
    try:
        return await asyncio.wait_for(_read(reader, writer, request, read_size, pause_s), timeout_s)
    finally:
        writer.close()


async def _read(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: Request,
    read_size: int,
    pause_s: float,
) -> StreamRead:
    start = time.perf_counter()
    writer.write(request.raw)
    await writer.drain()
    total = 0
    ttfb = 0.0
    status = 0
    tail = b""
    while True:
        data = await reader.read(read_size)
        if not data:
            break
        if not total:
            ttfb = time.perf_counter() - start
            status = int(data[9:12])
        total += len(data)
        tail = (tail + data)[-len(END) :]
        if tail == END:
            break
        if pause_s:
            await asyncio.sleep(pause_s)
    return StreamRead(status, total, ttfb, time.perf_counter() - start, tail == END)
