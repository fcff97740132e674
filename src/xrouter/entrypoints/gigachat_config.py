"""The GigaChat provider's configuration, from `XR_GIGACHAT_*` variables, and its construction.

GigaChat is served when it has credentials: an authorization key (`XR_GIGACHAT_AUTH_KEY`, the
normal path), a user and password, or a ready access token; or when the gateway runs in BYOK
mode and any `XR_GIGACHAT_*` variable mentions it. A bad value stops startup with a
ConfigError naming the variable; a variable this module does not know is a ConfigError too,
so a typo never leaves the provider silently unconfigured. docs/gigachat.md documents every
variable (a test keeps it in step with `GigaChatConfig`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from xrouter.adapters.providers.body_limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_HEAD_BYTES,
)
from xrouter.adapters.providers.gigachat.defaults import (
    DEFAULT_BASE_URL,
    DEFAULT_OAUTH_URL,
    SCOPES,
    default_max_inflight,
)
from xrouter.adapters.providers.inflight import InflightFactory
from xrouter.application.ports import Provider
from xrouter.domain.secrets import SecretRegistry

if TYPE_CHECKING:
    from xrouter.adapters.providers.gigachat.factory import GigaChatSpec

from xrouter.entrypoints.env_fields import (
    ConfigError,
    EnvNames,
    comma_list,
    masked_repr,
    non_negative_int,
    parse_bool,
    positive,
    setting,
    show_default,
)
from xrouter.entrypoints.provider_config import transport_settings, wait_seconds

log = logging.getLogger("xrouter.providers")

PREFIX = "XR_GIGACHAT_"


def _scope(raw: str) -> str:
    value = raw.strip().upper()
    if value not in SCOPES:
        raise ValueError(f"expected one of {', '.join(SCOPES)}")
    return value


def _url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("https://", "http://")) or len(value.split("://", 1)[1]) == 0:
        raise ValueError("expected an http(s) URL")
    return value


def _file(raw: str) -> str:
    if not os.path.exists(raw):
        raise ValueError("no such file or directory")
    return raw


_POSITIVE_FLOAT = positive(float)


@dataclass(frozen=True, slots=True)
class GigaChatConfig:
    """Every field is `XR_GIGACHAT_<FIELD>`."""

    auth_key: str | None = setting(
        None,
        str,
        "Authorization key (Base64 `client_id:client_secret` from the GigaChat cabinet), sent "
        "as is as `Authorization: Basic`. Enables the provider. Never logged.",
        secret=True,
    )
    scope: str = setting(
        "GIGACHAT_API_PERS",
        _scope,
        "OAuth scope: `GIGACHAT_API_PERS` (individuals), `GIGACHAT_API_B2B` (prepaid "
        "business), `GIGACHAT_API_CORP` (pay-as-you-go business).",
    )
    oauth_url: str = setting(DEFAULT_OAUTH_URL, _url, "OAuth token endpoint.")
    base_url: str = setting(DEFAULT_BASE_URL, _url, "API root (`.../api/v1`).")
    access_token: str | None = setting(
        None,
        str,
        "A ready access token, used as is and never refreshed (it lives 30 minutes).",
        secret=True,
    )
    user: str | None = setting(
        None, str, "User for the API's `/token` (some hosts only); with `PASSWORD`."
    )
    password: str | None = setting(None, str, "Password for `/token`; never logged.", secret=True)
    ca_bundle: str | None = setting(
        None,
        _file,
        "PEM bundle (or hashed directory) of the CAs to trust for both hosts, e.g. one "
        "holding the Russian Trusted Root CA. Unset: the default bundle (certifi), which "
        "lacks it.",
    )
    cert_file: str | None = setting(None, _file, "Client certificate (PEM) for mutual TLS.")
    key_file: str | None = setting(None, _file, "Client certificate's private key (PEM).")
    verify_ssl: bool = setting(
        True,
        parse_bool,
        "`false` disables TLS verification for both hosts: development only, logged as a "
        "warning at startup.",
    )
    enabled: bool | None = setting(
        None, parse_bool, "`false` turns the provider off; unset: on when it has credentials."
    )
    max_inflight: int | None = setting(
        None,
        positive(int),
        "Requests open at once to GigaChat, across all workers and instances with "
        "`XR_REDIS_URL` (more wait: `QUEUE_TIMEOUT_S`). Unset: GigaChat's own limit for the "
        "scope, 1 for PERS, 10 for B2B and CORP.",
    )
    queue_timeout_s: float = setting(
        30.0,
        wait_seconds,
        "Longest wait, in arrival order, for a free slot of `MAX_INFLIGHT`; then 429 + "
        "Retry-After. `0`: refused at once.",
    )
    models: tuple[str, ...] = setting(
        (), comma_list, "Models listed on `/v1/models` besides discovery (comma-separated)."
    )
    connect_timeout_s: float = setting(
        10.0, _POSITIVE_FLOAT, "TCP/TLS connect timeout (to either host or its proxy)."
    )
    first_byte_timeout_s: float = setting(
        120.0,
        _POSITIVE_FLOAT,
        "Wait for the answer's status line after sending; a non-stream answer starts only "
        "when complete, so this also bounds its generation.",
    )
    read_timeout_s: float = setting(
        120.0, _POSITIVE_FLOAT, "Longest silence between bytes (a stream lives while bytes flow)."
    )
    write_timeout_s: float = setting(30.0, _POSITIVE_FLOAT, "Longest stall sending the request.")
    pool_timeout_s: float = setting(
        10.0, _POSITIVE_FLOAT, "Wait for a free connection when all are busy."
    )
    total_timeout_s: float = setting(600.0, _POSITIVE_FLOAT, "Deadline of a whole non-stream call.")
    oauth_timeout_s: float = setting(15.0, _POSITIVE_FLOAT, "Deadline of a token request.")
    max_retries: int = setting(
        2, non_negative_int, "Retries for connect errors, 429 and 5xx; never once streaming."
    )
    max_body_bytes: int = setting(
        DEFAULT_MAX_BODY_BYTES,
        positive(int),
        "Largest non-stream answer body as received; over it the call fails (502).",
    )
    max_event_bytes: int = setting(
        DEFAULT_MAX_EVENT_BYTES,
        positive(int),
        "Largest single server-sent event of a stream; over it the stream fails (502).",
    )
    max_decompressed_bytes: int = setting(
        DEFAULT_MAX_DECOMPRESSED_BYTES,
        positive(int),
        "Most a gzip/deflate answer may inflate to (a stream: in total); over it: 502.",
    )
    max_head_bytes: int = setting(
        DEFAULT_MAX_HEAD_BYTES,
        positive(int),
        "Largest answer head (status line and headers, or trailers); over it: 502.",
    )

    @property
    def has_credentials(self) -> bool:
        return bool(self.auth_key or self.access_token or (self.user and self.password))

    def __repr__(self) -> str:
        return masked_repr(self)


def gigachat_spec(config: GigaChatConfig, byok: bool) -> GigaChatSpec:
    """What the GigaChat provider is built from: made here, once."""
    # Imported here: the HTTP stack loads only when GigaChat is configured.
    from xrouter.adapters.providers.gigachat.factory import GigaChatSpec
    from xrouter.adapters.providers.gigachat.tls import TLSSettings

    cert = (config.cert_file, config.key_file) if config.cert_file and config.key_file else None
    return GigaChatSpec(
        transport=transport_settings(
            config,
            base_url=config.base_url,
            max_inflight=config.max_inflight or default_max_inflight(config.scope),
            names=EnvNames(PREFIX),
        ),
        oauth_url=config.oauth_url,
        auth_key=config.auth_key,
        scope=config.scope,
        access_token=config.access_token,
        user=config.user,
        password=config.password,
        tls=TLSSettings(ca_bundle=config.ca_bundle, cert=cert, verify=config.verify_ssl),
        oauth_timeout_s=config.oauth_timeout_s,
        byok=byok,
        static_models=config.models,
    )


def gigachat_variables() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of every setting, for the docs."""
    return [
        (PREFIX + f.name.upper(), show_default(f.default), f.metadata["doc"])
        for f in fields(GigaChatConfig)
    ]


