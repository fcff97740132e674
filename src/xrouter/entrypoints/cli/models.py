"""`xrouter models [--json] [--provider P]`: the model catalog this configuration serves.

The catalog is the HTTP app's own (the container's ModelRegistry over the configured
providers), discovered the way `xrouter serve` discovers at startup: every provider's `/models`
at once, waited for at most XR_DISCOVERY_STARTUP_TIMEOUT_S (a spinner runs meanwhile on
stderr); a provider that fails or is slower keeps what is configured for it, and a note on
stderr says so. Each row says where it came from: `built-in` (the local provider),
`configured` (known without asking the upstream: the provider's MODELS, a kind's static
catalog), `discovered` (the upstream listed it) or `alias`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

import msgspec

from xrouter.entrypoints.cli.failure import (
    EXIT_BAD_ARGUMENTS,
    EXIT_FAILED,
    EXIT_OK,
    CommandFailed,
)
from xrouter.entrypoints.config import ConfigError, Settings, env_name

if TYPE_CHECKING:
    from xrouter.application.registry import ModelRegistry
    from xrouter.domain.models import ModelInfo

# rich, the container and the adapters are imported when the command runs: the `xrouter`
# script builds this parser on every run, and `xrouter --version` must stay instant.


class ModelRow(msgspec.Struct, frozen=True, omit_defaults=True):
    """One model as `--json` prints it: GET /v1/models' entry plus where it comes from."""

    id: str
    object: str
    created: int
    owned_by: str
    provider: str
    source: str
    """`built-in`, `configured`, `discovered` or `alias`."""
    context_length: int | None = None
    """Tokens, when the catalog knows it; left out otherwise."""


class Catalog(msgspec.Struct, frozen=True):
    rows: list[ModelRow]
    providers: list[str]
    """Every provider served, listed models or not (for --provider's error)."""


class _Notes(logging.Handler):
    """The gateway's warnings while the command runs (a provider not served, discovery that
    failed), kept to be printed as notes once the spinner is gone, instead of log lines
    written through it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def add_models_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser(
        "models",
        help="list the models this configuration serves",
        description="The model catalog: the local provider's models, each configured "
        "provider's configured and discovered models, and the aliases. Discovery waits at most "
        "XR_DISCOVERY_STARTUP_TIMEOUT_S; XR_DISCOVERY=false lists configured models only.",
    )
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.add_argument(
        "--provider", metavar="P", help="only the models of provider P (its aliases too)"
    )


def run_models(
    settings: Settings,
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run `xrouter models`; a failure is one line on `err` (default stderr)."""
    out = out or sys.stdout
    err = err or sys.stderr
    notes = _Notes()
    gateway_log = logging.getLogger("xrouter")
    gateway_log.addHandler(notes)
    try:
        catalog = asyncio.run(_catalog(settings, err))
        rows = _only(catalog, args.provider)
    except CommandFailed as failed:
        _print_notes(notes, err)
        print(f"xrouter models: {failed.message}", file=err)
        return failed.exit_code
    finally:
        gateway_log.removeHandler(notes)
    _print_notes(notes, err)
    if args.json:
        data = {"object": "list", "data": rows}
        out.write(msgspec.json.format(msgspec.json.encode(data).decode()) + "\n")
    else:
        _print_table(rows, out)
    return EXIT_OK


def _print_notes(notes: _Notes, err: TextIO) -> None:
    for line in notes.lines:
        print(f"xrouter models: note: {line}", file=err)
    if any("discovery for" in line for line in notes.lines):
        print(
            "xrouter models: note: `xrouter config check --probe` shows why an upstream "
            "did not answer",
            file=err,
        )


def _only(catalog: Catalog, provider: str | None) -> list[ModelRow]:
    if provider is None:
        return catalog.rows
    if provider not in catalog.providers:
        raise CommandFailed(
            f"--provider {provider!r} names no provider this configuration serves "
            f"(served: {', '.join(catalog.providers)}).",
            EXIT_BAD_ARGUMENTS,
        )
    return [row for row in catalog.rows if row.provider == provider]


async def _catalog(settings: Settings, err: TextIO) -> Catalog:
    from dependency_injector import providers
    from rich.console import Console

    from xrouter.entrypoints.container import Container

    container = Container()
    container.settings.override(providers.Object(settings))
    try:
        registry: ModelRegistry = container.catalog()
    except ConfigError as exc:
        raise CommandFailed(f"configuration error: {exc}", EXIT_BAD_ARGUMENTS) from None
    except ValueError as exc:  # XR_DEFAULT_PROVIDER naming no provider
        raise CommandFailed(f"configuration error: {exc}.", EXIT_BAD_ARGUMENTS) from None
    try:
        if settings.discovery:
            status = Console(file=err).status(
                f"Discovering models (at most {settings.discovery_startup_timeout_s:g} s, "
                f"{env_name('discovery_startup_timeout_s')})..."
            )
            with status:
                await registry.start_discovery(
                    settings.discovery_ttl_s, settings.discovery_startup_timeout_s
                )
        models = await registry.list_models()
        static = {info.id for p in registry.providers for info in p.static_models()}
        aliases: Mapping[str, str] = container.gateway_config().aliases
        return Catalog(
            rows=[_row(info, static, aliases) for info in models],
            providers=[p.name for p in registry.providers],
        )
    except Exception as exc:
        from xrouter.domain.errors import GatewayError

        if isinstance(exc, GatewayError):
            raise CommandFailed(exc.message, EXIT_FAILED) from None
        raise
    finally:
        await registry.aclose()
        for provider in registry.providers:
            await provider.aclose()
        redis = container.shared_redis()
        if redis is not None:
            await redis.aclose()


def _row(info: ModelInfo, static: set[str], aliases: Mapping[str, str]) -> ModelRow:
    target = aliases.get(info.id)
    if target is not None:
        source = "alias"
        provider = target.partition("/")[0]
    else:
        provider = info.id.partition("/")[0]
        if provider == "local":
            source = "built-in"
        else:
            source = "configured" if info.id in static else "discovered"
    return ModelRow(
        id=info.id,
        object=info.object,
        created=info.created,
        owned_by=info.owned_by,
        provider=provider,
        source=source,
        context_length=info.context_length,
    )


def _print_table(rows: Sequence[ModelRow], out: TextIO) -> None:
    from rich.table import Table
    from rich.text import Text

    from xrouter.entrypoints.cli.terminal import render

    if not rows:
        out.write("No models.\n")
        return
    with_context = any(row.context_length is not None for row in rows)
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("provider", no_wrap=True)
    if with_context:
        table.add_column("context", justify="right", no_wrap=True)
    table.add_column("source", no_wrap=True)
    for row in rows:
        cells = [row.id, row.provider]
        if with_context:
            cells.append(f"{row.context_length:,}" if row.context_length is not None else "-")
        cells.append(row.source)
        table.add_row(*(Text(cell) for cell in cells))  # an id is never read as markup
    out.write(render([table], out))
