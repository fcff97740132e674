"""What a Yandex AI Studio provider is built from. No HTTP imports: the configuration builds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xrouter.adapters.providers.provider_spec import ProviderSpec

YANDEX_BASE_URL = "https://ai.api.cloud.yandex.net/v1"

YandexAuth = Literal["api_key", "iam"]
"""How the key is sent: `Authorization: Api-Key <key>` (a service account's API key) or
`Authorization: Bearer <token>` (an IAM token)."""


@dataclass(frozen=True, slots=True, repr=False)
class YandexSpec(ProviderSpec):
    """Yandex AI Studio: an OpenAI Responses-compatible upstream scoped to a folder."""

    folder_id: str | None = None
    """The cloud folder the models run in: the `<folder>` of `gpt://<folder>/<model>` and the
    `OpenAI-Project` header. Without it only `gpt://` model ids can be used."""
    auth: YandexAuth = "api_key"
