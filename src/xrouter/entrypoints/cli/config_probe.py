"""`xrouter config check --probe`: each upstream asked for its `/models`, as the gateway would
ask it, and Redis for a PING.

Every served upstream is built from its configuration the way `serve` builds it, but with no
retries (a probe reports the first answer, and stays short); a provider with deployments is
probed once per deployment, each with its own URL and key; GigaChat's `/models` goes through
its OAuth token source, so its credentials are tried too. Every probe runs at once, bounded by
`--timeout`, with a progress bar on stderr; the result is the latency and how many models, or
the error as the gateway would report it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from xrouter.entrypoints.config import ConfigError, Settings

if TYPE_CHECKING:
    from xrouter.application.ports import Provider
    from xrouter.entrypoints.cli.config_check import Loaded
    from xrouter.entrypoints.provider_config import ProviderConfig


@dataclass(frozen=True, slots=True)
class ProbeResult:
    target: str
    """Provider name, `name #n` for a deployment, or `redis`."""
    where: str
    ok: bool
    detail: str
    """`123 ms, 4 models`, or the error."""


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    where: str
    build: Callable[[], Provider | None]
    """Built inside the probe, so that a build failure is that probe's error."""


def _targets(loaded: Loaded) -> list[_Target]:
    """Each served upstream (each deployment on its own), built as the gateway builds it but
    with no retries: a probe reports the first answer."""
    from xrouter.entrypoints.gigachat_config import build_gigachat
    from xrouter.entrypoints.provider_config import provider_spec
    from xrouter.entrypoints.provider_factory import build_provider

    byok = loaded.settings.byok if loaded.settings is not None else False
    targets: list[_Target] = []

    def upstream(config: ProviderConfig) -> Callable[[], Provider | None]:
        return lambda: build_provider(provider_spec(config, byok))

    for provider in loaded.gateway.providers if loaded.gateway is not None else ():
        once = dataclasses.replace(provider, max_retries=0)
        if not provider.deployments:
            targets.append(_Target(provider.name, str(provider.base_url), upstream(once)))
            continue
        for number, deployment in enumerate(provider.deployments, start=1):
            alone = dataclasses.replace(
                once,
                base_url=deployment.base_url,
                api_key=deployment.api_key or provider.api_key,
                deployments=(),
            )
            targets.append(
                _Target(f"{provider.name} #{number}", deployment.base_url, upstream(alone))
            )
    gigachat = loaded.gigachat
    if gigachat is not None:
        once_giga = dataclasses.replace(gigachat, max_retries=0)
        targets.append(
            _Target("gigachat", gigachat.base_url, lambda: build_gigachat(once_giga, byok))
        )
    return targets


async def probe_all(loaded: Loaded, timeout_s: float, err: TextIO) -> list[ProbeResult]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    targets = _targets(loaded)
    redis_url = loaded.settings.redis_url if loaded.settings is not None else None
    total = len(targets) + (1 if redis_url else 0)
    if total == 0:
        return []
    progress = Progress(
        TextColumn("Probing upstreams"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=Console(file=err),
        transient=True,
    )
    with progress:
        task = progress.add_task("", total=total)

        async def one(target: _Target) -> ProbeResult:
            result = await _probe(target, timeout_s)
            progress.update(task, advance=1, description=target.name)
            return result

        async def redis() -> ProbeResult:
            assert loaded.settings is not None
            result = await _probe_redis(loaded.settings, timeout_s)
            progress.update(task, advance=1, description="redis")
            return result

        jobs = [one(target) for target in targets]
        if redis_url:
            jobs.append(redis())
        return list(await asyncio.gather(*jobs))


async def _probe(target: _Target, timeout_s: float) -> ProbeResult:
    from xrouter.domain.errors import GatewayError

    provider: Provider | None = None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            provider = target.build()
            if provider is None:
                return ProbeResult(target.name, target.where, False, "not built (not served)")
            models = await provider.list_models()
        elapsed_ms = (time.perf_counter() - started) * 1000
        detail = f"{elapsed_ms:.0f} ms, {len(models)} models"
        return ProbeResult(target.name, target.where, True, detail)
    except TimeoutError:
        return ProbeResult(
            target.name, target.where, False, f"no answer within {timeout_s:g} s (--timeout)"
        )
    except GatewayError as exc:
        return ProbeResult(target.name, target.where, False, exc.message)
    except ConfigError as exc:
        return ProbeResult(target.name, target.where, False, str(exc))
    except Exception as exc:  # an upstream's oddity must not hide the other probes
        return ProbeResult(target.name, target.where, False, f"{type(exc).__name__}: {exc}")
    finally:
        if provider is not None:
            await provider.aclose()


async def _probe_redis(settings: Settings, timeout_s: float) -> ProbeResult:
    from urllib.parse import urlsplit

    from xrouter.entrypoints.storage_config import build_shared_redis

    redis = build_shared_redis(settings)
    assert redis is not None and settings.redis_url is not None
    where = urlsplit(settings.redis_url).netloc.rpartition("@")[2] or settings.redis_url
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            answered = await redis.ping()
        elapsed_ms = (time.perf_counter() - started) * 1000
        if answered:
            return ProbeResult("redis", where, True, f"{elapsed_ms:.0f} ms")
        return ProbeResult("redis", where, False, f"no answer to PING at {redis.where}")
    except TimeoutError:
        return ProbeResult("redis", where, False, f"no answer within {timeout_s:g} s (--timeout)")
    finally:
        await redis.aclose()
