"""A raw, scripted HTTP/1.1 server on 127.0.0.1 for transport tests: each accepted connection
runs a script (an async function of a `Peer`) that reads requests and writes whatever bytes the
test wants, well-formed or not. It runs its own event loop in a daemon thread, so the client
under test may block its loop (to hold back an EOF) and several clients can be compared
against the very same behaviour.

    async def answer_once_then_hang_up(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
        await peer.read_request()      # the second request on this connection...
        peer.close()                   # ...gets no answer

    with ScriptedServer(answer_once_then_hang_up) as server:
        ...requests to server.origin...
        assert [r.method for r in server.requests] == ["POST", "POST"]
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    target: str
    head: bytes
    body: bytes
    connection: int
    """Which accepted connection (1, 2, ...) carried it."""


class Peer:
    """The server's side of one connection, handed to the script."""

    def __init__(
        self,
        server: ScriptedServer,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.number = number
        self.reader = reader
        self.writer = writer

    async def read_request(self) -> ReceivedRequest | None:
        """The next complete request (head and Content-Length or chunked body), recorded in
        `server.requests`; None when the client closed the connection first."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        if "content-length" in fields:
            body = await self.reader.readexactly(int(fields["content-length"]))
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
        else:
            body = b""
        request = ReceivedRequest(method, target, head, body, self.number)
        self.server.requests.append(request)
        return request

    async def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append((await self.reader.readexactly(size + 2))[:-2])
            if size == 0:  # the client sends no trailers: "0\r\n\r\n" ends the body
                return b"".join(parts)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_client_leaves(self) -> None:
        """Read and ignore everything until the client closes (or resets) the connection."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass

    def close(self) -> None:
        """Close gracefully (FIN)."""
        self.writer.close()

    def reset(self) -> None:
        """Close with a reset (RST): SO_LINGER with a zero timeout, then close."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport = self.writer.transport
        transport.abort()


Script = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    """See the module docstring. `tls`: serve HTTPS with this server context."""

    def __init__(self, script: Script, *, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.requests: list[ReceivedRequest] = []
        self.connections = 0
        """Connections accepted so far."""
        self.closed_by_client = 0
        """Connections whose script ended because the client went away (read EOF or RST)."""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def methods(self) -> list[str]:
        return [request.method for request in self.requests]

    def wait_until(self, predicate: Callable[[ScriptedServer], bool], timeout: float = 2.0) -> bool:
        """Poll `predicate` (from a thread or `asyncio.to_thread`) until true or `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def __enter__(self) -> ScriptedServer:
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="scripted-server", daemon=True)
        self._thread.start()
        started.wait(5)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = Peer(self, self.connections, reader, writer)
        try:
            await self.script(peer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            self.closed_by_client += 1
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        # The scripts, and TLS handshakes the server is still waiting on (asyncio's own tasks).
        others = asyncio.all_tasks() - {asyncio.current_task()}
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
