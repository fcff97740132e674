"""WebSocket mode of `/v1/responses` (Open Responses 2026-04-24, docs/websocket.md).

The client sends `{"type": "response.create", ...a create body...}` messages; each gets the
turn's stream events as JSON text messages (the SSE stream's objects, in its order), or one
error message `{"type": "error", "status": N, "error": {type, code, message, param}}`.
Messages are answered one at a time, in the order they came: the reader task only queues
them, the connection's own task runs them (`SocketSession` remembers the responses).

Credentials are the handshake's headers, as over HTTP, and are checked for every
`response.create` (a wrong key is a 401 error message, not a refused handshake, so the
client reads why). The limits, each named in its message and log line when it acts:
- a message larger than XR_MAX_BODY_BYTES is a 413 error message (the connection stays;
  the server itself closes one over twice that with 1009);
- more than XR_WS_MAX_QUEUED messages waiting behind the running one close the connection
  (1008); the running response goes on without the client, as over HTTP;
- no message and no response running for XR_WS_IDLE_TIMEOUT_S closes it (1000);
- after XR_WS_MAX_LIFETIME_S the running response finishes, then the error
  `websocket_connection_limit_reached` and close (1000); the client reconnects;
- a conversation remembered by the connection beyond XR_WS_MAX_REMEMBERED_BYTES is
  forgotten (`SocketSession`): continuing it is `previous_response_not_found` naming it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import WebsocketRouteHandler

from xrouter.application.create_response import CreateResponse
from xrouter.application.execution import DisconnectSignal
from xrouter.application.socket_session import SocketSession
from xrouter.domain.errors import GatewayError, InvalidRequest
from xrouter.domain.responses import ResponseRequest
from xrouter.domain.secrets import SecretMasker
from xrouter.entrypoints.config import Settings, env_name
from xrouter.entrypoints.http.codec import Codec
from xrouter.entrypoints.http.credentials import call_context, credentials

log = logging.getLogger("xrouter.websocket")

AnySocket = WebSocket[Any, Any, Any]
_CLOSE_NORMAL = 1000
_CLOSE_POLICY = 1008
_SOCKET_GONE = (WebSocketDisconnect, OSError)  # uvicorn's ClientDisconnected is an OSError


@dataclass(frozen=True, slots=True)
class SocketLimits:
    max_message_bytes: int = 10 * 1024 * 1024
    max_queued: int = 16
    idle_timeout_s: float = 600.0
    max_lifetime_s: float = 3600.0
    max_remembered_bytes: int = 32 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> SocketLimits:
        return cls(
            max_message_bytes=settings.max_body_bytes,
            max_queued=settings.ws_max_queued,
            idle_timeout_s=settings.ws_idle_timeout_s,
            max_lifetime_s=settings.ws_max_lifetime_s,
            max_remembered_bytes=settings.ws_max_remembered_bytes,
        )


class _Envelope(msgspec.Struct):
    type: str | None = None


def _error_message(codec: Codec, error: GatewayError) -> bytes:
    """The WebSocket error envelope. `code` is required there: a code-less error gets its
    type's name."""
    return codec.encode(
        {
            "type": "error",
            "status": error.status,
            "error": {
                "type": error.type,
                "code": error.code or error.type,
                "message": error.message,
                "param": error.param,
            },
        }
    )


