"""The Litestar application factory."""

from __future__ import annotations

import gc
import logging
from typing import Any, TypeVar, get_args

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.events import BaseEventEmitterBackend
from litestar.exceptions import ImproperlyConfiguredException
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.plugins import PluginProtocol
from litestar.types import ASGIApp
from litestar.utils import join_paths

from xrouter import __version__
from xrouter.adapters.telemetry.genai_spans import ContentCapture
from xrouter.domain.events import StreamEvent
from xrouter.entrypoints.config import Settings
from xrouter.entrypoints.container import Container
from xrouter.entrypoints.http.admin_routes import build_admin_routes
from xrouter.entrypoints.http.allow import options_allow_middleware
from xrouter.entrypoints.http.api_page import (
    DOCS_PATH,
    installed_swagger_ui,
    swagger_assets_router,
    swagger_page,
)
from xrouter.entrypoints.http.background_routes import build_background_routes
from xrouter.entrypoints.http.codec import Codec
from xrouter.entrypoints.http.compaction_routes import build_compaction_routes
from xrouter.entrypoints.http.content_type import require_json_body
from xrouter.entrypoints.http.conversation_routes import build_conversation_routes
from xrouter.entrypoints.http.errors import exception_handlers
from xrouter.entrypoints.http.http_telemetry import HttpTelemetry
from xrouter.entrypoints.http.metrics_route import build_metrics_routes
from xrouter.entrypoints.http.openapi import WireTypesJsonPlugin, openapi_document_route
from xrouter.entrypoints.http.request_id import request_id_middleware
from xrouter.entrypoints.http.routes import UseCases, build_api_routes, build_probe_routes
from xrouter.entrypoints.http.shutdown import DRAIN_KEY, Drain, expose_drain
from xrouter.entrypoints.http.sse import SSEWriter
from xrouter.entrypoints.http.uploads import abandoned_upload_middleware
from xrouter.entrypoints.http.websocket_routes import SocketLimits, build_websocket_routes
from xrouter.entrypoints.logging_setup import install_secret_filter
from xrouter.entrypoints.runtime import start_services, stop_services
from xrouter.entrypoints.telemetry_runtime import observe_gateway_state

log = logging.getLogger("xrouter")
Handler = TypeVar("Handler", bound=BaseRouteHandler)


def quiet_http_client_logs() -> None:
    """httpx logs every upstream call at INFO; at gateway rates that line costs more than the
    call's own parsing, and the gateway logs failures itself. Keep the client's warnings."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The OTLP exporter logs every failed export, unthrottled; the span processor and the
    # metrics push log their own failures (at most once a minute, once an export interval).
    logging.getLogger("opentelemetry.exporter").setLevel(logging.CRITICAL)


class GatewayLitestar(Litestar):
    """Litestar without the plugins for models the gateway never declares.

    Litestar adds its pydantic and attrs plugins whenever those packages are installed (they
    come with other tools: the OpenAI SDK, trio); importing them cost about 0.15 s of the
    gateway's start (docs/benchmarks.md, issue 16). Every wire type here is a msgspec Struct,
    which the msgspec plugin Litestar always adds covers. If Litestar renames this hook, the
    override is simply not called: the start is slower, nothing else changes."""

    @staticmethod
    def _get_default_plugins(plugins: list[PluginProtocol]) -> list[PluginProtocol]:
        from litestar.plugins.core import MsgspecDIPlugin

        return [*plugins, MsgspecDIPlugin()]


class NoEventListeners(BaseEventEmitterBackend):
    """Litestar's event emitter for an app with no event listeners, as the gateway's is.

    Litestar's default one starts an anyio task group for its listeners at every startup,
    which imports anyio's asyncio backend: about 15 ms of the start, for nothing else the
    gateway uses (its event streams run on asyncio; issue 16, docs/benchmarks.md). Emitting
    an event raises as the default emitter does for an event no listener is registered for."""

    __slots__ = ()

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def emit(self, event_id: str, *args: Any, **kwargs: Any) -> None:
        raise ImproperlyConfiguredException(
            f"no event listeners are registered for event ID: {event_id}"
        )


def under_prefix(prefix: str, handlers: list[Handler]) -> list[Handler]:
    """`handlers`, each moved from its own paths to the same paths under `prefix`.

    Registered as they are rather than in a `Router(path=prefix)`: Litestar deep-copies a
    router when it is registered, every handler with it (about 13,000 `deepcopy` calls for the
    two API prefixes; building the app takes some 1.5 ms less; issue 16, docs/benchmarks.md).
    The routes and the OpenAPI document are the same (tests/test_openapi_agreement.py)."""
    for handler in handlers:
        handler.paths = {join_paths([prefix, path]) for path in handler.paths}
    return handlers


def return_freed_heap() -> None:
    """Give the operating system back the heap pages freed while the app was built.

    Loading the tokenizer allocates and frees tens of MiB (the vocabulary file, its lines, the
    Python dict tiktoken copies into its Rust core); glibc keeps freed pages for reuse, so they
    stay in the worker's resident memory for good. `malloc_trim` returns them once: about 1.1
    MiB of idle RSS for some 2 ms of the start, most of it importing ctypes (issue 16,
    docs/benchmarks.md). glibc only: elsewhere (musl, macOS) there is no such call, and
    nothing is done."""
    import ctypes  # here: only this call needs it

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def create_app(container: Container | None = None) -> ASGIApp:
    """The ASGI app: Litestar wrapped in the request-id middleware, outermost so that even
    routing errors (404, 405) carry `x-request-id`; its shutdown drain exposed to the server
    (`shutdown.py`)."""
    container = container or Container()
    litestar = create_litestar(container)
    telemetry = container.telemetry()
    capture = (
        ContentCapture(container.secret_masker()) if telemetry.choice.capture_content else None
    )
    http_telemetry = HttpTelemetry(telemetry.metrics, telemetry.tracer, capture=capture)
    return expose_drain(
        request_id_middleware(
            litestar, access_log=container.settings().access_log, telemetry=http_telemetry
        ),
        litestar.state[DRAIN_KEY],
    )


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS for `XR_CORS_ORIGINS`; none by default, so browsers refuse cross-origin calls."""
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        # SDKs send their own headers (x-stainless-*, openai-beta...): the origin is the gate.
        allow_headers=["*"],
        expose_headers=["x-request-id", "retry-after"],
        max_age=600,
    )


