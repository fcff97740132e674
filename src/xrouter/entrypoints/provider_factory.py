"""Builds the provider adapters the configuration asks for: the built-in local provider, then
one HTTP provider per configured upstream, each from its spec, with its own pooled transport."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from xrouter.adapters.providers.local import LocalProvider
from xrouter.adapters.providers.provider_spec import OpenRouterSpec, ProviderSpec
from xrouter.application.ports import Provider
from xrouter.domain.secrets import SecretRegistry
from xrouter.entrypoints.gigachat_config import build_gigachat, load_gigachat_config
from xrouter.entrypoints.provider_config import GatewayConfig, provider_spec

log = logging.getLogger("xrouter.providers")


def build_provider(spec: ProviderSpec) -> Provider:
    # Imported here, not at the top: a gateway with no upstream configured never loads the
    # HTTP stack, which is a third of the cold start.
    from xrouter.adapters.providers.openai_compatible.provider import OpenAICompatibleProvider
    from xrouter.adapters.providers.openrouter import OpenRouterProvider

    if isinstance(spec, OpenRouterSpec):
        return OpenRouterProvider(spec)
    return OpenAICompatibleProvider(spec)


def build_providers(
    local: LocalProvider,
    config: GatewayConfig,
    byok: bool,
    environ: Mapping[str, str],
    secrets: SecretRegistry | None = None,
) -> list[Provider]:
    providers: list[Provider] = [local]
    for provider_config in config.providers:
        providers.append(build_provider(provider_spec(provider_config, byok)))
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