class _LimitReached(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "websocket_connection_limit_reached"


class _MessageTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class _Connection:
    """One accepted socket: the reader queues messages, `serve` answers them in order."""

    def __init__(
        self,
        socket: AnySocket,
        session: SocketSession,
        codec: Codec,
        masker: SecretMasker,
        limits: SocketLimits,
        gateway_keys: bool,
    ) -> None:
        self._api_key, client_token = credentials(socket.headers, gateway_keys)
        self._context = call_context(client_token, socket.headers)
        # Both tokens the handshake carries are masked, whichever of them this mode uses.
        self._masker = masker.including(*credentials(socket.headers, gateway_keys=True))
        self._socket = socket
        self._session = session
        self._codec = codec
        self._limits = limits
        self._inbox: deque[str | bytes] = deque()
        self._arrived = asyncio.Event()
        self._closed = False
        self._turn_gone: DisconnectSignal | None = None
        self._peer = socket.client.host if socket.client else "?"

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.max_lifetime_s
        reader = asyncio.create_task(self._read())
        try:
            while not self._closed:
                if not self._inbox:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        await self._lifetime_reached()
                        return
                    self._arrived.clear()
                    wait = min(remaining, self._limits.idle_timeout_s)
                    try:
                        await asyncio.wait_for(self._arrived.wait(), wait)
                    except TimeoutError:
                        if loop.time() < deadline:
                            await self._idle()
                            return
                    continue
                if loop.time() >= deadline:
                    await self._lifetime_reached()
                    return
                await self._answer(self._inbox.popleft())
        finally:
            reader.cancel()

    async def _read(self) -> None:
        """Queue every message; on close, tell the running turn (its generation detaches)."""
        try:
            while True:
                message = await self._socket.receive()
                if message["type"] != "websocket.receive":
                    break
                text = message.get("text")
                data: str | bytes = text if text is not None else message.get("bytes") or b""
                if len(self._inbox) >= self._limits.max_queued:
                    await self._overflow()
                    break
                self._inbox.append(data)
                self._arrived.set()
        except _SOCKET_GONE:
            pass
        self._gone()

    def _gone(self) -> None:
        self._closed = True
        self._arrived.set()
        if self._turn_gone is not None:
            self._turn_gone.set()

    async def _answer(self, raw: str | bytes) -> None:
        """One message: its events, or one error message."""
        gone = self._turn_gone = DisconnectSignal()
        try:
            request = self._decode(raw)
            async with aclosing(
                self._session.run(
                    request,
                    size=len(raw),  # characters or bytes: near enough for the memory bound
                    disconnect=gone,
                    context=self._context,
                    api_key=self._api_key,
                )
            ) as events:
                async for event in events:
                    await self._send(self._codec.encode(event))
        except GatewayError as error:
            await self._send_error(self._masker.mask_error(error))
        except _SOCKET_GONE:
            self._gone()
        except Exception as unexpected:
            log.error(
                "internal error on a WebSocket turn from %s: %s",
                self._peer,
                self._masker.mask(repr(unexpected)),
                exc_info=unexpected,
            )
            await self._send_error(
                GatewayError(
                    "The gateway hit an internal error on this turn; the connection stays open.",
                    code="internal_error",
                )
            )
        finally:
            self._turn_gone = None

    def _decode(self, raw: str | bytes) -> ResponseRequest:
        limit = self._limits.max_message_bytes
        size = len(raw) if isinstance(raw, bytes) or len(raw) * 4 <= limit else len(raw.encode())
        if size > limit:
            setting = env_name("max_body_bytes")
            log.info(
                "refused a WebSocket message of %d bytes from %s: over %s=%d",
                size,
                self._peer,
                setting,
                limit,
            )
            raise _MessageTooLarge(
                f"The message is larger than this gateway accepts ({limit} bytes, {setting}). "
                "Send less input, or raise the limit."
            )
        try:
            envelope = msgspec.json.decode(raw, type=_Envelope)
        except msgspec.ValidationError:
            raise InvalidRequest(
                'A message must be a JSON object such as {"type": "response.create", '
                '"model": "local/echo", "input": "Hello"}.',
                code="invalid_json",
            ) from None
        except msgspec.DecodeError as exc:
            raise InvalidRequest(
                f"The message is not valid JSON ({exc}).", code="invalid_json"
            ) from None
        if envelope.type != "response.create":
            raise InvalidRequest(
                f"Unknown message type {envelope.type!r}: send `response.create` messages.",
                param="type",
                code="invalid_value",
            )
        request = self._codec.decode_response_request(raw.encode() if isinstance(raw, str) else raw)
        if request.background:
            raise InvalidRequest(
                "`background` is not available over a WebSocket; use HTTP for background "
                "responses.",
                param="background",
                code="invalid_value",
            )
        return request

    async def _send(self, data: bytes) -> None:
        if self._closed:
            raise WebSocketDisconnect(detail="closed")
        await self._socket.send_data(data.decode())

    async def _send_error(self, error: GatewayError) -> None:
        try:
            await self._send(_error_message(self._codec, error))
        except _SOCKET_GONE:
            self._gone()

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        with suppress(*_SOCKET_GONE):
            await self._socket.close(code, reason[:120])  # a close reason is at most 123 bytes

    async def _lifetime_reached(self) -> None:
        setting = env_name("ws_max_lifetime_s")
        minutes = self._limits.max_lifetime_s / 60
        log.info(
            "closed a WebSocket connection from %s after %g s (%s)",
            self._peer,
            self._limits.max_lifetime_s,
            setting,
        )
        error = _LimitReached(
            f"This WebSocket connection reached its limit of {minutes:g} minutes ({setting}). "
            "Open a new connection and continue with previous_response_id (stored responses) "
            "or the full input."
        )
        await self._send_error(error)
        await self._close(_CLOSE_NORMAL, f"connection limit reached ({setting})")

    async def _idle(self) -> None:
        setting = env_name("ws_idle_timeout_s")
        log.info(
            "closed an idle WebSocket connection from %s after %g s (%s)",
            self._peer,
            self._limits.idle_timeout_s,
            setting,
        )
        await self._close(_CLOSE_NORMAL, f"idle for {self._limits.idle_timeout_s:g} s ({setting})")

    async def _overflow(self) -> None:
        setting = env_name("ws_max_queued")
        log.warning(
            "closed a WebSocket connection from %s: more than %d messages queued (%s)",
            self._peer,
            self._limits.max_queued,
            setting,
        )
        await self._close(
            _CLOSE_POLICY, f"more than {self._limits.max_queued} messages queued ({setting})"
        )


def build_websocket_routes(
    create_response: CreateResponse,
    codec: Codec,
    masker: SecretMasker,
    limits: SocketLimits,
    *,
    gateway_keys: bool = False,
) -> list[WebsocketRouteHandler]:
    """The WebSocket route, to mount under each API prefix next to `build_api_routes`.
    `gateway_keys`: XR_AUTH=keys (the Authorization header is the gateway key)."""

    @websocket("/responses")
    async def responses_socket(socket: AnySocket) -> None:
        await socket.accept()
        session = SocketSession(
            create_response,
            max_remembered_bytes=limits.max_remembered_bytes,
            limit_setting=env_name("ws_max_remembered_bytes"),
        )
        connection = _Connection(socket, session, codec, masker, limits, gateway_keys)
        await connection.serve()

    return [responses_socket]
