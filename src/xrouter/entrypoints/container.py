"""The composition root: one declarative container that builds everything from Settings.

Tests override providers (a fake provider, a recording lifecycle listener) the usual
dependency-injector way: `container.lifecycle_listener.override(...)`.
"""

from __future__ import annotations

import os

from xrouter.adapters.providers.inflight import TrackedLimiters
from xrouter.adapters.providers.local import LocalProvider
from xrouter.adapters.system import RandomIds, SystemClock
from xrouter.adapters.telemetry.lifecycle import NullLifecycleListener
from xrouter.adapters.telemetry.outcomes import TelemetryOutcomes
from xrouter.adapters.telemetry.span_events import SpanEventsListener, combine_listeners
from xrouter.adapters.tokenizers.by_model import ModelTokenCounters
from xrouter.adapters.tokenizers.tiktoken_counter import TiktokenCounter
from xrouter.application.background_responses import BackgroundResponses
from xrouter.application.chat_completions import ChatCompletions
from xrouter.application.compaction import CompactResponses
from xrouter.application.conversations import Conversations
from xrouter.application.count_input_tokens import CountInputTokens
from xrouter.application.create_response import CreateResponse
from xrouter.application.engine import EngineSettings, ExecutionEngine
from xrouter.application.fallbacks import FallbackChains
from xrouter.application.get_response import GetResponse
from xrouter.application.list_models import ListModels
from xrouter.application.ports import LifecycleListener
from xrouter.application.registry import ModelRegistry
from xrouter.domain.secrets import SecretRegistry
from xrouter.entrypoints.access_config import build_access
from xrouter.entrypoints.analytics_config import build_analytics
from xrouter.entrypoints.background_config import (
    background_settings,
    build_background,
    build_event_log,
)
from xrouter.entrypoints.compaction_config import build_compaction_items
from xrouter.entrypoints.config import Settings, env_name
from xrouter.entrypoints.conversation_config import (
    build_conversation_store,
    conversation_limits,
)
from xrouter.entrypoints.keys_config import build_key_admin, build_key_hasher, build_key_store
from xrouter.entrypoints.limits_config import build_key_limiter
from xrouter.entrypoints.optional_imports import optional_imports_hidden
from xrouter.entrypoints.provider_config import load_gateway_config
from xrouter.entrypoints.provider_factory import build_providers
from xrouter.entrypoints.secret_sources import configured_secrets
from xrouter.entrypoints.storage_config import (
    build_catalog_cache,
    build_inflight_factory,
    build_response_store,
    build_shared_redis,
)
from xrouter.entrypoints.telemetry_config import telemetry_choice
from xrouter.entrypoints.telemetry_runtime import Telemetry

# Two libraries import optional extras whenever those are installed, for features this gateway
# never uses (issue 16, docs/benchmarks.md: about 0.15 s of every start):
# - dependency-injector: werkzeug (Flask's LocalProxy, for `wire`) and pydantic
#   (`Configuration.from_pydantic`); werkzeug comes with flask-swagger-ui, pydantic with the
#   OpenAI SDK;
# - httpx: its command line (click, pygments, rich); imported here first, for the providers.
# dependency-injector also imports PyYAML for `Configuration.from_yaml`, unused here too.
with optional_imports_hidden("werkzeug", "pydantic", "pydantic_settings", "yaml"):
    from dependency_injector import containers, providers
with optional_imports_hidden("pygments"):
    import httpx  # noqa: F401


def _listeners(
    configured: LifecycleListener, span_events: SpanEventsListener, telemetry: Telemetry
) -> LifecycleListener:
    """The configured listener (a test's recorder), plus the span events when tracing."""
    if telemetry.tracer is None:
        return configured
    return combine_listeners(configured, span_events)


