"""GigaChat's hosts, scopes and limits: plain constants, importable without the HTTP stack
(configuration reads them at startup even when GigaChat is not configured)."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://gigachat.devices.sberbank.ru/api/v1"
DEFAULT_OAUTH_URL = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
DEFAULT_SCOPE = "GIGACHAT_API_PERS"
SCOPES = ("GIGACHAT_API_PERS", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP")


def default_max_inflight(scope: str) -> int:
    """GigaChat's concurrency limit for the scope: 1 for individuals, 10 for businesses."""
    return 1 if scope == "GIGACHAT_API_PERS" else 10
