"""What starts and stops around a container's work, in one order for every host: the HTTP app's
lifespan (entrypoints/http/app.py) and the command line's gateway (entrypoints/cli/runtime.py).

Start: discovery (waiting up to XR_DISCOVERY_STARTUP_TIMEOUT_S), telemetry's periodic work
(metrics files, OTLP metrics push) when the host asks for it, the analytics queue, gateway
keys' access control when configured.

Stop: running generations first (given their grace), then discovery and the providers, the
stores, analytics (after the engine, whose last outcomes are queued; before Redis, where the
queue drains), telemetry, access control and Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xrouter.entrypoints.container import Container


async def start_services(container: Container, *, periodic_telemetry: bool) -> None:
    """Start what serves requests. `periodic_telemetry`: a server's worker writes metrics
    files and pushes OTLP metrics on a timer; a command does not (its files would add to a
    server's /metrics; traces and the final OTLP push still happen at `stop_services`)."""
    settings = container.settings()
    if settings.discovery:
        await container.catalog().start_discovery(
            settings.discovery_ttl_s, settings.discovery_startup_timeout_s
        )
    if periodic_telemetry:
        await container.telemetry().start()
    await container.analytics().start()
    access = container.access()
    if access is not None:
        await access.start()


async def stop_services(container: Container, grace_s: float, analytics_grace_s: float) -> None:
    """Stop in the order of the module docstring: generations get `grace_s` to finish, the
    analytics queue `analytics_grace_s` to drain."""
    await container.engine().shutdown(grace_s)
    catalog = container.catalog()
    await catalog.aclose()
    for provider in catalog.providers:
        await provider.aclose()
    await container.response_store().aclose()
    await container.conversation_store().aclose()
    await container.analytics().aclose(analytics_grace_s)
    await container.telemetry().aclose()
    access = container.access()
    if access is not None:
        await access.aclose()
    redis = container.shared_redis()
    if redis is not None:
        await redis.aclose()