def load_gigachat_config(environ: Mapping[str, str]) -> GigaChatConfig | None:
    """The configuration, or None when no `XR_GIGACHAT_*` variable is set."""
    known = {PREFIX + f.name.upper(): f for f in fields(GigaChatConfig)}
    values: dict[str, Any] = {}
    mentioned = False
    for name, raw in environ.items():
        if not name.startswith(PREFIX):
            continue
        mentioned = True
        spec = known.get(name)
        if spec is None:
            hint = " (the key variable is XR_GIGACHAT_AUTH_KEY)" if "KEY" in name else ""
            raise ConfigError(
                f"{name} is not a GigaChat setting{hint}; known: {', '.join(sorted(known))}."
            )
        if raw.strip() == "":
            continue
        try:
            values[spec.name] = spec.metadata["parse"](raw)
        except ValueError as exc:
            shown = "***" if spec.metadata["secret"] else repr(raw)
            raise ConfigError(f"{name}={shown} is not valid: {exc}.") from None
    if not mentioned:
        return None
    config = GigaChatConfig(**values)
    _check(config)
    return config


def _check(config: GigaChatConfig) -> None:
    if bool(config.user) != bool(config.password):
        raise ConfigError("XR_GIGACHAT_USER and XR_GIGACHAT_PASSWORD go together: set both.")
    if bool(config.cert_file) != bool(config.key_file):
        raise ConfigError(
            "XR_GIGACHAT_CERT_FILE and XR_GIGACHAT_KEY_FILE go together (mutual TLS): set both."
        )
    modes = [
        name
        for name, present in (
            ("XR_GIGACHAT_AUTH_KEY", bool(config.auth_key)),
            ("XR_GIGACHAT_USER/PASSWORD", bool(config.user and config.password)),
            ("XR_GIGACHAT_ACCESS_TOKEN", bool(config.access_token)),
        )
        if present
    ]
    if len(modes) > 1:
        raise ConfigError(f"Set one GigaChat credential, not several: {', '.join(modes)}.")
    if not config.verify_ssl and config.ca_bundle:
        raise ConfigError(
            "XR_GIGACHAT_VERIFY_SSL=false contradicts XR_GIGACHAT_CA_BUNDLE: a CA bundle is "
            "for verifying. Unset one of them."
        )


