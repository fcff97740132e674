"""Providers for upstreams that speak OpenAI's wire formats (Chat Completions, Responses)."""

from xrouter.adapters.providers.openai_compatible.chat_protocol import ChatDialect
from xrouter.adapters.providers.openai_compatible.provider import (
    OpenAICompatibleProvider,
    require_chat_protocol,
)

__all__ = ["ChatDialect", "OpenAICompatibleProvider", "require_chat_protocol"]
