"""What an OpenAI-compatible provider is built from, as typed values.

`entrypoints` builds one spec per configured upstream, once, from its configuration
(`entrypoints/provider_config.py`) and hands it to the provider's constructor: no adapter reads
configuration, and no field is mapped a second time on the way. GigaChat's spec, which has
its own credentials and TLS, is `gigachat/factory.py` `GigaChatSpec`.

This module imports no HTTP library, so the configuration can build specs without loading
the HTTP stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xrouter.adapters.providers.transport_settings import SettingNames, TransportSettings

Protocol = Literal["chat", "responses"]
"""The upstream API spoken: Chat Completions or Responses."""


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One OpenAI-compatible upstream (OpenAI, vLLM, Ollama, DeepSeek...)."""

    name: str
    """The provider's name: the `name/` prefix of its model ids."""
    transport: TransportSettings
    """Where it is, its timeouts, retries, limits, and the operator's names of its settings."""
    api_key: str | None = None
    """The gateway's own key, sent as `Authorization: Bearer`; None for a server that needs
    none (or in BYOK mode, where it is used for discovery only)."""
    protocol: Protocol = "chat"
    byok: bool = False
    """Calls carry the client's own key instead of `api_key`."""
    static_models: tuple[str, ...] = ()
    """Models listed whatever discovery finds."""

    @property
    def setting_names(self) -> SettingNames:
        return self.transport.setting_names

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return (
            f"{type(self).__name__}(name={self.name!r}, base_url={self.transport.base_url!r}, "
            f"protocol={self.protocol!r}, byok={self.byok!r})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class OpenRouterSpec(ProviderSpec):
    """OpenRouter: an OpenAI-compatible upstream, plus the app attribution it ranks apps by."""

    referer: str | None = None
    """Site URL sent as `HTTP-Referer`."""
    title: str | None = None
    """App name sent as `X-OpenRouter-Title` (and the legacy `X-Title`)."""


@dataclass(frozen=True, slots=True, repr=False)
class ZaiSpec(ProviderSpec):
    """Z.AI (GLM): an OpenAI-compatible chat upstream with its own knobs (`zai.py`)."""
