"""What `xrouter config check` shows: the loaded configuration as rich tables.

Only ever a key's presence: a key itself is written as `***`. This module is imported when
the command runs (rich is loaded with it), never by `xrouter --version`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from xrouter.adapters.providers.local import MODELS as LOCAL_MODELS
from xrouter.entrypoints.config import Settings, env_name

if TYPE_CHECKING:
    from xrouter.entrypoints.cli.config_check import Loaded
    from xrouter.entrypoints.cli.config_probe import ProbeResult
    from xrouter.entrypoints.gigachat_config import GigaChatConfig
    from xrouter.entrypoints.provider_config import ProviderConfig

MASK = "***"


def report(
    loaded: Loaded, probes: Sequence[ProbeResult], environ: Mapping[str, str]
) -> list[RenderableType]:
    """The whole report, section by section, then one line of verdict."""
    parts: list[RenderableType] = [_title(loaded)]
    parts.append(_section("Providers", _providers(loaded)))
    deployments = _deployments(loaded)
    if deployments is not None:
        parts.append(_section("Deployments", deployments))
    parts.append(_section("Aliases", _aliases(loaded)))
    parts.append(_section("Gateway", _gateway(loaded.settings, environ)))
    if probes:
        parts.append(_section("Probes", _probes(probes)))
    for note in loaded.notes:
        parts.append(Text(f"note: {note}", style="dim"))
    parts.append(Text(""))
    parts.append(_verdict(loaded, probes))
    return parts


def _title(loaded: Loaded) -> Text:
    source = "the environment"
    if loaded.config_file:
        source += f" and {loaded.config_file} ({env_name('config_file')})"
    return Text.assemble(("XRouter configuration", "bold"), f" from {source}")


def _section(title: str, body: RenderableType) -> Group:
    return Group(Text(""), Text(title, style="bold underline"), body)


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _add(table: Table, *cells: str | Text) -> None:
    """A row whose text is shown as it is: a URL or a model id is never read as markup."""
    table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells))


def _seconds(value: float) -> str:
    """`30 s`, `10 min`, `30 d`: a duration as a person writes it."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g} {unit}"
    return f"{value:g} s"


def _limits(config: ProviderConfig | GigaChatConfig, max_inflight: int) -> str:
    return (
        f"{max_inflight} in flight (queue {_seconds(config.queue_timeout_s)}), "
        f"{config.max_retries} retries; timeouts: connect {_seconds(config.connect_timeout_s)}, "
        f"first byte {_seconds(config.first_byte_timeout_s)}, "
        f"read {_seconds(config.read_timeout_s)}, total {_seconds(config.total_timeout_s)}"
    )


def _provider_key(provider: ProviderConfig, byok: bool) -> str:
    if provider.api_key:
        return f"set ({MASK})"
    if provider.deployments and all(d.api_key for d in provider.deployments):
        return f"per deployment ({MASK})"
    if byok:
        return "the client's (BYOK)"
    return "none needed"


def _gigachat_key(config: GigaChatConfig, byok: bool) -> str:
    if config.auth_key:
        return f"auth key set ({MASK})"
    if config.user and config.password:
        return f"user {config.user}, password set ({MASK})"
    if config.access_token:
        return f"access token set ({MASK})"
    return "the client's (BYOK)" if byok else "none"


def _providers(loaded: Loaded) -> Table:
    byok = loaded.settings.byok if loaded.settings is not None else False
    table = _table("provider", "kind", "base URL", "key", "protocol", "limits", "models")
    _add(table, "local", "built-in", "-", "none needed", "-", "-", ", ".join(LOCAL_MODELS))
    gateway = loaded.gateway
    for provider in gateway.providers if gateway is not None else ():
        _add(
            table,
            provider.name,
            provider.kind,
            provider.base_url or "-",
            _provider_key(provider, byok),
            provider.protocol,
            _limits(provider, provider.max_inflight),
            ", ".join(provider.models) or "discovered",
        )
    gigachat = loaded.gigachat
    if gigachat is not None:
        from xrouter.adapters.providers.gigachat.defaults import default_max_inflight

        inflight = gigachat.max_inflight or default_max_inflight(gigachat.scope)
        _add(
            table,
            "gigachat",
            f"gigachat ({gigachat.scope})",
            gigachat.base_url,
            _gigachat_key(gigachat, byok),
            "chat",
            _limits(gigachat, inflight),
            ", ".join(gigachat.models) or "discovered",
        )
    if gateway is None:
        _add(table, "...", Text("not loaded: see the errors", style="red"), "", "", "", "", "")
    return table


