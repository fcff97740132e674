"""Builds a GigaChatProvider and what it runs on: one SSL context shared by the OAuth host and
the API host, a small client for token requests, and the API's pooled client (with the auth
flow) handed to the shared HttpTransport."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from xrouter.adapters.providers.body_limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
)
from xrouter.adapters.providers.gigachat.auth import (
    BearerAuth,
    OAuthSource,
    PasswordSource,
    StaticToken,
    TokenCache,
    TokenSource,
    basic_credentials,
)
from xrouter.adapters.providers.gigachat.defaults import (
    DEFAULT_BASE_URL,
    DEFAULT_OAUTH_URL,
    DEFAULT_SCOPE,
    default_max_inflight,
)
from xrouter.adapters.providers.gigachat.provider import AuthMode, GigaChatProvider
from xrouter.adapters.providers.gigachat.tls import TLSSettings, ssl_context
from xrouter.adapters.providers.transport import HttpTransport, TransportSettings, pooled_client
from xrouter.domain.secrets import SecretRegistry


@dataclass(frozen=True, slots=True)
class GigaChatSettings:
    base_url: str = DEFAULT_BASE_URL
    oauth_url: str = DEFAULT_OAUTH_URL
    auth_key: str | None = None
    scope: str = DEFAULT_SCOPE
    access_token: str | None = None
    user: str | None = None
    password: str | None = None
    tls: TLSSettings = TLSSettings()
    max_inflight: int | None = None
    """None: GigaChat's limit for the scope (default_max_inflight)."""
    connect_timeout_s: float = 10.0
    first_byte_timeout_s: float = 120.0
    read_timeout_s: float = 120.0
    write_timeout_s: float = 30.0
    pool_timeout_s: float = 10.0
    total_timeout_s: float = 600.0
    max_retries: int = 2
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    backoff_initial_s: float = 0.5
    oauth_timeout_s: float = 15.0
    models: Sequence[str] = ()

    @property
    def auth_mode(self) -> AuthMode:
        if self.auth_key:
            return "oauth"
        if self.user and self.password:
            return "password"
        if self.access_token:
            return "token"
        return "byok"

    def secrets(self) -> tuple[str, ...]:
        """Every configured credential, and the Basic credentials derived from user and
        password: the values to mask wherever they could leave the process."""
        values = [v for v in (self.auth_key, self.access_token, self.password) if v]
        if self.user and self.password:
            values.append(basic_credentials(self.user, self.password))
        return tuple(values)

    def __repr__(self) -> str:  # the key, the token and the password stay out of logs
        return (
            f"GigaChatSettings(base_url={self.base_url!r}, oauth_url={self.oauth_url!r}, "
            f"scope={self.scope!r}, auth_mode={self.auth_mode!r})"
        )


def create_gigachat_provider(
    settings: GigaChatSettings,
    *,
    byok: bool = False,
    now: Callable[[], float] = time.time,
    name: str = "gigachat",
    secrets: SecretRegistry | None = None,
) -> GigaChatProvider:
    """The provider, its clients and its token cache. `now` is the clock token expiry is
    judged by (tests move it); every access token fetched is added to `secrets`."""
    context = ssl_context(settings.tls)
    auth_client = httpx.AsyncClient(
        verify=context,
        timeout=httpx.Timeout(settings.oauth_timeout_s, connect=settings.connect_timeout_s),
        follow_redirects=False,
        trust_env=True,
    )
    tokens = _token_cache(settings, auth_client, now, secrets)
    inflight = settings.max_inflight or default_max_inflight(settings.scope)
    transport_settings = TransportSettings(
        base_url=settings.base_url,
        connect_timeout_s=settings.connect_timeout_s,
        first_byte_timeout_s=settings.first_byte_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        write_timeout_s=settings.write_timeout_s,
        pool_timeout_s=settings.pool_timeout_s,
        total_timeout_s=settings.total_timeout_s,
        max_retries=settings.max_retries,
        max_body_bytes=settings.max_body_bytes,
        max_event_bytes=settings.max_event_bytes,
        max_decompressed_bytes=settings.max_decompressed_bytes,
        backoff_initial_s=settings.backoff_initial_s,
        max_inflight=inflight,
        verify=settings.tls.ca_bundle or settings.tls.verify,
        cert=settings.tls.cert,
    )
    api_client = pooled_client(
        transport_settings,
        tls=context,
        auth=BearerAuth(tokens) if tokens is not None else None,
    )
    transport = HttpTransport(name, transport_settings, client=api_client)

    async def close() -> None:
        await api_client.aclose()
        await auth_client.aclose()

    return GigaChatProvider(
        transport,
        auth_mode=settings.auth_mode,
        byok=byok,
        static_models=settings.models,
        name=name,
        on_close=close,
    )


def _token_cache(
    settings: GigaChatSettings,
    client: httpx.AsyncClient,
    now: Callable[[], float],
    secrets: SecretRegistry | None,
) -> TokenCache | None:
    source: TokenSource
    mode = settings.auth_mode
    if mode == "oauth":
        assert settings.auth_key is not None
        source = OAuthSource(client, settings.oauth_url, settings.auth_key, settings.scope)
    elif mode == "password":
        assert settings.user is not None and settings.password is not None
        url = settings.base_url.rstrip("/") + "/token"
        source = PasswordSource(client, url, settings.user, settings.password)
    elif mode == "token":
        assert settings.access_token is not None
        source = StaticToken(settings.access_token)
    else:
        return None
    return TokenCache(source, now=now, on_token=secrets.add if secrets is not None else None)
