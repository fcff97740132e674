"""Builds the provider adapters the configuration asks for: the built-in local provider, then
one HTTP provider per configured upstream, each from its spec, with its own pooled transport
and its in-flight limiter (shared through Redis when the container passes that factory)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from xrouter.adapters.providers.deepseek.spec import DeepSeekSpec
from xrouter.adapters.providers.inflight import InflightFactory
from xrouter.adapters.providers.local import LocalProvider
from xrouter.adapters.providers.provider_spec import OpenRouterSpec, ProviderSpec, ZaiSpec
from xrouter.adapters.providers.yandex.spec import YandexSpec
from xrouter.application.ports import Provider
from xrouter.domain.secrets import SecretRegistry
from xrouter.entrypoints.gigachat_config import build_gigachat, load_gigachat_config
from xrouter.entrypoints.provider_config import GatewayConfig, provider_spec

log = logging.getLogger("xrouter.providers")


def build_provider(spec: ProviderSpec, inflight: InflightFactory | None = None) -> Provider:
    # Each kind's adapter is imported here, and only the kind this spec asks for: a gateway
    # with no upstream configured never loads the HTTP stack (a third of the cold start), and
    # one with an OpenAI-compatible upstream does not load DeepSeek's DSML parser, Yandex's
    # answer readers and the rest (issue 16, start to first 200).
    limiter = inflight(spec.name, spec.transport) if inflight is not None else None
    if isinstance(spec, DeepSeekSpec):
        from xrouter.adapters.providers.deepseek.provider import DeepSeekProvider

        return DeepSeekProvider(spec, limiter=limiter)
    if isinstance(spec, OpenRouterSpec):
        from xrouter.adapters.providers.openrouter import OpenRouterProvider

        return OpenRouterProvider(spec, limiter=limiter)
    if isinstance(spec, YandexSpec):
        from xrouter.adapters.providers.yandex.provider import YandexProvider

        return YandexProvider(spec, limiter=limiter)
    if isinstance(spec, ZaiSpec):
        from xrouter.adapters.providers.zai import ZaiProvider

        return ZaiProvider(spec, limiter=limiter)
    from xrouter.adapters.providers.openai_compatible.provider import OpenAICompatibleProvider

    return OpenAICompatibleProvider(spec, limiter=limiter)


def build_providers(
    local: LocalProvider,
    config: GatewayConfig,
    byok: bool,
    environ: Mapping[str, str],
    secrets: SecretRegistry | None = None,
    inflight: InflightFactory | None = None,
) -> list[Provider]:
    """`inflight` builds each HTTP provider's in-flight limiter; None: each process's own."""
    providers: list[Provider] = [local]
    for provider_config in config.providers:
        providers.append(build_provider(provider_spec(provider_config, byok), inflight))
        log.info(
            "provider %s: %s at %s (%s protocol%s)",
            provider_config.name,
            provider_config.kind,
            provider_config.base_url,
            provider_config.protocol,
            ", BYOK" if byok else "",
        )
    gigachat = build_gigachat(load_gigachat_config(environ), byok, secrets, inflight)
    if gigachat is not None:
        providers.append(gigachat)
    return providers
