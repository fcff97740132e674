"""`GigaChatProvider`: the Provider port over GigaChat's classic chat API (`/chat/completions`,
`/models`), moved by the shared HttpTransport.

The transport's httpx client carries the GigaChat auth flow (auth.BearerAuth): the token, its
refresh, the refresh-and-retry-once on a 401. This module builds the payload (chat_protocol),
the per-call headers (the client's own token in BYOK mode, traceparent), reads the answer
(chat_parser) and rewrites the few canonical errors whose generic wording would send the
operator to the wrong setting (refused credentials, an untrusted certificate).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any, Literal

import msgspec

from xrouter.adapters.providers.gigachat.auth import ca_hint
from xrouter.adapters.providers.gigachat.chat_parser import StreamParser, parse_completion
from xrouter.adapters.providers.gigachat.chat_protocol import build_payload
from xrouter.adapters.providers.transport import HttpTransport
from xrouter.adapters.providers.transport_settings import SettingNames, field_names
from xrouter.adapters.providers.upstream_errors import map_stream_error
from xrouter.application.ports import GenerationRequest
from xrouter.domain.errors import GatewayError, ProviderError, Unauthorized
from xrouter.domain.models import ModelInfo
from xrouter.domain.provider_events import ProviderEvent

log = logging.getLogger(__name__)

AuthMode = Literal["oauth", "password", "token", "byok"]
"""Where the gateway's own GigaChat token comes from; `byok`: it has none."""
CHAT_PATH = "/chat/completions"
_FIX_BY_MODE: dict[str, str] = {
    # {name} is a setting's field, replaced by the operator's name of it
    "oauth": "Check {auth_key} and {scope}.",
    "password": "Check {user} and {password}.",
    "token": (
        "{access_token} was refused: such a token lives 30 minutes and is never "
        "refreshed by the gateway. Set {auth_key} to have tokens fetched and renewed."
    ),
    "byok": "The gateway has no GigaChat credentials of its own (BYOK mode).",
}
_CREDENTIAL_FIELDS = ("auth_key", "scope", "user", "password", "access_token")


class _Model(msgspec.Struct):
    id: str
    owned_by: str | None = None
    type: str | None = None


class _ModelList(msgspec.Struct):
    data: list[_Model]