def create_litestar(container: Container | None = None) -> Litestar:
    """Build the Litestar app from `container` (a fresh one from the environment by default)."""
    container = container or Container()
    settings: Settings = container.settings()
    quiet_http_client_logs()
    masker = container.secret_masker()
    engine = container.engine()  # resolves the token counter etc. now, not on first request
    store = container.response_store()
    redis = container.shared_redis()
    telemetry = container.telemetry()
    analytics = container.analytics()
    observe_gateway_state(
        telemetry,
        inflight=lambda: engine.inflight,
        limiters=container.inflight().limiters,
        store=store,
        analytics=analytics,
    )
    use_cases = UseCases(
        create_response=container.create_response(),
        chat_completions=container.chat_completions(),
        get_response=container.get_response(),
        list_models=container.list_models(),
        count_input_tokens=container.count_input_tokens(),
        background=container.background_responses(),
    )
    codec = Codec()
    sse = SSEWriter(codec, get_args(StreamEvent))
    state = {"ready": False}
    drain = Drain(
        stop_ready=lambda: state.update(ready=False),
        shutdown=lambda: engine.shutdown(settings.shutdown_grace_s),
        grace_s=settings.shutdown_grace_s,
    )

    access = container.access()
    api_handlers = [
        handler
        for prefix in settings.api_prefixes
        for handler in under_prefix(
            prefix,
            [
                *build_api_routes(use_cases, codec, sse, gateway_keys=access is not None),
                *build_background_routes(
                    container.background_responses(), codec, gateway_keys=access is not None
                ),
                *build_conversation_routes(
                    container.conversations(), codec, gateway_keys=access is not None
                ),
                *build_compaction_routes(
                    container.compact_responses(), codec, gateway_keys=access is not None
                ),
                *build_websocket_routes(
                    use_cases.create_response,
                    codec,
                    masker,
                    SocketLimits.from_settings(settings),
                    gateway_keys=access is not None,
                ),
            ],
        )
    ]

    async def on_startup() -> None:
        await start_services(container, periodic_telemetry=True)
        state["ready"] = True
        # Objects built at startup live forever: keep the GC from rescanning them. Frozen
        # without a collection first: that full pass cost about 45 ms of the start to find
        # some 240 unreachable objects (31 KiB) that now stay (issue 16, docs/benchmarks.md).
        gc.freeze()
        # Requests leave almost no cyclic garbage, but the default first threshold (700
        # allocations) ran a young collection every request or so: about a tenth of a
        # worker's CPU at c=32. 10,000 keeps the collector for what cycles there are
        # (issue 16, docs/benchmarks.md "the request path").
        gc.set_threshold(10_000, 10, 10)
        return_freed_heap()
        if redis is not None and not await redis.ping():
            log.warning(
                "starting without Redis at %s: requests that need no stored state are served, "
                "the others get 503 until it answers",
                redis.where,
            )
        log.info(
            "xrouter %s ready; API under %s; storage: %s",
            __version__,
            ", ".join(settings.api_prefixes),
            settings.storage if redis is None else f"{settings.storage}, Redis at {redis.where}",
        )

    async def on_shutdown() -> None:
        state["ready"] = False
        await stop_services(container, settings.shutdown_grace_s, settings.shutdown_grace_s)

    swagger_ui = installed_swagger_ui() if settings.docs_enabled else None
    openapi = (
        OpenAPIConfig(
            title="XRouter",
            version=__version__,
            description="An LLM gateway speaking the OpenAI Responses API.",
            # Under /docs: mounted at "/", its catch-all would answer unknown root paths
            # with an HTML 404 instead of the error envelope.
            path=DOCS_PATH,
            render_plugins=[
                WireTypesJsonPlugin(path="/openapi.json"),
                swagger_page(swagger_ui),
            ],
        )
        if swagger_ui is not None
        else None
    )

    app = GatewayLitestar(
        route_handlers=[
            *api_handlers,
            *build_probe_routes(lambda: state["ready"], redis.ping if redis is not None else None),
            *build_metrics_routes(telemetry),
            *build_admin_routes(
                analytics, admin_key=settings.admin_key, keys=container.key_admin()
            ),
            *([openapi_document_route()] if settings.docs_enabled else []),
            *([swagger_assets_router(swagger_ui)] if swagger_ui is not None else []),
        ],
        exception_handlers=exception_handlers(masker),
        event_emitter_backend=NoEventListeners,
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        openapi_config=openapi,
        request_max_body_size=settings.max_body_bytes,
        # Litestar runs app middleware after routing: unknown routes still get 404/405.
        middleware=[require_json_body, abandoned_upload_middleware, options_allow_middleware],
        cors_config=cors_config(settings),
        state=State({DRAIN_KEY: drain}),
        debug=False,
        # Logging belongs to the host (`xrouter serve` configures it from XR_LOG_LEVEL, an
        # embedding application its own way); Litestar's default would replace the root
        # handlers and pin the root level at INFO.
        logging_config=None,
    )
    install_secret_filter(masker)
    return app
