"""`xrouter config check [--probe]`: the configuration as `xrouter serve` would load it, shown
and checked, without starting anything.

It reads the environment and the TOML file with the gateway's own loaders and reports every
provider (kind, base URL, whether a key is set, never the key: it shows `***`; protocol,
limits), the deployments, aliases, storage, auth mode and telemetry. Every problem is one line
on stderr naming the variable (or the TOML table and field) to fix; every bad `XR_` value is
reported, not only the first, and each loader reports its own even when another failed.
`--probe` then asks each upstream's `/models` and Redis (config_probe.py) and reports the
latency or the error; the tables are config_report.py's.

Exit codes: 0 valid (and every probe answered), 2 a configuration error, 1 a probe failed.
Everything written passes through the secret masker (domain/secrets.py) of every key the
environment holds, so a value that slipped into a message still never reaches the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from xrouter.entrypoints.cli.failure import EXIT_BAD_ARGUMENTS, EXIT_FAILED, EXIT_OK
from xrouter.entrypoints.config import ConfigError, Settings, env_name

if TYPE_CHECKING:
    from xrouter.domain.secrets import SecretMasker
    from xrouter.entrypoints.cli.config_probe import ProbeResult
    from xrouter.entrypoints.gigachat_config import GigaChatConfig
    from xrouter.entrypoints.provider_config import GatewayConfig

# rich, the adapters and the loaders of providers are imported when the command runs: the
# `xrouter` script builds this parser on every run, and `xrouter --version` must stay instant.

PROBE_TIMEOUT_S = 10.0
_SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD)$")


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"{raw!r} must be above 0 and at most 600 seconds")
    return value


def add_config_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser(
        "config",
        help="check the configuration (environment and TOML file)",
        description="Work with the gateway's configuration.",
    )
    actions = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="load and show the configuration as `serve` would; every error names its variable",
        description="Load the environment and XR_CONFIG_FILE as `xrouter serve` does, show "
        "providers, deployments, aliases, storage, auth and telemetry, and name the variable "
        "behind every error. Exit 0 valid, 2 configuration error, 1 a probe failed.",
    )
    check.add_argument(
        "--probe",
        action="store_true",
        help="also contact each upstream's /models (and GigaChat's OAuth) and show the latency",
    )
    check.add_argument(
        "--timeout",
        type=_seconds,
        default=PROBE_TIMEOUT_S,
        metavar="S",
        help=f"longest each probe may take, in seconds (default {PROBE_TIMEOUT_S:g})",
    )


def run_config(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run `xrouter config check`; the report goes to `out`, each problem is a line on `err`."""
    environ = os.environ if environ is None else environ
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        return asyncio.run(_check(environ, args.probe, args.timeout, out, err))
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        # Only the type: the message of an unexpected error may hold anything.
        print(
            f"xrouter config check: unexpected {type(exc).__name__} (run `xrouter --debug "
            "config check` for the traceback)",
            file=err,
        )
        return EXIT_FAILED


# -- loading ---------------------------------------------------------------------------------


@dataclass
class Loaded:
    """What the loaders gave, and every problem they found (each names what to fix)."""

    settings: Settings | None = None
    config_file: str | None = None
    """XR_CONFIG_FILE, known even when other settings are not valid."""
    gateway: GatewayConfig | None = None
    gigachat: GigaChatConfig | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    key_envs: dict[str, list[str]] = field(default_factory=dict)
    """Provider -> the variables its TOML table's `api_key_env` fields name."""