class GigaChatProvider:
    """Implements the Provider port for GigaChat."""

    def __init__(
        self,
        transport: HttpTransport,
        *,
        auth_mode: AuthMode,
        byok: bool = False,
        static_models: Sequence[str] = (),
        name: str = "gigachat",
        setting_names: SettingNames = field_names,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`transport`'s client must carry the GigaChat auth flow unless `auth_mode` is byok;
        `setting_names` names the settings messages point at; `on_close` releases what the
        transport does not own (its client, the OAuth client)."""
        self._name = name
        self._transport = transport
        self._auth_mode: AuthMode = auth_mode
        self._byok = byok
        self._static_models = [
            ModelInfo(id=f"{name}/{model}", owned_by=name) for model in static_models
        ]
        self._on_close = on_close
        self._names = setting_names
        self._map_error = functools.partial(map_stream_error, name, setting_names=setting_names)
        self._encoder = msgspec.json.Encoder()

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        """Close the pooled connections (at gateway shutdown)."""
        await self._transport.aclose()
        if self._on_close is not None:
            await self._on_close()

    def knows_model(self, upstream_model: str) -> bool:
        # Any model may be tried; GigaChat's own 404 ("No such model") is model_not_found.
        return True

    def static_models(self) -> list[ModelInfo]:
        return list(self._static_models)

    async def list_models(self) -> list[ModelInfo]:
        """Discovery: `GET /models` with the gateway's own token. Only generation models are
        listed (`type` chat, or no type); embedders and the like are left out."""
        if self._auth_mode == "byok":
            raise ProviderError(
                f"{self._name} model discovery needs the gateway's own credentials "
                f"({self._names('auth_key')}); in BYOK mode without them, list models in "
                f"{self._names('models')}."
            )
        try:
            raw: Any = await self._transport.get_json("/models", {})
        except GatewayError as exc:
            raise self._explained(exc) from None
        try:
            models = msgspec.convert(raw, _ModelList)
        except msgspec.ValidationError as exc:
            raise ProviderError(
                f"{self._name} answered GET /models with an unexpected shape ({exc})."
            ) from None
        return [
            ModelInfo(id=f"{self._name}/{model.id}", owned_by=model.owned_by or self._name)
            for model in models.data
            if model.type in (None, "chat")
        ]

    async def stream(self, call: GenerationRequest) -> AsyncIterator[list[ProviderEvent]]:
        try:
            # aclosing: when the engine stops early, the upstream stream is closed now (its
            # in-flight slot and connection freed), not whenever the generator is collected.
            async with aclosing(self._generate(call)) as batches:
                async for batch in batches:
                    yield batch
        except GatewayError as exc:
            raise self._explained(exc) from None

    # --- internals ---------------------------------------------------------------------------

    async def _generate(self, call: GenerationRequest) -> AsyncGenerator[list[ProviderEvent], None]:
        headers = self._headers(call)
        streaming = call.request.stream
        body = self._encoder.encode(build_payload(call, stream=streaming))
        if not streaming:
            reply = await self._transport.post_json(CHAT_PATH, body, headers, byok=self._byok)
            whole = parse_completion(
                reply.content,
                provider=self._name,
                map_error=self._map_error,
                content_type=reply.headers.get("content-type"),
            )
            if whole:
                yield whole
            return
        headers["Cache-Control"] = "no-store"
        parser = StreamParser(provider=self._name, map_error=self._map_error)
        # aclosing: stopping early frees the transport's in-flight slot and connection.
        async with aclosing(
            self._transport.stream_events(CHAT_PATH, body, headers, byok=self._byok)
        ) as reads:
            async for read in reads:  # one batch per read of the body (the Provider port)
                batch: list[ProviderEvent] = []
                try:
                    for sse in read:
                        batch += parser.feed(sse.data)
                except Exception:
                    if batch:  # what came before the failure goes out first
                        yield batch
                    raise
                if batch:
                    yield batch
        closing = parser.finish()
        if closing:
            yield closing

    def _headers(self, call: GenerationRequest) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self._byok:
            token = call.context.client_token
            if not token:
                raise Unauthorized(
                    f"The provider '{self._name}' uses your own GigaChat access token (BYOK): "
                    "send it as `Authorization: Bearer <token>`."
                )
            headers["Authorization"] = f"Bearer {token}"
        if call.context.traceparent:
            headers["traceparent"] = call.context.traceparent
        return headers

    def _explained(self, error: GatewayError) -> GatewayError:
        """`error`, reworded where the transport's generic text would mislead the operator."""
        if not isinstance(error, ProviderError):
            return error
        if "CERTIFICATE_VERIFY_FAILED" in error.message:
            return ProviderError(
                f"{error.message.rstrip('.')}. The TLS certificate of the GigaChat API could "
                f"not be verified. {ca_hint(self._names)}",
                code="upstream_tls_failed",
            )
        # A refusal in the status line or inside a 200 (`{status: 401}`), both with the
        # upstream's status: the fix is GigaChat's own credential settings, never an API key.
        if error.code == "upstream_auth_failed" and error.upstream_status in (401, 403):
            if error.upstream_status == 403:
                what = "denied the gateway's credentials access (upstream status 403)"
            elif self._auth_mode in ("oauth", "password"):
                what = "refused the gateway's access token (upstream status 401), a fresh one too"
            else:
                what = "refused the gateway's access token (upstream status 401)"
            fix = _FIX_BY_MODE[self._auth_mode].format(
                **{field: self._names(field) for field in _CREDENTIAL_FIELDS}
            )
            return ProviderError(
                f"GigaChat {what}. {fix}",
                code="upstream_auth_failed",
            )
        return error
