"""The `xrouter` console script."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from xrouter import __version__
from xrouter.entrypoints.cli.ask import add_ask_parser, run_ask
from xrouter.entrypoints.cli.chat import add_chat_parser, run_chat
from xrouter.entrypoints.cli.config_check import add_config_parser, run_config
from xrouter.entrypoints.cli.keys import add_keys_parser, run_keys
from xrouter.entrypoints.cli.models import add_models_parser, run_models
from xrouter.entrypoints.cli.usage import add_usage_parser, run_usage
from xrouter.entrypoints.config import ConfigError, Settings, env_name


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xrouter", description="XRouter, an LLM gateway (OpenAI Responses API)."
    )
    parser.add_argument("--version", action="version", version=f"xrouter {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show a traceback when a command fails"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument(
        "--host", default=settings.host, help=f"bind address (XR_HOST, default {settings.host})"
    )
    serve.add_argument(
        "--port", type=int, default=settings.port, help=f"port (XR_PORT, default {settings.port})"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=settings.workers,
        help=f"worker processes (XR_WORKERS, default {settings.workers})",
    )
    add_usage_parser(commands, settings)
    add_keys_parser(commands)
    add_models_parser(commands)
    add_config_parser(commands)
    add_ask_parser(commands)
    add_chat_parser(commands)
    return parser


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    # imported here so `xrouter --version` stays instant
    from xrouter.entrypoints.logging_setup import serve_log_config
    from xrouter.entrypoints.optional_imports import litestar_extras_hidden

    # The server's modules (Litestar, uvicorn, the container's) make tens of thousands of
    # objects that live as long as the process: the collector would scan them some 50 times on
    # the way only to find them alive, about 10 ms of the start (issue 16, docs/benchmarks.md).
    # Paused while they load; `run_server` pauses it again while the app is built.
    gc.disable()
    try:
        with litestar_extras_hidden():  # the server's modules import Litestar first
            from xrouter.entrypoints.http.server import serve as run_server
    finally:
        gc.enable()

    with shared_metrics_dir(settings, workers) as settings:
        run_server(
            settings,
            host,
            port,
            workers,
            # A root handler in every worker for what is logged before the app is built.
            log_config=serve_log_config(settings.log_level, settings.log_format),
        )


@contextmanager
def shared_metrics_dir(settings: Settings, workers: int) -> Iterator[Settings]:
    """Several workers write their metrics into one directory, so that `/metrics` on any of
    them adds up all (adapters/telemetry/metric_files.py). Each worker reads its settings from
    the environment, so XR_METRICS_DIR goes there: a temporary directory, removed at exit,
    unless the operator named one (emptied first: a previous run's counters must not count).
    One worker, or metrics off: nothing to share."""
    if workers < 2 or not settings.metrics:
        yield settings
        return
    from xrouter.adapters.telemetry.metric_files import MetricFiles

    if settings.metrics_dir:
        MetricFiles(settings.metrics_dir).clear()
        yield settings
        return
    directory = tempfile.mkdtemp(prefix="xrouter-metrics-")
    os.environ[env_name("metrics_dir")] = directory
    try:
        yield dataclasses.replace(settings, metrics_dir=directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def workers_refusal(settings: Settings, workers: int) -> str | None:
    """Why `workers` processes cannot run on these settings, or None when they can.

    Each worker is a process with its own memory: on the memory store a response created on
    one worker is unknown to the others, so `previous_response_id` and `GET
    /v1/responses/{id}` would fail depending on which worker the connection lands on.
    """
    if workers > 1 and settings.storage == "memory":
        return (
            f"{workers} workers need shared storage: with XR_STORAGE=memory each worker keeps "
            "its own responses, so previous_response_id and GET /v1/responses/{id} would fail "
            "on the other workers. Set XR_STORAGE=redis and XR_REDIS_URL (docs/configuration.md), "
            "or run one worker."
        )
    return None


_LOOPBACK = ("127.", "::1", "localhost")


def open_door_warning(settings: Settings, host: str) -> str | None:
    """A loud line when the gateway listens beyond this machine with no gateway keys: anyone
    who reaches the port spends the operator's upstream keys."""
    if settings.auth == "keys" or host.startswith(_LOOPBACK):
        return None
    spender = "their own upstream keys" if settings.auth == "byok" else "your upstream keys"
    return (
        f"xrouter: WARNING: listening on {host} with XR_AUTH={settings.auth}: anyone who can "
        f"reach this port can call every model with {spender}. Set XR_AUTH=keys (and "
        "XR_AUTH_SECRET, see docs/security.md), or bind to 127.0.0.1 (--host / XR_HOST)."
    )


def default_provider_refusal(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """Why XR_DEFAULT_PROVIDER cannot be used (it names no provider this gateway could serve),
    said before any worker starts; None when it is unset or fine."""
    wanted = settings.default_provider
    if wanted is None:
        return None
    from xrouter.entrypoints.gigachat_config import load_gigachat_config
    from xrouter.entrypoints.provider_config import load_gateway_config

    config = load_gateway_config(environ, settings.config_file, settings.byok)
    names = {"local", *(provider.name for provider in config.providers)}
    if load_gigachat_config(environ) is not None:
        names.add("gigachat")
    if wanted in names:
        return None
    return (
        f"{env_name('default_provider')}={wanted!r} names no provider this gateway serves "
        f"(served: {', '.join(sorted(names))})."
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings_error: ConfigError | None = None
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        settings, settings_error = Settings(), exc
    parser = _parser(settings)
    args = parser.parse_args(argv)
    if args.command == "config":
        # It loads the configuration itself, to report every bad variable, not the first.
        return run_config(args)
    if settings_error is not None:
        print(f"xrouter: configuration error: {settings_error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        refusal = workers_refusal(settings, args.workers)
        if refusal is not None:
            print(f"xrouter: configuration error: {refusal}", file=sys.stderr)
            return 2
        from xrouter.entrypoints.telemetry_runtime import check_environment

        try:
            check_environment(os.environ)
            refusal = default_provider_refusal(settings, os.environ)
            if refusal is not None:
                raise ConfigError(refusal)
        except ConfigError as exc:
            print(f"xrouter: configuration error: {exc}", file=sys.stderr)
            return 2
        warning = open_door_warning(settings, args.host)
        if warning is not None:
            print(warning, file=sys.stderr)
        serve(settings, args.host, args.port, args.workers)
        return 0
    if args.command == "usage":
        return run_usage(settings, args)
    if args.command == "keys":
        return run_keys(settings, args)
    if args.command == "ask":
        return run_ask(settings, args)
    if args.command == "chat":
        return run_chat(settings, args)
    if args.command == "models":
        return run_models(settings, args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
