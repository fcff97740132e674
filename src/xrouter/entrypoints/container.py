"""The composition root: one declarative container that builds everything from Settings.

Tests override providers (a fake provider, a recording lifecycle listener) the usual
dependency-injector way: `container.lifecycle_listener.override(...)`.
"""

from __future__ import annotations

import os

from dependency_injector import containers, providers

from xrouter.adapters.providers.local import LocalProvider
from xrouter.adapters.redis.catalog_cache import build_catalog_cache
from xrouter.adapters.redis.inflight import build_inflight_factory
from xrouter.adapters.system import RandomIds, SystemClock
from xrouter.adapters.telemetry.lifecycle import NullLifecycleListener
from xrouter.adapters.telemetry.usage import InMemoryUsageLedger
from xrouter.adapters.tokenizers.tiktoken_counter import TiktokenCounter
from xrouter.application.chat_completions import ChatCompletions
from xrouter.application.create_response import CreateResponse
from xrouter.application.engine import EngineSettings, ExecutionEngine
from xrouter.application.get_response import GetResponse
from xrouter.application.list_models import ListModels
from xrouter.application.registry import ModelRegistry
from xrouter.domain.secrets import SecretRegistry
from xrouter.entrypoints.config import Settings, env_name
from xrouter.entrypoints.provider_config import load_gateway_config
from xrouter.entrypoints.provider_factory import build_providers
from xrouter.entrypoints.secret_sources import configured_secrets
from xrouter.entrypoints.storage_config import build_response_store, build_shared_redis


class Container(containers.DeclarativeContainer):
    settings = providers.Singleton(Settings.from_env)

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(RandomIds)
    token_counter = providers.Singleton(
        TiktokenCounter,
        max_chars=settings.provided.tokenizer_max_chars,
        max_chars_setting=env_name("tokenizer_max_chars"),
    )
    # None without XR_REDIS_URL; shared by the store, the catalog cache and in-flight leases.
    shared_redis = providers.Singleton(build_shared_redis, settings=settings)
    response_store = providers.Singleton(
        build_response_store, settings=settings, redis=shared_redis
    )
    lifecycle_listener = providers.Singleton(NullLifecycleListener)
    usage_sink = providers.Singleton(InMemoryUsageLedger)

    local_provider = providers.Singleton(
        LocalProvider, slow_delay_s=settings.provided.local_slow_delay_s
    )
    environ = providers.Object(os.environ)
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
        build_inflight_factory,
        redis=shared_redis,
        lease_s=settings.provided.inflight_lease_s,
        setting_names=env_name,
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
    )

    engine_settings = providers.Singleton(
        EngineSettings,
        max_inflight=settings.provided.max_inflight,
        generation_timeout_s=settings.provided.generation_timeout_s,
        setting_names=env_name,
    )
    engine = providers.Singleton(
        ExecutionEngine,
        catalog=catalog,
        counter=token_counter,
        store=response_store,
        clock=clock,
        ids=ids,
        lifecycle_listener=lifecycle_listener,
        usage_sink=usage_sink,
        settings=engine_settings,
        masker=secret_masker,
    )

    create_response = providers.Singleton(CreateResponse, engine=engine)
    chat_completions = providers.Singleton(ChatCompletions, create_response=create_response)
    get_response = providers.Singleton(
        GetResponse, store=response_store, running=engine.provided.running
    )
    list_models = providers.Singleton(ListModels, catalog=catalog)