def _deployments(loaded: Loaded) -> Table | None:
    providers = [p for p in loaded.gateway.providers if p.deployments] if loaded.gateway else []
    if not providers:
        return None
    table = _table("provider", "#", "base URL", "key", "weight", "strategy", "cooldown")
    for provider in providers:
        for number, deployment in enumerate(provider.deployments, start=1):
            key = f"set ({MASK})" if deployment.api_key else "the provider's"
            _add(
                table,
                provider.name,
                str(number),
                deployment.base_url,
                key,
                f"{deployment.weight:g}",
                provider.strategy,
                _seconds(provider.cooldown_s),
            )
    return table


def _aliases(loaded: Loaded) -> RenderableType:
    aliases = loaded.gateway.aliases if loaded.gateway is not None else {}
    if not aliases:
        return Text("none (XR_ALIASES, or [aliases] in the file)", style="dim")
    table = _table("alias", "model")
    for alias, target in aliases.items():
        _add(table, alias, target)
    return table


def _gateway(settings: Settings | None, environ: Mapping[str, str]) -> RenderableType:
    if settings is None:
        return Text("not loaded: see the errors", style="red")
    from xrouter.entrypoints.telemetry_config import telemetry_choice

    table = _table("setting", "value")
    _add(table, "storage", _storage(settings))
    _add(table, "analytics", settings.analytics)
    _add(table, "auth", _auth(settings))
    admin = f"on ({env_name('admin_key')} set, {MASK})" if settings.admin_key else "off"
    _add(table, "admin routes", admin)
    try:
        choice = telemetry_choice(environ)
    except ValueError:
        telemetry = "not loaded: see the errors"
    else:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "per-signal endpoint"
        telemetry = (
            f"metrics {'on (GET /metrics)' if settings.metrics else 'off'}; traces "
            f"{'to ' + endpoint if choice.traces else 'off'}; OTLP metrics "
            f"{'to ' + endpoint if choice.otlp_metrics else 'off'}; service "
            f"{choice.service_name}"
        )
    _add(table, "telemetry", telemetry)
    discovery = (
        f"on, refreshed every {_seconds(settings.discovery_ttl_s)}, startup waits at most "
        f"{_seconds(settings.discovery_startup_timeout_s)}"
        if settings.discovery
        else "off"
    )
    _add(table, "discovery", discovery)
    _add(
        table,
        "default provider",
        settings.default_provider or "(unset)",
    )
    _add(table, "serve", f"{settings.host}:{settings.port}, {settings.workers} worker(s)")
    return table


def _storage(settings: Settings) -> str:
    if settings.redis_url:
        from xrouter.adapters.redis.connection import redacted

        where = f"Redis at {redacted(settings.redis_url)}"
    else:
        where = "no Redis"
    if settings.storage == "redis":
        return f"redis ({where}), kept {_seconds(settings.store_ttl_s)}"
    return (
        f"memory (one process, at most {settings.store_max_responses} responses, "
        f"kept {_seconds(settings.store_ttl_s)}); {where}"
    )


def _auth(settings: Settings) -> str:
    if settings.auth == "keys":
        if settings.redis_url:
            where = "in Redis"
        elif settings.keys_file:
            where = f"in {settings.keys_file} ({env_name('keys_file')})"
        else:
            where = f"nowhere: set {env_name('redis_url')} or {env_name('keys_file')}"
        upstream = "; upstream keys from the client (BYOK)" if settings.byok else ""
        return f"keys: gateway keys {where}, {env_name('auth_secret')} set ({MASK}){upstream}"
    if settings.auth == "byok":
        return "byok: each client's bearer token is sent upstream"
    return "none: anyone who reaches the port may call every model"


def _probes(probes: Sequence[ProbeResult]) -> Table:
    table = _table("target", "at", "result")
    for probe in probes:
        result = (
            Text(f"ok, {probe.detail}", style="green")
            if probe.ok
            else Text(probe.detail, style="red")
        )
        _add(table, probe.target, probe.where, result)
    return table


def _verdict(loaded: Loaded, probes: Sequence[ProbeResult]) -> Text:
    if loaded.errors:
        count = len(loaded.errors)
        return Text(
            f"{count} configuration error{'s' if count > 1 else ''} (listed on stderr).",
            style="bold red",
        )
    failed = [probe.target for probe in probes if not probe.ok]
    if failed:
        return Text(f"Valid, but not reachable: {', '.join(failed)}.", style="bold red")
    reached = "; every upstream answered" if probes else ""
    return Text(f"Configuration valid{reached}.", style="bold green")
