"""Client TLS contexts for upstream calls: one place that knows how to trust a CA bundle,
present a client certificate, or (explicitly, never silently) skip verification."""

from __future__ import annotations

import os
import ssl

import httpx


def client_ssl_context(
    *, verify: bool | str, cert: tuple[str, str] | None = None, trust_env: bool = True
) -> ssl.SSLContext:
    """`verify`: True (the default trust store), a CA bundle file or directory, or False (no
    verification; the caller logs the warning). `cert`: client certificate and key files."""
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        if os.path.isdir(verify):
            context = ssl.create_default_context(capath=verify)
        else:
            context = ssl.create_default_context(cafile=verify)
    else:
        context = httpx.create_ssl_context(verify=True, trust_env=trust_env)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context
