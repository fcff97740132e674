"""`xrouter keys create|list|show|revoke|rotate`: gateway key administration from a shell.

It works on the storage the gateway reads: Redis when XR_REDIS_URL is set, else the keys file
XR_KEYS_FILE (written atomically; a running server sees a change within a second). It needs
XR_AUTH_SECRET, the same as the server's, to hash new secrets. A secret is printed once, by
`create` and `rotate`; nothing else ever shows it (the storage has only its hash).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

import msgspec

from xrouter.entrypoints.cli.arguments import positive_int
from xrouter.entrypoints.cli.failure import (
    EXIT_BAD_ARGUMENTS,
    EXIT_FAILED,
    EXIT_OK,
    CommandFailed,
)
from xrouter.entrypoints.config import ConfigError, Settings

if TYPE_CHECKING:
    from xrouter.application.key_admin import KeyAdmin, KeyView

# The adapters and Redis are imported when the command runs: the `xrouter` script builds this
# parser on every run, and `xrouter --version` must stay instant.


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def expires_parser(now: Callable[[], float] = time.time) -> Callable[[str], float]:
    """An argparse `type` for --expires: `30d`, `12h`, `2w`, `3600` (seconds from now), or an
    ISO date or time in the future (`2027-01-01`, UTC unless it names its offset)."""

    def parse(raw: str) -> float:
        match = _DURATION.match(raw)
        if match is not None:
            seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
            if seconds <= 0:
                raise argparse.ArgumentTypeError(f"{raw!r} is not a positive duration")
            return now() + seconds
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{raw!r} is neither a duration (30d, 12h) nor an ISO date (2027-01-01)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if moment.timestamp() <= now():
            raise argparse.ArgumentTypeError(f"{raw!r} is in the past")
        return moment.timestamp()

    return parse


def _patterns(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON instead of text")
    keys = commands.add_parser(
        "keys",
        help="create, list, show, revoke and rotate gateway keys",
        description="Administer gateway keys in the storage the gateway reads (Redis with "
        "XR_REDIS_URL, else the file XR_KEYS_FILE). Needs XR_AUTH_SECRET.",
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", parents=[output], help="make a key (its secret is printed once)"
    )
    create.add_argument("name", help="who or what uses the key: ci, alice-laptop")
    create.add_argument(
        "--expires",
        type=expires_parser(),
        default=None,
        metavar="WHEN",
        help="30d, 12h, or an ISO date/time (UTC); default: never",
    )
    create.add_argument(
        "--models",
        type=_patterns,
        default=(),
        metavar="PATTERNS",
        help="comma-separated globs over provider/model and aliases (openai/*,fast); "
        "default: every model",
    )
    create.add_argument("--rpm", type=positive_int, help="requests per minute")
    create.add_argument("--tpm", type=positive_int, help="tokens per minute")
    create.add_argument("--concurrent", type=positive_int, help="requests at once")
    actions.add_parser("list", parents=[output], help="every key (never a secret or a hash)")
    for name, text in (
        ("show", "one key"),
        ("revoke", "stop a key for good, at once"),
        ("rotate", "a new secret for a key (printed once); the old one stops at once"),
    ):
        action = actions.add_parser(name, parents=[output], help=text)
        action.add_argument("id", help="the key's id, key_...")


def run_keys(
    settings: Settings,
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one `xrouter keys` action; a failure is one line on `err` (default stderr)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        text = asyncio.run(_run(settings, args))
    except CommandFailed as failed:
        print(f"xrouter keys: {failed.message}", file=err)
        return failed.exit_code
    out.write(text)
    return EXIT_OK


async def _run(settings: Settings, args: argparse.Namespace) -> str:
    from xrouter.adapters.keys.hashing import new_key_id, new_secret
    from xrouter.application.key_admin import KeyAdmin
    from xrouter.domain.errors import GatewayError, NotFound
    from xrouter.entrypoints.keys_config import build_admin_key_store, build_key_hasher
    from xrouter.entrypoints.storage_config import build_shared_redis

    try:
        hasher = build_key_hasher(settings)
    except ConfigError as exc:
        raise CommandFailed(f"configuration error: {exc}", EXIT_BAD_ARGUMENTS) from None
    redis = build_shared_redis(settings)
    try:
        store = build_admin_key_store(settings, redis)
        if store is None:
            raise CommandFailed(
                "configuration error: no shared key storage. Set XR_REDIS_URL (keys in Redis) "
                "or XR_KEYS_FILE (a TOML file the gateway reads), as the gateway has them.",
                EXIT_BAD_ARGUMENTS,
            )
        admin = KeyAdmin(store, hasher, time.time, new_secret, new_key_id)
        try:
            return await _action(admin, args)
        except NotFound as exc:
            raise CommandFailed(exc.message, EXIT_FAILED) from None
        except GatewayError as exc:
            exit_code = EXIT_FAILED if exc.status >= 500 else EXIT_BAD_ARGUMENTS
            raise CommandFailed(exc.message, exit_code) from None
    finally:
        if redis is not None:
            await redis.aclose()


async def _action(admin: KeyAdmin, args: argparse.Namespace) -> str:
    from xrouter.application.key_admin import key_view
    from xrouter.domain.keys import KeyLimits

    action: str = args.keys_command
    if action == "create":
        limits = KeyLimits(
            requests_per_minute=args.rpm, tokens_per_minute=args.tpm, concurrent=args.concurrent
        )
        key, secret = await admin.create(
            args.name, expires_at=args.expires, models=args.models, limits=limits
        )
        return _with_secret(key_view(key, admin.now()), secret, "Created", args.json)
    if action == "rotate":
        key, secret = await admin.rotate(args.id)
        return _with_secret(key_view(key, admin.now()), secret, "Rotated", args.json)
    if action == "list":
        keys = await admin.list_keys()
        views = [key_view(key, admin.now()) for key in keys]
        return _json({"object": "list", "data": views}) if args.json else render_table(views)
    key = await (admin.revoke(args.id) if action == "revoke" else admin.show(args.id))
    view = key_view(key, admin.now())
    return _json(view) if args.json else render_key(view)


def _json(value: object) -> str:
    return msgspec.json.format(msgspec.json.encode(value).decode()) + "\n"


def _with_secret(view: KeyView, secret: str, done: str, as_json: bool) -> str:
    """The one place a secret is written out."""
    if as_json:
        return _json({"key": view, "secret": secret})
    return (
        f'{done} key {view.id} ("{view.name}"). Its secret, shown this once:\n\n'
        f"    {secret}\n\n"
        "Store it now: XRouter keeps only its hash, so it cannot be shown again (a lost key is "
        f"rotated: xrouter keys rotate {view.id}).\n\n" + render_key(view)
    )


# -- text ------------------------------------------------------------------------------------


def _moment(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _limits(view: KeyView) -> str:
    limits = view.limits
    parts = [
        f"{value} {unit}"
        for value, unit in (
            (limits.requests_per_minute, "rpm"),
            (limits.tokens_per_minute, "tpm"),
            (limits.concurrent, "concurrent"),
        )
        if value is not None
    ]
    return ", ".join(parts) or "-"


def _row(view: KeyView) -> list[str]:
    return [
        view.id,
        view.name,
        view.display + "...",
        view.status,
        _moment(view.created_at),
        _moment(view.expires_at),
        _moment(view.revoked_at),
        ",".join(view.models) or "*",
        _limits(view),
    ]


_COLUMNS = ("id", "name", "display", "status", "created", "expires", "revoked", "models", "limits")


def render_table(views: Sequence[KeyView]) -> str:
    if not views:
        return "No gateway keys yet: xrouter keys create NAME\n"
    table = [list(_COLUMNS), *(_row(view) for view in views)]
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    return "\n".join(lines) + "\n"


def render_key(view: KeyView) -> str:
    values = _row(view)
    width = max(len(column) for column in _COLUMNS)
    return "".join(
        f"{column.ljust(width)}  {value}\n" for column, value in zip(_COLUMNS, values, strict=True)
    )
