"""`xrouter usage`: the analytics summary as a table (or JSON).

With Redis analytics (XR_ANALYTICS=redis, or auto with XR_REDIS_URL) it reads the stream
itself, every worker's and instance's records; otherwise the records live in a running server's
memory and it asks that server (`GET /admin/usage`).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO, cast

import msgspec

from xrouter.application.usage_summary import GROUP_BY, GroupBy, UsageRow, UsageSummary, summary
from xrouter.entrypoints.cli.failure import (
    EXIT_BAD_ARGUMENTS,
    EXIT_FAILED,
    EXIT_OK,
    CommandFailed,
)
from xrouter.entrypoints.config import Settings

if TYPE_CHECKING:
    import httpx

# httpx and the Redis client are imported where they are used: the `xrouter` script builds
# this command's parser on every run, and `xrouter --version` must stay instant.

SERVER_TIMEOUT_S = 30.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class Since(msgspec.Struct, frozen=True):
    """A start time (unix seconds) and how the user wrote it."""

    at: float
    text: str


def since_parser(now: Callable[[], float] = time.time) -> Callable[[str], Since]:
    """An argparse `type`: `30m`, `1h`, `2d`, `90` (seconds), or an ISO date or time
    (`2026-11-29`, `2026-11-29T09:00`; UTC unless it names its offset)."""

    def parse(raw: str) -> Since:
        match = _DURATION.match(raw)
        if match is not None:
            seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
            if seconds <= 0:
                raise argparse.ArgumentTypeError(f"{raw!r} is not a positive duration")
            return Since(now() - seconds, raw)
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{raw!r} is neither a duration (30m, 1h, 2d) nor an ISO date (2026-11-29)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        at = moment.timestamp()
        if at >= now():
            raise argparse.ArgumentTypeError(f"{raw!r} is in the future")
        return Since(at, raw)

    return parse


def add_usage_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings
) -> None:
    usage = commands.add_parser(
        "usage",
        help="print the analytics summary (requests, tokens, latencies)",
        description="Summarize the analytics records: from the Redis stream when analytics "
        "go to Redis, otherwise from a running server (GET /admin/usage).",
    )
    usage.add_argument(
        "--since",
        type=since_parser(),
        default=None,
        metavar="WHEN",
        help="start: 30m, 1h, 2d, or an ISO date/time in UTC (default: 1h)",
    )
    usage.add_argument(
        "--by", choices=GROUP_BY, default="model", help="group rows by (default: model)"
    )
    usage.add_argument("--json", action="store_true", help="print the summary as JSON")
    usage.add_argument(
        "--url",
        default=None,
        help=f"server to ask when analytics are not on Redis (default {default_url(settings)})",
    )


def default_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def run_usage(
    settings: Settings,
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the summary on `out` (default stdout); a failure is one line on `err`."""
    out = out or sys.stdout
    err = err or sys.stderr
    since = cast(Since | None, args.since) or since_parser()("1h")
    by = cast(GroupBy, args.by)
    from xrouter.entrypoints.analytics_config import analytics_kind

    try:
        if args.url is None and analytics_kind(settings) == "redis":
            result = asyncio.run(_from_redis(settings, since, by))
        else:
            result = _from_server(args.url or default_url(settings), since, by, settings.admin_key)
    except CommandFailed as failed:
        print(f"xrouter usage: {failed.message}", file=err)
        return failed.exit_code
    if args.json:
        out.write(msgspec.json.format(msgspec.json.encode(result).decode()) + "\n")
    else:
        out.write(render(result, since.text))
    return EXIT_OK


async def _from_redis(settings: Settings, since: Since, by: GroupBy) -> UsageSummary:
    from xrouter.adapters.redis.connection import RedisUnavailable
    from xrouter.adapters.telemetry.analytics import RedisStream
    from xrouter.entrypoints.storage_config import build_shared_redis

    redis = build_shared_redis(settings)
    assert redis is not None  # analytics_kind is redis only with XR_REDIS_URL
    stream = RedisStream(redis, maxlen=settings.analytics_stream_maxlen)
    try:
        window = await stream.window(since.at)
    except RedisUnavailable as exc:
        raise CommandFailed(f"cannot read the analytics stream: {exc}") from None
    finally:
        await redis.aclose()
    return summary(window.records, by, since=since.at, sink="redis", cut=window.cut)


def _from_server(url: str, since: Since, by: GroupBy, admin_key: str | None) -> UsageSummary:
    """`admin_key`: XR_ADMIN_KEY, which the server's /admin routes need."""
    import httpx

    seconds = max(time.time() - since.at, 0.001)
    endpoint = url.rstrip("/") + "/admin/usage"
    try:
        answer = httpx.get(
            endpoint,
            params={"since": f"{seconds:.3f}", "by": by},
            timeout=SERVER_TIMEOUT_S,
            headers={"authorization": f"Bearer {admin_key}"} if admin_key else None,
        )
    except httpx.HTTPError as exc:
        raise CommandFailed(
            f"cannot reach the server at {url} ({type(exc).__name__}); start it with "
            "`xrouter serve`, or pass --url (with XR_REDIS_URL set, usage reads Redis instead)"
        ) from None
    if answer.status_code != 200:
        raise CommandFailed(
            f"{endpoint} answered {answer.status_code}: {_error_message(answer)}",
            EXIT_BAD_ARGUMENTS if answer.status_code == 400 else EXIT_FAILED,
        )
    try:
        return msgspec.json.decode(answer.content, type=UsageSummary)
    except msgspec.DecodeError as exc:
        raise CommandFailed(
            f"{endpoint} answered something that is not a usage summary: {exc}"
        ) from None


def _error_message(answer: httpx.Response) -> str:
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return answer.text[:200] or answer.reason_phrase
    return str(message)


# -- the table -------------------------------------------------------------------------------

_COLUMNS = (
    "requests",
    "failed",
    "input",
    "output",
    "cached",
    "reasoning",
    "ttft p50",
    "ttft p95",
    "total p50",
    "total p95",
)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def _cells(row: UsageRow) -> list[str]:
    return [
        row.key,
        f"{row.requests:,}",
        f"{row.failed:,}",
        f"{row.input_tokens:,}",
        f"{row.output_tokens:,}",
        f"{row.cached_tokens:,}",
        f"{row.reasoning_tokens:,}",
        _seconds(row.ttft_p50_s),
        _seconds(row.ttft_p95_s),
        _seconds(row.duration_p50_s),
        _seconds(row.duration_p95_s),
    ]


def render(result: UsageSummary, since_text: str) -> str:
    """A plain aligned table: keys left, figures right, a total line under a rule."""
    start = datetime.fromtimestamp(result.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"Usage since {start} ({since_text}), by {result.by}: {result.records:,} requests "
        f"({result.sink} analytics)"
    ]
    if result.cut:
        lines.append("Cut: more records than one read returns; the oldest were left out.")
    if result.dropped or result.failed:
        lines.append(
            f"This server dropped {result.dropped or 0:,} and failed to write "
            f"{result.failed or 0:,} records since it started (they are not counted here)."
        )
    if result.sink == "off":
        lines.append("Analytics are off on this server (XR_ANALYTICS=off): nothing is recorded.")
    table = [[result.by, *_COLUMNS], *(_cells(row) for row in result.rows)]
    total = _cells(result.total)
    widths = [max(len(cells[i]) for cells in [*table, total]) for i in range(len(total))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    lines.extend(line(cells) for cells in table)
    lines.append("-" * len(line(total)))
    lines.append(line(total))
    return "\n".join(lines) + "\n"
