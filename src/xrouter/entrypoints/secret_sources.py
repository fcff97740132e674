"""Every secret the configuration holds, gathered for masking by value (domain/secrets.py).

A setting is a secret when it is declared with `secret=True` (env_fields.setting): the
gateway's own settings, every upstream's (`XR_<NAME>_API_KEY`), GigaChat's (authorization
key, password, ready token). A secret added later (an auth key, a Redis password) is masked
as soon as it is declared so, with nothing to change here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import fields, is_dataclass
from urllib.parse import unquote, urlsplit

from xrouter.domain.secrets import SecretMasker
from xrouter.entrypoints.config import Settings
from xrouter.entrypoints.gigachat_config import gigachat_spec, load_gigachat_config
from xrouter.entrypoints.provider_config import GatewayConfig


def secret_values(config: object) -> Iterator[str]:
    """The values of `config`'s fields declared `secret=True` that are set."""
    if not is_dataclass(config):
        return
    for spec in fields(config):
        value = getattr(config, spec.name)
        if spec.metadata.get("secret") and isinstance(value, str) and value:
            yield value


def configured_secrets(
    settings: Settings, gateway: GatewayConfig, environ: Mapping[str, str]
) -> SecretMasker:
    """A masker for every configured secret of the gateway and its providers."""
    values = [*secret_values(settings)]
    if settings.redis_url:
        # The URL is a secret as a whole; its password may also appear on its own (an AUTH
        # error, a URL written another way).
        password = urlsplit(settings.redis_url).password
        if password:
            values.append(unquote(password))
    for provider in gateway.providers:
        values.extend(secret_values(provider))
    gigachat = load_gigachat_config(environ)
    if gigachat is not None:
        values.extend(secret_values(gigachat))
        if gigachat.has_credentials:
            # Credentials derived from the settings (Basic user:password) are secrets too.
            values.extend(gigachat_spec(gigachat, byok=False).secrets())
    return SecretMasker(values)