class _Records(logging.Handler):
    """The loaders' log records (a provider skipped, disabled), kept for the report."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def load(environ: Mapping[str, str]) -> Loaded:
    """Every loader `xrouter serve` runs, each on its own, collecting their errors."""
    loaded = Loaded()
    values = _settings_values(environ, loaded)
    if not loaded.errors:
        try:
            loaded.settings = Settings(**values)
        except ConfigError as exc:
            loaded.errors.append(str(exc))
    config_file: str | None = values.get("config_file")
    loaded.config_file = config_file
    byok = bool(values.get("byok")) or values.get("auth") == "byok"
    if config_file:
        loaded.key_envs = _key_envs(config_file)
    _load_providers(environ, config_file, byok, loaded)
    _load_gigachat(environ, byok, loaded)
    _check_telemetry(environ, loaded)
    _check_serving(environ, loaded)
    loaded.warnings.extend(_unknown_variables(environ))
    return loaded


def _settings_values(environ: Mapping[str, str], loaded: Loaded) -> dict[str, Any]:
    """The gateway's settings parsed one by one (Settings.from_env stops at the first bad
    one), with the same message for each bad value."""
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(Settings):
        name = env_name(spec.name)
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[spec.name] = spec.metadata["parse"](raw)
        except ValueError as exc:
            shown = "***" if spec.metadata.get("secret") else repr(raw)
            loaded.errors.append(f"{name}={shown} is not valid: {exc}.")
    return values


def _key_envs(config_file: str) -> dict[str, list[str]]:
    """The variables each provider table's `api_key_env` (its own and its deployments')
    names; an unreadable file is the loader's error to report, so nothing here."""
    try:
        data = tomllib.loads(Path(config_file).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}
    found: dict[str, list[str]] = {}
    tables = data.get("providers")
    for name, table in (tables if isinstance(tables, dict) else {}).items():
        if not isinstance(table, dict):
            continue
        names = [str(table["api_key_env"])] if "api_key_env" in table else []
        deployments = table.get("deployments")
        for deployment in deployments if isinstance(deployments, list) else []:
            if isinstance(deployment, dict) and "api_key_env" in deployment:
                names.append(str(deployment["api_key_env"]))
        found[str(name).lower()] = names
    return found


def _load_providers(
    environ: Mapping[str, str], config_file: str | None, byok: bool, loaded: Loaded
) -> None:
    from xrouter.entrypoints.provider_config import load_gateway_config

    records = _Records()
    config_log = logging.getLogger("xrouter.config")
    level = config_log.level
    config_log.addHandler(records)
    config_log.setLevel(logging.INFO)  # a disabled provider is an INFO line: a note here
    config_log.propagate = False  # kept for the report, not printed as a log line too
    try:
        loaded.gateway = load_gateway_config(environ, config_file, byok)
    except ConfigError as exc:
        loaded.errors.append(str(exc))
    finally:
        config_log.removeHandler(records)
        config_log.setLevel(level)
        config_log.propagate = True
    for record in records.records:
        if record.levelno < logging.WARNING:
            loaded.notes.append(record.getMessage())
            continue
        message = record.getMessage()
        name = record.args[0] if isinstance(record.args, tuple) and record.args else None
        unset = [v for v in loaded.key_envs.get(str(name), []) if not environ.get(v)]
        if unset:
            message += (
                f" Its [providers.{name}] api_key_env names {', '.join(unset)}, which "
                f"{'is' if len(unset) == 1 else 'are'} not set in the environment."
            )
        loaded.errors.append(message)


def _load_gigachat(environ: Mapping[str, str], byok: bool, loaded: Loaded) -> None:
    from xrouter.entrypoints.gigachat_config import load_gigachat_config

    try:
        config = load_gigachat_config(environ)
    except ConfigError as exc:
        loaded.errors.append(str(exc))
        return
    if config is None:
        return
    if config.enabled is False:
        loaded.notes.append("provider gigachat is disabled (XR_GIGACHAT_ENABLED=false)")
        return
    if not config.has_credentials and not byok:
        loaded.errors.append(
            "provider gigachat is not served: it has no credentials. Set XR_GIGACHAT_AUTH_KEY "
            "(or XR_GIGACHAT_ACCESS_TOKEN, or XR_GIGACHAT_USER and XR_GIGACHAT_PASSWORD), or "
            "XR_BYOK=true."
        )
        return
    loaded.gigachat = config


def _check_telemetry(environ: Mapping[str, str], loaded: Loaded) -> None:
    from xrouter.entrypoints.telemetry_runtime import check_environment

    try:
        check_environment(environ)
    except ConfigError as exc:
        loaded.errors.append(str(exc))


