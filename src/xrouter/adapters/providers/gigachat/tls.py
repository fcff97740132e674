"""TLS for GigaChat: one SSL context shared by the OAuth host and the API host.

GigaChat's servers present a chain under the Russian Trusted Root CA, which the usual bundles
(certifi, most system stores) lack, so a CA bundle is the normal setup. Mutual TLS (a client
certificate) is optional. Verification is switched off only by an explicit setting, and that
logs a warning every time a context is built (at startup).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from xrouter.adapters.providers.tls import client_ssl_context
from xrouter.adapters.providers.transport_settings import SettingNames, field_names

log = logging.getLogger("xrouter.gigachat.tls")


@dataclass(frozen=True, slots=True)
class TLSSettings:
    ca_bundle: str | None = None
    """A PEM file (or a directory of hashed certificates) of the CAs to trust, instead of the
    default bundle."""
    cert: tuple[str, str] | None = None
    """Client certificate and key files, for mutual TLS."""
    verify: bool = True
    """False disables certificate verification: development only."""


def ssl_context(settings: TLSSettings, names: SettingNames = field_names) -> ssl.SSLContext:
    """The context for both GigaChat hosts; `names` names the settings the warning mentions."""
    if not settings.verify:
        log.warning(
            "TLS certificate verification is DISABLED for GigaChat (%s=false): anyone on the "
            "network path can read and alter the traffic, credentials included. Use it for "
            "development only; set %s instead.",
            names("verify_ssl"),
            names("ca_bundle"),
        )
    return client_ssl_context(
        verify=(settings.ca_bundle or True) if settings.verify else False, cert=settings.cert
    )
