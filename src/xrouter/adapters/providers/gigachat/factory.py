"""Builds a GigaChatProvider and what it runs on: one SSL context shared by the OAuth host and
the API host, a small client for token requests, and the API's pooled client (with the auth
flow) handed to the shared HttpTransport."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from xrouter.adapters.providers.gigachat.auth import (
    BearerAuth,
    OAuthSource,
    PasswordSource,
    StaticToken,
    TokenCache,
    TokenSource,
    basic_credentials,
)
from xrouter.adapters.providers.gigachat.defaults import DEFAULT_OAUTH_URL, DEFAULT_SCOPE
from xrouter.adapters.providers.gigachat.provider import AuthMode, GigaChatProvider
from xrouter.adapters.providers.gigachat.tls import TLSSettings, ssl_context
from xrouter.adapters.providers.inflight import InflightLimiter
from xrouter.adapters.providers.transport import HttpTransport, TransportSettings, pooled_client
from xrouter.adapters.providers.transport_settings import SettingNames
from xrouter.domain.secrets import SecretRegistry


@dataclass(frozen=True, slots=True)
class GigaChatSpec:
    """What the GigaChat provider is built from; built once in `entrypoints` from GigaChat's
    configuration (`entrypoints/gigachat_config.py`)."""

    transport: TransportSettings
    """The API host, its timeouts, retries, limits and in-flight limit (GigaChat's own for
    the scope unless configured), and the operator's names of every GigaChat setting."""
    oauth_url: str = DEFAULT_OAUTH_URL
    auth_key: str | None = None
    scope: str = DEFAULT_SCOPE
    access_token: str | None = None
    user: str | None = None
    password: str | None = None
    tls: TLSSettings = TLSSettings()
    """TLS for both hosts (one context); the transport's own `verify`/`cert` are unused."""
    oauth_timeout_s: float = 15.0
    byok: bool = False
    static_models: tuple[str, ...] = ()
    name: str = "gigachat"

    @property
    def setting_names(self) -> SettingNames:
        return self.transport.setting_names

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
            f"GigaChatSpec(base_url={self.transport.base_url!r}, oauth_url={self.oauth_url!r}, "
            f"scope={self.scope!r}, auth_mode={self.auth_mode!r})"
        )


def create_gigachat_provider(
    spec: GigaChatSpec,
    *,
    now: Callable[[], float] = time.time,
    secrets: SecretRegistry | None = None,
    limiter: InflightLimiter | None = None,
) -> GigaChatProvider:
    """The provider, its clients and its token cache. `now` is the clock token expiry is
    judged by (tests move it); every access token fetched is added to `secrets`; `limiter`
    enforces the in-flight limit (default: this process's own)."""
    context = ssl_context(spec.tls, spec.setting_names)
    auth_client = httpx.AsyncClient(
        verify=context,
        timeout=httpx.Timeout(spec.oauth_timeout_s, connect=spec.transport.connect_timeout_s),
        follow_redirects=False,
        trust_env=True,
    )
    tokens = _token_cache(spec, auth_client, now, secrets)
    api_client = pooled_client(
        spec.transport,
        tls=context,
        auth=BearerAuth(tokens) if tokens is not None else None,
    )
    transport = HttpTransport(spec.name, spec.transport, client=api_client, limiter=limiter)

    async def close() -> None:
        await api_client.aclose()
        await auth_client.aclose()

    return GigaChatProvider(
        transport,
        auth_mode=spec.auth_mode,
        byok=spec.byok,
        static_models=spec.static_models,
        name=spec.name,
        setting_names=spec.setting_names,
        on_close=close,
    )


def _token_cache(
    spec: GigaChatSpec,
    client: httpx.AsyncClient,
    now: Callable[[], float],
    secrets: SecretRegistry | None,
) -> TokenCache | None:
    source: TokenSource
    mode = spec.auth_mode
    names = spec.setting_names
    if mode == "oauth":
        assert spec.auth_key is not None
        source = OAuthSource(client, spec.oauth_url, spec.auth_key, spec.scope, names=names)
    elif mode == "password":
        assert spec.user is not None and spec.password is not None
        url = spec.transport.base_url.rstrip("/") + "/token"
        source = PasswordSource(client, url, spec.user, spec.password, names=names)
    elif mode == "token":
        assert spec.access_token is not None
        source = StaticToken(spec.access_token)
    else:
        return None
    return TokenCache(source, now=now, on_token=secrets.add if secrets is not None else None)