def _check_serving(environ: Mapping[str, str], loaded: Loaded) -> None:
    """What `xrouter serve` refuses before starting, on settings that loaded."""
    from xrouter.entrypoints.cli.main import workers_refusal

    settings = loaded.settings
    if settings is None:
        return
    refusal = workers_refusal(settings, settings.workers)
    if refusal is not None:
        loaded.errors.append(refusal)
    wanted = settings.default_provider
    if wanted is not None and loaded.gateway is not None:
        names = _served_names(loaded)
        if wanted not in names:
            loaded.errors.append(
                f"{env_name('default_provider')}={wanted!r} names no provider this gateway "
                f"serves (served: {', '.join(names)})."
            )


def _served_names(loaded: Loaded) -> list[str]:
    names = ["local"]
    if loaded.gateway is not None:
        names.extend(provider.name for provider in loaded.gateway.providers)
    if loaded.gigachat is not None:
        names.append("gigachat")
    return names


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """XR_ variables nothing reads (a typo leaves a setting at its default, silently)."""
    from xrouter.entrypoints.gigachat_config import PREFIX as GIGACHAT
    from xrouter.entrypoints.provider_config import setting_fields

    known = {env_name(spec.name) for spec in dataclasses.fields(Settings)} | {"XR_ALIASES"}
    fields_ = "|".join(spec.name.upper() for spec in setting_fields())
    provider_variable = re.compile(rf"^XR_[A-Z][A-Z0-9_]*?_({fields_})$")
    return [
        f"{name} is not a setting XRouter reads (a typo?); it is ignored."
        for name in sorted(environ)
        if name.startswith("XR_")
        and name not in known
        and not name.startswith(GIGACHAT)
        and not provider_variable.match(name)
    ]


# -- masking ---------------------------------------------------------------------------------


def _masker(environ: Mapping[str, str], loaded: Loaded) -> SecretMasker:
    """Every secret the configuration holds: the declared ones, and, in case a loader failed
    before declaring them, every variable whose name says it is one or that `api_key_env`
    names."""
    from xrouter.domain.secrets import SecretMasker
    from xrouter.entrypoints.secret_sources import secret_values

    named = {v for names in loaded.key_envs.values() for v in names}
    values = [
        value
        for name, value in environ.items()
        if name in named or (name.startswith("XR_") and _SECRET_NAME.search(name))
    ]
    values.extend(environ.get("XR_REDIS_URL", "").split())
    for config in (
        loaded.settings,
        loaded.gigachat,
        *(loaded.gateway.providers if loaded.gateway else ()),
    ):
        values.extend(secret_values(config))
    for provider in loaded.gateway.providers if loaded.gateway else ():
        values.extend(d.api_key for d in provider.deployments if d.api_key)
    if loaded.settings is not None and loaded.settings.redis_url:
        from urllib.parse import unquote, urlsplit

        password = urlsplit(loaded.settings.redis_url).password
        if password:
            values.append(unquote(password))
    return SecretMasker(values)


# -- the report ------------------------------------------------------------------------------


async def _check(
    environ: Mapping[str, str], probe: bool, timeout_s: float, out: TextIO, err: TextIO
) -> int:
    loaded = load(environ)
    masker = _masker(environ, loaded)
    probes: list[ProbeResult] = []
    if probe:
        from xrouter.entrypoints.cli.config_probe import probe_all

        # What the adapters log while probing (Redis refusing, a retry) is in the probes'
        # results already: kept off the terminal, where it would cut through the report.
        gateway_log = logging.getLogger("xrouter")
        quiet = _Records()
        gateway_log.addHandler(quiet)
        gateway_log.propagate = False
        try:
            probes = await probe_all(loaded, timeout_s, err)
        finally:
            gateway_log.removeHandler(quiet)
            gateway_log.propagate = True
    from xrouter.entrypoints.cli.config_report import report
    from xrouter.entrypoints.cli.terminal import render

    text = render(report(loaded, probes, environ), out)
    out.write(masker.mask(text))
    for problem in loaded.errors:
        print(masker.mask(f"xrouter config check: error: {problem}"), file=err)
    for warning in loaded.warnings:
        print(masker.mask(f"xrouter config check: warning: {warning}"), file=err)
    if loaded.errors:
        return EXIT_BAD_ARGUMENTS
    if any(not result.ok for result in probes):
        return EXIT_FAILED
    return EXIT_OK