def build_gigachat(
    config: GigaChatConfig | None,
    byok: bool,
    secrets: SecretRegistry | None = None,
    inflight: InflightFactory | None = None,
) -> Provider | None:
    """The GigaChat provider when `config` asks for one, else None (with a log line saying
    why, when it was mentioned). The access tokens it fetches are added to `secrets`;
    `inflight` builds its in-flight limiter (default: this process's own)."""
    if config is None:
        return None
    if config.enabled is False:
        log.info("provider gigachat is disabled (XR_GIGACHAT_ENABLED=false)")
        return None
    if not config.has_credentials and not byok:
        log.warning(
            "provider gigachat is not served: it has no credentials. Set XR_GIGACHAT_AUTH_KEY "
            "(or XR_GIGACHAT_ACCESS_TOKEN, or XR_GIGACHAT_USER and XR_GIGACHAT_PASSWORD), or "
            "run with XR_BYOK=true."
        )
        return None
    from xrouter.adapters.providers.gigachat.factory import create_gigachat_provider

    spec = gigachat_spec(config, byok)
    try:
        limiter = inflight(spec.name, spec.transport) if inflight is not None else None
        provider = create_gigachat_provider(spec, secrets=secrets, limiter=limiter)
    except OSError as exc:  # a CA bundle or client certificate that cannot be loaded
        variable = "XR_GIGACHAT_CERT_FILE" if spec.tls.cert else "XR_GIGACHAT_CA_BUNDLE"
        raise ConfigError(
            f"The TLS files for GigaChat cannot be loaded ({exc}); check {variable}"
            + (" and XR_GIGACHAT_CA_BUNDLE." if spec.tls.cert else ".")
        ) from None
    log.info(
        "provider gigachat: %s auth at %s, scope %s, at most %d requests in flight%s%s",
        spec.auth_mode,
        spec.transport.base_url,
        spec.scope,
        spec.transport.max_inflight,
        ", BYOK" if byok else "",
        ", custom CA bundle" if spec.tls.ca_bundle else "",
    )
    return provider
