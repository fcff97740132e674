"""Builds the provider adapters the configuration asks for: the built-in local provider, then
one HTTP provider per configured upstream, each with its own pooled transport."""

from __future__ import annotations

from xrouter.adapters.providers.local import LocalProvider
from xrouter.application.ports import Provider
from xrouter.entrypoints.provider_config import GatewayConfig


def build_providers(local: LocalProvider, config: GatewayConfig, byok: bool) -> list[Provider]:
    providers: list[Provider] = [local]
    return providers
