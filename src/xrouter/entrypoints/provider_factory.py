"""Builds the provider adapters the configuration asks for: the built-in local provider, then
one HTTP provider per configured upstream, each with its own pooled transport."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from xrouter.adapters.providers.local import LocalProvider
from xrouter.application.ports import Provider
from xrouter.domain.secrets import SecretRegistry
from xrouter.entrypoints.gigachat_config import build_gigachat, load_gigachat_config
from xrouter.entrypoints.provider_config import (
    GatewayConfig,
    ProviderConfig,
    transport_options,
)

if TYPE_CHECKING:
    from xrouter.adapters.providers.transport import TransportSettings

log = logging.getLogger("xrouter.providers")


def transport_settings(config: ProviderConfig) -> TransportSettings:
    from xrouter.adapters.providers.transport import TransportSettings

    assert config.base_url is not None  # only served providers reach here
    return TransportSettings(
        base_url=config.base_url, max_inflight=config.max_inflight, **transport_options(config)
    )


def build_provider(config: ProviderConfig, byok: bool) -> Provider:
    # Imported here, not at the top: a gateway with no upstream configured never loads the
    # HTTP stack, which is a third of the cold start.
    from xrouter.adapters.providers.openai_compatible.provider import OpenAICompatibleProvider
    from xrouter.adapters.providers.openrouter import OpenRouterProvider
    from xrouter.adapters.providers.transport import HttpTransport

    transport = HttpTransport(config.name, transport_settings(config))
    if config.kind == "openrouter":
        return OpenRouterProvider(
            transport,
            name=config.name,
            api_key=config.api_key,
            protocol=config.protocol,
            byok=byok,
            referer=config.referer,
            title=config.title,
            static_models=config.models,
        )
    return OpenAICompatibleProvider(
        config.name,
        transport,
        api_key=config.api_key,
        protocol=config.protocol,
        byok=byok,
        static_models=config.models,
    )


def build_providers(
    local: LocalProvider,
    config: GatewayConfig,
    byok: bool,
    environ: Mapping[str, str],
    secrets: SecretRegistry | None = None,
) -> list[Provider]:
    providers: list[Provider] = [local]
    for provider_config in config.providers:
        providers.append(build_provider(provider_config, byok))
        log.info(
            "provider %s: %s at %s (%s protocol%s)",
            provider_config.name,
            provider_config.kind,
            provider_config.base_url,
            provider_config.protocol,
            ", BYOK" if byok else "",
        )
    gigachat = build_gigachat(load_gigachat_config(environ), byok, secrets)
    if gigachat is not None:
        providers.append(gigachat)
    return providers
