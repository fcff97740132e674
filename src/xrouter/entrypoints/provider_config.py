"""Upstream providers and model aliases from the environment and an optional TOML file.

Sources, later ones winning field by field:
1. built-in defaults for the well-known names (`openai`, `openrouter`);
2. the TOML file named by `XR_CONFIG_FILE` (`[providers.<name>]` tables, `[aliases]`);
3. environment variables `XR_<NAME>_<FIELD>` (`XR_OPENAI_API_KEY`, `XR_VLLM_BASE_URL`...) and
   `XR_ALIASES="fast=openai/gpt-4o-mini,smart=openrouter/anthropic/claude-sonnet-4"`.

A provider is served when it has a base URL and either an API key, BYOK mode, or
`enabled = true` (a local server that needs no key). One without credentials is skipped with
a log line that says which variable to set; it never stops the gateway. Several deployments of
one provider (`[[providers.<name>.deployments]]`) come from the file only: they are a list of
tables, which no single variable spells. docs/providers.md documents every field.
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from xrouter.adapters.providers.body_limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_HEAD_BYTES,
)
from xrouter.adapters.providers.deepseek.spec import DEEPSEEK_BASE_URL, DeepSeekSpec
from xrouter.adapters.providers.deployments import STRATEGIES, Deployment, Strategy
from xrouter.adapters.providers.provider_spec import OpenRouterSpec, ProviderSpec, ZaiSpec
from xrouter.adapters.providers.transport_settings import SettingNames, TransportSettings
from xrouter.adapters.providers.yandex.spec import YANDEX_BASE_URL, YandexAuth, YandexSpec
from xrouter.entrypoints.env_fields import (
    ConfigError,
    EnvNames,
    comma_list,
    masked_repr,
    non_negative_int,
    one_of,
    parse_bool,
    positive,
    setting,
    show_default,
)
from xrouter.entrypoints.fallback_config import TABLES as FALLBACK_TABLES
from xrouter.entrypoints.fallback_config import fallback_chains

log = logging.getLogger("xrouter.config")

ProviderKind = Literal[
    "openai_compatible", "openrouter", "deepseek", "zai", "ollama", "self_hosted", "yandex"
]
Protocol = Literal["chat", "responses"]

WELL_KNOWN: dict[str, dict[str, Any]] = {
    "openai": {"kind": "openai_compatible", "base_url": "https://api.openai.com/v1"},
    "openrouter": {"kind": "openrouter", "base_url": "https://openrouter.ai/api/v1"},
    "deepseek": {"kind": "deepseek", "base_url": DEEPSEEK_BASE_URL},
    "zai": {"kind": "zai"},
    "ollama": {"kind": "ollama"},
    "yandex": {"kind": "yandex"},
}
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "zai": {"base_url": "https://api.z.ai/api/paas/v4"},
    "deepseek": {"base_url": DEEPSEEK_BASE_URL},
    "yandex": {"base_url": YANDEX_BASE_URL, "protocol": "responses"},
    # Presets for servers on the operator's own machines: a local base URL and no key needed
    # (served without an API key unless ENABLED=false). Several servers of one preset are
    # several providers with different names and the same kind.
    "ollama": {"base_url": "http://127.0.0.1:11434/v1", "enabled": True},
    "self_hosted": {"base_url": "http://127.0.0.1:8000/v1", "enabled": True},
}
"""Defaults a provider's kind brings, under whatever name it is configured; the file and the
environment override them field by field."""
# Names whose XR_<NAME>_* variables belong to something else (their own provider module, or
# the gateway's own settings).
RESERVED_NAMES = frozenset({"gigachat", "local", "api", "max", "store", "log", "docs"})
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_ENV_PROVIDER = re.compile(r"^XR_([A-Z][A-Z0-9_]*?)_(BASE_URL|API_KEY)$")


def wait_seconds(raw: str) -> float:
    """A wait in seconds: 0 (no wait) or more, finite."""
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected 0 or more seconds")
    return value


_POSITIVE_FLOAT = positive(float)
_POSITIVE_INT = positive(int)
_KIND = one_of(
    "openai_compatible", "openrouter", "deepseek", "zai", "ollama", "self_hosted", "yandex"
)
_PROTOCOL = one_of("chat", "responses")
_YANDEX_AUTH = one_of("api_key", "iam")
_STRATEGY = one_of(*STRATEGIES)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One upstream. Every field can be set as `XR_<NAME>_<FIELD>` or in the TOML table."""

    name: str
    kind: ProviderKind = setting(
        "openai_compatible",
        _KIND,
        "`openai_compatible` (OpenAI, vLLM...), `openrouter`, `zai`, `deepseek`, `yandex`, or "
        "the keyless local presets `ollama` and `self_hosted`.",
    )
    base_url: str | None = setting(None, str, "Upstream API root, e.g. `http://127.0.0.1:9000/v1`.")
    api_key: str | None = setting(
        None, str, "Key sent as `Authorization: Bearer`; never logged.", secret=True
    )
    enabled: bool | None = setting(
        None, parse_bool, "Force on (a server that needs no key) or off; unset: on when keyed."
    )
    protocol: Protocol = setting(
        "chat",
        _PROTOCOL,
        "Upstream API spoken: `chat` (Chat Completions) or `responses`.",
    )
    connect_timeout_s: float = setting(
        10.0, _POSITIVE_FLOAT, "TCP/TLS connect timeout (to the upstream or its proxy)."
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
    max_body_bytes: int = setting(
        DEFAULT_MAX_BODY_BYTES,
        _POSITIVE_INT,
        "Largest non-stream answer body as received; over it the call fails (502).",
    )
    max_event_bytes: int = setting(
        DEFAULT_MAX_EVENT_BYTES,
        _POSITIVE_INT,
        "Largest single server-sent event of a stream; over it the stream fails (502).",
    )
    max_decompressed_bytes: int = setting(
        DEFAULT_MAX_DECOMPRESSED_BYTES,
        _POSITIVE_INT,
        "Most a gzip/deflate answer may inflate to (a stream: in total); over it: 502.",
    )
    max_head_bytes: int = setting(
        DEFAULT_MAX_HEAD_BYTES,
        _POSITIVE_INT,
        "Largest answer head (status line and headers, or trailers); over it: 502.",
    )
    max_retries: int = setting(
        2, non_negative_int, "Retries for connect errors, 408, 409, 429, 5xx; never once streaming."
    )
    max_inflight: int = setting(
        64,
        _POSITIVE_INT,
        "Requests open at once to this upstream (across all workers and instances with "
        "`XR_REDIS_URL`); more wait (`QUEUE_TIMEOUT_S`).",
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
    title: str | None = setting(
        None, str, "OpenRouter only: app name sent as X-OpenRouter-Title / X-Title."
    )
    referer: str | None = setting(None, str, "OpenRouter only: site URL sent as HTTP-Referer.")
    folder_id: str | None = setting(
        None,
        str,
        "Yandex only: cloud folder id; models become `gpt://<folder>/<model>`, sent as "
        "`OpenAI-Project`.",
    )
    auth_scheme: YandexAuth = setting(
        "api_key",
        _YANDEX_AUTH,
        "Yandex only: `api_key` (`Authorization: Api-Key`) or `iam` (an IAM token, `Bearer`).",
    )
    strategy: Strategy = setting(
        "least_inflight",
        _STRATEGY,
        "With [deployments](#deployments): how each attempt's deployment is chosen: "
        "`least_inflight`, `weighted` or `latency`.",
    )
    cooldown_s: float = setting(
        30.0,
        wait_seconds,
        "With [deployments](#deployments): how long one whose attempt failed (connect error, "
        "429, 5xx) is skipped.",
    )
    deployments: tuple[Deployment, ...] = field(default=())
    """`[[providers.<name>.deployments]]` of the TOML file (no variable sets them): several
    places the provider is served from; empty: `base_url` alone."""

    def __repr__(self) -> str:
        return masked_repr(self)

    def serves(self, byok: bool) -> bool:
        if self.enabled is not None:
            return self.enabled and self.base_url is not None
        # Keys may be on the deployments alone, as long as every call gets one.
        keyed = self.api_key is not None or bool(
            self.deployments and all(d.api_key for d in self.deployments)
        )
        return self.base_url is not None and (keyed or byok)


def setting_fields() -> list[Any]:
    """The ProviderConfig fields set by name (`XR_<NAME>_<FIELD>` or a TOML key): all but
    `name` and the file-only `deployments`."""
    return [f for f in fields(ProviderConfig) if "parse" in f.metadata]


TRANSPORT_FIELDS = (
    "connect_timeout_s",
    "first_byte_timeout_s",
    "read_timeout_s",
    "write_timeout_s",
    "pool_timeout_s",
    "total_timeout_s",
    "max_retries",
    "max_body_bytes",
    "max_event_bytes",
    "max_decompressed_bytes",
    "max_head_bytes",
    "queue_timeout_s",
)
"""The timeouts, retries and limits every provider's configuration has under the same names
(`ProviderConfig`, `GigaChatConfig`) and hands to its transport as they are."""


def env_prefix(name: str) -> str:
    """The start of provider `name`'s variables: `XR_<NAME>_`."""
    return f"XR_{name.upper().replace('-', '_')}_"


def transport_settings(
    config: Any,
    *,
    base_url: str,
    max_inflight: int,
    names: SettingNames,
    deployments: tuple[Deployment, ...] = (),
    strategy: Strategy = "least_inflight",
    cooldown_s: float = 30.0,
) -> TransportSettings:
    """A provider's transport settings: its TRANSPORT_FIELDS as they are (one mapping for
    every provider, so a new transport setting cannot be forgotten in one of them), where it
    is, its in-flight limit, what the operator calls each setting, and its deployments if it
    has several (only `ProviderConfig` does, so they are passed rather than read)."""
    return TransportSettings(
        base_url=base_url,
        max_inflight=max_inflight,
        setting_names=names,
        deployments=deployments,
        strategy=strategy,
        cooldown_s=cooldown_s,
        **{name: getattr(config, name) for name in TRANSPORT_FIELDS},
    )


def provider_spec(config: ProviderConfig, byok: bool) -> ProviderSpec:
    """What the adapter of a served upstream is built from: made here, once."""
    assert config.base_url is not None  # only served providers reach here
    transport = transport_settings(
        config,
        base_url=config.base_url,
        max_inflight=config.max_inflight,
        names=EnvNames(env_prefix(config.name)),
        deployments=config.deployments,
        strategy=config.strategy,
        cooldown_s=config.cooldown_s,
    )
    # What every kind's spec has; each kind adds its own fields (the spec types are typed).
    common: dict[str, Any] = {
        "name": config.name,
        "transport": transport,
        "api_key": config.api_key,
        "protocol": config.protocol,
        "byok": byok,
        "static_models": config.models,
    }
    if config.kind == "openrouter":
        return OpenRouterSpec(**common, referer=config.referer, title=config.title)
    if config.kind == "yandex":
        return YandexSpec(**common, folder_id=config.folder_id, auth=config.auth_scheme)
    if config.kind == "deepseek":
        return DeepSeekSpec(**common)
    if config.kind == "zai":
        return ZaiSpec(**common)
    return ProviderSpec(**common)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    providers: tuple[ProviderConfig, ...] = ()
    """Providers that are served (enabled and configured)."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """`[fallbacks]`: model or alias -> models tried after it (entrypoints/fallback_config.py)."""
    context_fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """`[context_fallbacks]`: model or alias -> larger-context models, for inputs too long."""


def provider_fields() -> list[tuple[str, str, str]]:
    """(FIELD, default, meaning) of every provider setting, for the docs."""
    rows = []
    for f in setting_fields():
        rows.append((f.name.upper(), show_default(f.default), f.metadata["doc"]))
    return rows


def _parse_fields(source: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Provider fields from `values` (strings from the environment, or TOML values)."""
    by_name = {f.name: f for f in setting_fields()}
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        spec = by_name.get(key)
        if spec is None:
            raise ConfigError(
                f"{source}: unknown provider setting '{key}'; known: {', '.join(sorted(by_name))}."
            )
        if key == "models" and isinstance(raw, list):
            parsed[key] = tuple(str(m) for m in raw)
            continue
        try:
            parsed[key] = spec.metadata["parse"](
                str(raw).lower() if isinstance(raw, bool) else str(raw)
            )
        except ValueError as exc:
            raise ConfigError(f"{source}: '{key}' = {raw!r} is not valid: {exc}.") from None
    return parsed


def _file_tables(
    path: str, environ: Mapping[str, str]
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Any]]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"XR_CONFIG_FILE={path!r} cannot be read: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"XR_CONFIG_FILE={path!r} is not valid TOML: {exc}.") from None
    providers = data.get("providers", {})
    aliases = data.get("aliases", {})
    if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
        raise ConfigError(f"{path}: [providers.<name>] must be tables.")
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ConfigError(f"{path}: [aliases] maps names to model ids, as strings.")
    tables: dict[str, dict[str, Any]] = {}
    for name, table in providers.items():
        table = dict(table)
        # Keys belong in the environment, not in a file: `api_key_env` names the variable.
        key_env = table.pop("api_key_env", None)
        if key_env is not None and environ.get(str(key_env)):
            table["api_key"] = environ[str(key_env)]
        if "deployments" in table:
            source, raw = f"[[providers.{name}.deployments]]", table["deployments"]
            table["deployments"] = _deployments(source, raw, environ)
            # Kept for the "not served" warning, which names each keyless one's variable.
            table[_UNKEYED] = _unkeyed(source, raw, environ)
        tables[name.lower()] = table
    return tables, dict(aliases), data


_UNKEYED = "unkeyed deployments"
"""Internal key of a file table: what the warning says of its deployments without a key (a
name no TOML key can be spelled as without quotes, and popped before the fields are read)."""


def _unkeyed(source: str, raw: list[Any], environ: Mapping[str, str]) -> tuple[str, ...]:
    """Each deployment whose call would carry no key of its own, and what to set for it."""
    missing = []
    for number, table in enumerate(raw, start=1):
        key_env = table.get("api_key_env")
        if key_env is None:
            missing.append(f"{source} #{number} has no api_key_env")
        elif not environ.get(str(key_env)):
            missing.append(f"{source} #{number} has no key: set {key_env} (its api_key_env)")
    return tuple(missing)


def _deployments(source: str, raw: Any, environ: Mapping[str, str]) -> tuple[Deployment, ...]:
    """The deployments of one provider table: `base_url`, `api_key_env` (resolved like the
    provider's own), `weight`; any mistake is a ConfigError naming the table and the field."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"{source}: deployments must be tables ([[...deployments]]).")
    known = ("base_url", "api_key_env", "weight")
    deployments = []
    for number, table in enumerate(raw, start=1):
        where = f"{source} #{number}"
        for key in table:
            if key not in known:
                raise ConfigError(
                    f"{where}: unknown deployment setting '{key}'; known: {', '.join(known)}."
                )
        base_url = table.get("base_url")
        if not isinstance(base_url, str) or not base_url:
            raise ConfigError(f"{where}: 'base_url' is required (the deployment's API root).")
        weight = table.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ConfigError(f"{where}: 'weight' = {weight!r} is not a number.")
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError(f"{where}: 'weight' = {weight!r} is not valid: expected above 0.")
        key_env = table.get("api_key_env")
        api_key = (environ.get(str(key_env)) or None) if key_env is not None else None
        deployments.append(Deployment(base_url=base_url, api_key=api_key, weight=float(weight)))
    return tuple(deployments)


def _aliases_from_env(raw: str) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for pair in comma_list(raw):
        alias, sep, target = pair.partition("=")
        if not sep or not alias.strip() or not target.strip():
            raise ConfigError(f"XR_ALIASES: '{pair}' is not of the form alias=provider/model.")
        aliases[alias.strip()] = target.strip()
    return aliases


def load_gateway_config(
    environ: Mapping[str, str], config_file: str | None, byok: bool
) -> GatewayConfig:
    """Providers and aliases from the defaults, the TOML file and the environment."""
    tables: dict[str, dict[str, Any]] = {name: dict(v) for name, v in WELL_KNOWN.items()}
    aliases: dict[str, str] = {}
    in_file: set[str] = set()
    chains: dict[str, dict[str, tuple[str, ...]]] = {table: {} for table in FALLBACK_TABLES}
    if config_file:
        file_tables, file_aliases, data = _file_tables(config_file, environ)
        chains = {table: fallback_chains(config_file, data, table) for table in FALLBACK_TABLES}
        for name, table in file_tables.items():
            tables.setdefault(name, {}).update(table)
        in_file = set(file_tables)
        aliases.update(file_aliases)
    if environ.get("XR_ALIASES"):
        aliases.update(_aliases_from_env(environ["XR_ALIASES"]))

    names = set(tables)
    for variable in environ:
        match = _ENV_PROVIDER.match(variable)
        if match:
            names.add(match.group(1).lower())

    served: list[ProviderConfig] = []
    for name in sorted(names - RESERVED_NAMES):
        if not _NAME.match(name):
            raise ConfigError(f"Provider name '{name}' must be lowercase letters, digits, - or _.")
        table = dict(tables.get(name, {}))
        deployments = table.pop("deployments", ())
        unkeyed: tuple[str, ...] = table.pop(_UNKEYED, ())
        values = _parse_fields(f"[providers.{name}]", table)
        prefix = env_prefix(name)
        env_values = {
            f.name: environ[prefix + f.name.upper()]
            for f in setting_fields()
            if environ.get(prefix + f.name.upper())
        }
        values.update(_parse_fields(f"{prefix}*", env_values))
        kind = values.get("kind", "openai_compatible")
        values = {**KIND_DEFAULTS.get(kind, {}), **values}
        if deployments:
            # The first deployment stands for the provider where one URL is shown or needed.
            values = {"base_url": deployments[0].base_url, **values, "deployments": deployments}
        provider = replace(ProviderConfig(name=name), **values)
        mentioned = name in in_file or any(key.startswith(prefix) for key in environ)
        if not mentioned:
            continue  # a well-known name nobody configured: not served, nothing to say
        if provider.serves(byok):
            served.append(provider)
        elif provider.enabled is False:
            log.info("provider %s is disabled (%sENABLED=false)", name, prefix)
        elif unkeyed and provider.api_key is None:
            log.warning(
                "provider %s is not served: %s. Or give it a key of its own (%sAPI_KEY), "
                "which those deployments then use, or XR_BYOK=true.",
                name,
                "; ".join(unkeyed),
                prefix,
            )
        else:
            log.warning(
                "provider %s is not served: it has no credentials or no base URL. Set "
                "%sAPI_KEY (and %sBASE_URL), or %sENABLED=true for a server that needs no "
                "key, or XR_BYOK=true.",
                name,
                prefix,
                prefix,
                prefix,
            )
    for alias, target in aliases.items():
        if "/" not in target:
            raise ConfigError(
                f"Alias '{alias}' must point at a 'provider/model' id, not '{target}'."
            )
    return GatewayConfig(
        providers=tuple(served),
        aliases=aliases,
        fallbacks=chains["fallbacks"],
        context_fallbacks=chains["context_fallbacks"],
    )
