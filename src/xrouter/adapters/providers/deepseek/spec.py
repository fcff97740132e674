"""What a DeepSeek provider is built from. No HTTP import: the configuration builds it."""

from __future__ import annotations

from dataclasses import dataclass

from xrouter.adapters.providers.provider_spec import ProviderSpec

DEEPSEEK_BASE_URL = "https://api.deepseek.com"
"""DeepSeek's OpenAI-format root (`/v1` is accepted too and means no model version)."""


@dataclass(frozen=True, slots=True, repr=False)
class DeepSeekSpec(ProviderSpec):
    """A DeepSeek upstream: an OpenAI-compatible spec whose adapter adds DeepSeek's quirks."""
