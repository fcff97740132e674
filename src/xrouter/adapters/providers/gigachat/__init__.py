"""The GigaChat (Sber) provider: OAuth tokens, TLS with a custom CA, function calling and
streaming over GigaChat's classic chat API. docs/gigachat.md is the operator's guide."""

from xrouter.adapters.providers.gigachat.factory import (
    DEFAULT_BASE_URL,
    DEFAULT_OAUTH_URL,
    SCOPES,
    GigaChatSettings,
    create_gigachat_provider,
    default_max_inflight,
)
from xrouter.adapters.providers.gigachat.provider import GigaChatProvider
from xrouter.adapters.providers.gigachat.tls import TLSSettings

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_OAUTH_URL",
    "SCOPES",
    "GigaChatProvider",
    "GigaChatSettings",
    "TLSSettings",
    "create_gigachat_provider",
    "default_max_inflight",
]