class Container(containers.DeclarativeContainer):
    settings = providers.Singleton(Settings.from_env)

    environ = providers.Object(os.environ)
    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(RandomIds)
    token_counter = providers.Singleton(
        TiktokenCounter,
        max_chars=settings.provided.tokenizer_max_chars,
        max_chars_setting=env_name("tokenizer_max_chars"),
    )
    # POST /v1/responses/input_tokens: each model's own encoding, o200k loaded on first use.
    model_token_counters = providers.Singleton(ModelTokenCounters, default=token_counter)
    # None without XR_REDIS_URL; shared by the store, the catalog cache and in-flight leases.
    shared_redis = providers.Singleton(build_shared_redis, settings=settings)
    response_store = providers.Singleton(
        build_response_store, settings=settings, redis=shared_redis
    )
    lifecycle_listener = providers.Singleton(NullLifecycleListener)
    # Metrics (XR_METRICS), traces and OTLP export (OTEL_*): docs/observability.md.
    telemetry = providers.Singleton(
        Telemetry,
        settings=settings,
        choice=providers.Singleton(telemetry_choice, environ=environ),
        environ=environ,
    )
    span_events = providers.Singleton(SpanEventsListener)
    # Every request's terminal outcome, kept for analytics (docs/observability.md).
    analytics = providers.Singleton(build_analytics, settings=settings, redis=shared_redis)
    outcome_sink = providers.Singleton(
        TelemetryOutcomes,
        metrics=telemetry.provided.metrics,
        sinks=providers.List(analytics),
    )

    local_provider = providers.Singleton(
        LocalProvider, slow_delay_s=settings.provided.local_slow_delay_s
    )
    gateway_config = providers.Singleton(
        load_gateway_config,
        environ=environ,
        config_file=settings.provided.config_file,
        byok=settings.provided.byok,
    )
    # Every configured secret, plus the tokens fetched at run time (GigaChat's OAuth), masked
    # by value wherever text leaves the process: errors, stored responses, logs.
    secret_registry = providers.Singleton(
        SecretRegistry,
        providers.Singleton(
            configured_secrets, settings=settings, gateway=gateway_config, environ=environ
        ),
    )
    secret_masker = providers.Singleton(SecretRegistry.live, secret_registry)
    # Each provider's in-flight limit, shared by every worker and instance through Redis
    # (leases of XR_INFLIGHT_LEASE_S); each process's own without Redis.
    inflight = providers.Singleton(
        TrackedLimiters,
        providers.Singleton(
            build_inflight_factory,
            redis=shared_redis,
            lease_s=settings.provided.inflight_lease_s,
            setting_names=env_name,
        ),
    )
    model_providers = providers.Singleton(
        build_providers,
        local=local_provider,
        config=gateway_config,
        byok=settings.provided.byok,
        environ=environ,
        secrets=secret_registry,
        inflight=inflight,
    )
    # Discovery shared by every worker and instance through Redis; local without Redis.
    catalog_cache = providers.Singleton(build_catalog_cache, redis=shared_redis)
    catalog = providers.Singleton(
        ModelRegistry,
        providers=model_providers,
        aliases=gateway_config.provided.aliases,
        cache=catalog_cache,
        setting_names=env_name,
        default_provider=settings.provided.default_provider,
    )

    # Gateway keys (XR_AUTH=keys): where they live, how secrets are hashed, per-key limits.
    key_store = providers.Singleton(build_key_store, settings=settings, redis=shared_redis)
    key_hasher = providers.Singleton(build_key_hasher, settings=settings)
    key_admin = providers.Singleton(build_key_admin, settings=settings, store=key_store)
    key_limiter = providers.Singleton(
        build_key_limiter, redis=shared_redis, lease_s=settings.provided.inflight_lease_s
    )
    access = providers.Singleton(
        build_access,
        settings=settings,
        clock=clock,
        store=key_store.provider,
        hasher=key_hasher.provider,
        limiter=key_limiter.provider,
    )

    engine_settings = providers.Singleton(
        EngineSettings,
        max_inflight=settings.provided.max_inflight,
        generation_timeout_s=settings.provided.generation_timeout_s,
        setting_names=env_name,
    )
    # Compaction items sealed with XR_COMPACTION_KEY (docs/compaction.md).
    compaction_items = providers.Singleton(build_compaction_items, settings=settings)
    # Conversations (`/v1/conversations`, `conversation` on a response): stored as responses.
    conversation_store = providers.Singleton(
        build_conversation_store, settings=settings, redis=shared_redis
    )
    conversations = providers.Singleton(
        Conversations,
        store=conversation_store,
        ids=ids,
        clock=clock,
        access=access,
        limits=providers.Singleton(conversation_limits, settings=settings),
    )
    # Background responses: their events for replay and their cancels, next to the store.
    event_log = providers.Singleton(build_event_log, settings=settings, redis=shared_redis)
    background_config = providers.Singleton(background_settings, settings=settings)
    background = providers.Singleton(
        build_background,
        store=response_store,
        events=event_log,
        ids=ids,
        settings=background_config,
    )
    fallback_chains = providers.Singleton(
        FallbackChains,
        catalog=catalog,
        access=access,
        chains=gateway_config.provided.fallbacks,
        context_chains=gateway_config.provided.context_fallbacks,
    )
    engine = providers.Singleton(
        ExecutionEngine,
        catalog=catalog,
        counter=token_counter,
        store=response_store,
        clock=clock,
        ids=ids,
        lifecycle_listener=providers.Callable(
            _listeners, lifecycle_listener, span_events, telemetry
        ),
        outcome_sink=outcome_sink,
        settings=engine_settings,
        masker=secret_masker,
        access=access,
        background=background,
        compaction=compaction_items,
        conversations=conversations,
        fallbacks=fallback_chains,
    )

    create_response = providers.Singleton(CreateResponse, engine=engine)
    chat_completions = providers.Singleton(ChatCompletions, create_response=create_response)
    get_response = providers.Singleton(
        GetResponse, store=response_store, running=engine.provided.running, access=access
    )
    list_models = providers.Singleton(ListModels, catalog=catalog, access=access)
    background_responses = providers.Singleton(
        BackgroundResponses,
        store=response_store,
        events=event_log,
        cancels=event_log,
        running=engine.provided.running,
        settings=background_config,
        access=access,
        setting_names=env_name,
    )
    count_input_tokens = providers.Singleton(
        CountInputTokens,
        catalog=catalog,
        counter=model_token_counters,
        store=response_store,
        access=access,
        conversations=conversations,
        compaction=compaction_items,
    )
    compact_responses = providers.Singleton(
        CompactResponses,
        create_response=create_response,
        catalog=catalog,
        store=response_store,
        items=compaction_items,
        clock=clock,
        ids=ids,
        access=access,
    )
