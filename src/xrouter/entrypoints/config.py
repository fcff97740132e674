"""Configuration from the environment. Every variable has the `XR_` prefix and a default that
serves the built-in local provider with in-memory storage: no keys, no Redis, no network.

docs/configuration.md lists every variable; `Settings` is the source it is written from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from xrouter.entrypoints.env_fields import (
    ConfigError as ConfigError,  # re-exported: callers catch it from here
)
from xrouter.entrypoints.env_fields import (
    masked_repr,
    one_of,
    parse_bool,
    positive,
    setting,
    show_default,
)


def _prefixes(raw: str) -> tuple[str, ...]:
    prefixes = tuple("/" + p.strip().strip("/") for p in raw.split(",") if p.strip())
    if not prefixes:
        raise ValueError("expected at least one prefix, such as /v1")
    return prefixes


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"expected origins such as https://app.example.com, got {origin!r}")
    return origins


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return port


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = setting("127.0.0.1", str, "Address `xrouter serve` binds to.")
    port: int = setting(8000, _port, "Port `xrouter serve` listens on.")
    workers: int = setting(1, positive(int), "Worker processes for `xrouter serve`.")
    header_timeout_s: float = setting(
        10.0,
        positive(float),
        "Longest a client may take to send a request's line and headers; then 408 and close.",
    )
    keepalive_timeout_s: float = setting(
        15.0, positive(float), "Longest an idle keep-alive connection stays open between requests."
    )
    max_header_bytes: int = setting(
        65_536, positive(int), "Largest request line + headers accepted; larger gets 431 and close."
    )
    max_header_count: int = setting(
        100, positive(int), "Most request headers accepted; more get 431 and close."
    )
    max_connections: int = setting(
        1000,
        positive(int),
        "Open client connections per worker; more are answered 503 and closed at once.",
    )
    ws_max_lifetime_s: float = setting(
        3600.0,
        positive(float),
        "Longest a WebSocket connection to /v1/responses lives; then the error "
        "`websocket_connection_limit_reached` and close (a running response finishes first).",
    )
    ws_max_queued: int = setting(
        16,
        positive(int),
        "`response.create` messages a WebSocket connection may queue behind the one in flight; "
        "one more closes it (1008).",
    )
    ws_idle_timeout_s: float = setting(
        600.0,
        positive(float),
        "Longest a WebSocket connection stays open with no response running and no message.",
    )
    ws_max_remembered_bytes: int = setting(
        32 * 1024 * 1024,
        positive(int),
        "Most bytes of its conversation a WebSocket connection remembers for `store: false` "
        "continuation; a longer one is forgotten (continuing it: `previous_response_not_found`).",
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        _origins,
        "Comma-separated browser origins allowed to call the API (CORS); `*` for any. Unset: none.",
    )
    log_level: str = setting("INFO", _log_level, "Log level: DEBUG, INFO, WARNING, ERROR.")
    log_format: str = setting(
        "text",
        one_of("text", "json"),
        "Log line format of `xrouter serve`: `text`, or `json` (one JSON object per line).",
    )
    access_log: bool = setting(
        True, parse_bool, "One INFO line per request on logger `xrouter.access`."
    )
    metrics: bool = setting(
        True, parse_bool, "Record metrics and serve them at `GET /metrics` (Prometheus text)."
    )
    metrics_dir: str | None = setting(
        None,
        str,
        "Directory where each worker writes its metrics for `/metrics` to add up; "
        "`xrouter serve --workers N` makes a temporary one when unset.",
    )
    metrics_flush_s: float = setting(
        1.0,
        positive(float),
        "How often each worker writes its metrics to XR_METRICS_DIR (other workers' figures "
        "on `/metrics` are at most this old).",
    )
    api_prefixes: tuple[str, ...] = setting(
        ("/v1", "/api/v1"), _prefixes, "Comma-separated path prefixes the API is served under."
    )
    max_body_bytes: int = setting(
        10 * 1024 * 1024, positive(int), "Largest request body accepted; larger gets 413."
    )
    max_inflight: int = setting(
        256, positive(int), "Requests admitted at once per worker; more get 429 + Retry-After."
    )
    generation_timeout_s: float = setting(
        900.0,
        positive(float),
        "Total deadline of one generation, streamed or not, client present or gone; then 504.",
    )
    shutdown_grace_s: float = setting(
        10.0, float, "On shutdown, how long running generations may take to finish."
    )
    store_max_responses: int = setting(
        10_000,
        positive(int),
        "Responses the in-memory store keeps at most (least recently used evicted first).",
    )
    storage: str = setting(
        "memory",
        one_of("memory", "redis"),
        "Where responses are stored: `memory` (one process) or `redis` (shared by every "
        "worker and instance; needs XR_REDIS_URL).",
    )
    store_ttl_s: float = setting(
        2_592_000.0,
        positive(float),
        "How long a stored response is kept (default 30 days), in either store.",
    )
    store_max_bytes: int = setting(
        268_435_456,
        positive(int),
        "Bytes of encoded responses the in-memory store keeps (least recently used evicted first).",
    )
    store_max_record_bytes: int = setting(
        16_777_216,
        positive(int),
        "Largest encoded response (with its input items) stored; a larger one is delivered "
        "but not stored, and a warning says so.",
    )
    conversation_max_items: int = setting(
        10_000,
        positive(int),
        "Items one conversation holds at most (`/v1/conversations`); adding more is a 400, "
        "and a turn that would pass it is not added (a warning says so).",
    )
    conversation_max_item_bytes: int = setting(
        4_194_304,
        positive(int),
        "Largest conversation item, as JSON; a larger one is a 400 (or, from a turn, not "
        "added, with a warning).",
    )
    conversations_max: int = setting(
        10_000,
        positive(int),
        "Conversations the in-memory store keeps at most (least recently used evicted first); "
        "they expire XR_STORE_TTL_S after their last write, in either store.",
    )
    conversations_max_bytes: int = setting(
        268_435_456,
        positive(int),
        "Bytes of encoded conversations and items the in-memory store keeps (least recently "
        "used evicted first).",
    )
    background_events_max: int = setting(
        10_000,
        positive(int),
        "Events of one background response kept for replay (`GET /v1/responses/{id}?stream="
        "true`); later ones are dropped, but the terminal event, and a warning says so.",
    )
    background_events_max_bytes: int = setting(
        8_388_608,
        positive(int),
        "Bytes of encoded events of one background response kept for replay (as above).",
    )
    background_events_ttl_s: float = setting(
        86_400.0,
        positive(float),
        "How long a background response's events (and a cancel asked for it) are kept after "
        "its last event, in memory or on Redis.",
    )
    background_poll_s: float = setting(
        0.25,
        positive(float),
        "How often a worker generating a background response looks for a cancel asked of "
        "another worker, and a replay of another worker's events looks for new ones.",
    )
    background_cancel_wait_s: float = setting(
        10.0,
        positive(float),
        "How long `POST /v1/responses/{id}/cancel` waits for the generating worker to confirm "
        "the cancel; then 504 `cancel_not_confirmed` (poll the response).",
    )
    redis_url: str | None = setting(
        None,
        str,
        "Redis to share state on: `redis://[:password@]host:port/db`, `rediss://...` (TLS) "
        "or `unix:///path/to/socket`. Its password never reaches a log.",
        secret=True,
    )
    redis_cluster: bool = setting(
        False, parse_bool, "XR_REDIS_URL names a node of a Redis Cluster (cluster client)."
    )
    redis_ca_file: str | None = setting(
        None, str, "CA bundle to verify a `rediss://` server with (default: the system's)."
    )
    redis_pool_size: int = setting(
        64, positive(int), "Connections each worker may open to Redis (per node for a cluster)."
    )
    redis_timeout_s: float = setting(
        0.5,
        positive(float),
        "Longest one Redis command may take (connect included) before it counts as a failure.",
    )
    redis_breaker_s: float = setting(
        2.0,
        positive(float),
        "After a Redis failure, how long calls skip Redis (503 or not stored) before one probes "
        "it again, so a dead Redis costs no wait per request.",
    )
    analytics: str = setting(
        "auto",
        one_of("auto", "memory", "redis", "off"),
        "Where each request's analytics record goes: `redis` (a capped Redis Stream, needs "
        "XR_REDIS_URL), `memory` (a ring per process), `auto` (redis when XR_REDIS_URL is "
        "set, else memory) or `off` (no records kept, none counted as dropped).",
    )
    analytics_queue_size: int = setting(
        10_000,
        positive(int),
        "Analytics records waiting to be written, per worker; when full, new ones are dropped "
        "and counted (a request never waits for analytics).",
    )
    analytics_max_records: int = setting(
        50_000, positive(int), "Records the in-memory analytics ring keeps (oldest go first)."
    )
    analytics_stream_maxlen: int = setting(
        1_000_000,
        positive(int),
        "Entries the Redis analytics stream `xrouter:analytics` keeps (`XADD MAXLEN ~`: about).",
    )
    inflight_lease_s: float = setting(
        30.0,
        positive(float),
        "A shared in-flight slot's lease, renewed while its request runs: a dead worker's "
        "slots free themselves after this.",
    )
    local_slow_delay_s: float = setting(
        0.2, float, "Pause before each chunk after the first of the `local/slow` model."
    )
    docs_enabled: bool = setting(True, parse_bool, "Serve /openapi.json and the /docs page.")
    config_file: str | None = setting(
        None, str, "TOML file with `[providers.<name>]` tables and `[aliases]` (docs/providers.md)."
    )
    byok: bool = setting(
        False,
        parse_bool,
        "Forward the client's bearer token upstream instead of configured keys (401 without one).",
    )
    auth: str = setting(
        "none",
        one_of("none", "keys", "byok"),
        "Who may call the gateway: `none` (anyone who reaches it), `keys` (a gateway key "
        "`xr-...` in `Authorization: Bearer`; with XR_BYOK=true the upstream key goes in "
        "`X-Upstream-Authorization`), or `byok` (the same as XR_BYOK=true). docs/security.md.",
    )
    auth_secret: str | None = setting(
        None,
        str,
        "Server secret gateway keys are hashed with (HMAC-SHA256, at least 16 characters); "
        "needed by XR_AUTH=keys and `xrouter keys`, the same on every instance.",
        secret=True,
    )
    admin_key: str | None = setting(
        None,
        str,
        "Bearer token of the `/admin` routes (at least 16 characters); unset, they answer 404.",
        secret=True,
    )
    compaction_key: str | None = setting(
        None,
        str,
        "Secret the gateway's compaction items are sealed with (AES-256-GCM, key derived with "
        "HKDF; at least 16 characters), the same on every worker and instance. Unset: derived "
        "from XR_AUTH_SECRET when that is set, else a random key per process, so items do not "
        "survive a restart or reach another worker. "
        "docs/compaction.md.",
        secret=True,
    )
    keys_file: str | None = setting(
        None,
        str,
        "TOML file of gateway keys (hashes only) when there is no XR_REDIS_URL; the server "
        "re-reads it when it changes, `xrouter keys` writes it.",
    )
    default_provider: str | None = setting(
        None,
        str,
        "Provider that serves a bare model name (no `provider/` prefix) that no provider lists, "
        "or several including it; unset, those are 404 `model_not_found`. docs/providers.md.",
    )
    default_model: str | None = setting(
        None,
        str,
        "Model `xrouter ask` and `xrouter chat` use when `-m` is not given (e.g. `local/echo`); "
        "the server never reads it.",
    )
    discovery: bool = setting(True, parse_bool, "Discover each upstream's models from its /models.")
    discovery_ttl_s: float = setting(
        600.0, positive(float), "How long discovered models are cached before a refresh."
    )
    discovery_startup_timeout_s: float = setting(
        2.0, float, "Longest startup waits for the first discovery; it goes on in the background."
    )
    tokenizer_max_chars: int = setting(
        1_000_000,
        positive(int),
        "Characters of one text handed to tiktoken; the rest is estimated (usage stays bounded).",
    )

    def __post_init__(self) -> None:
        if self.storage == "redis" and not self.redis_url:
            raise ConfigError(
                "XR_STORAGE=redis needs XR_REDIS_URL (for example redis://127.0.0.1:6379/0)."
            )
        if self.analytics == "redis" and not self.redis_url:
            raise ConfigError(
                "XR_ANALYTICS=redis needs XR_REDIS_URL (for example redis://127.0.0.1:6379/0)."
            )
        self._check_auth()

    def _check_auth(self) -> None:
        """XR_AUTH and the older XR_BYOK agree afterwards: XR_AUTH=byok turns XR_BYOK on, and
        XR_BYOK=true with XR_AUTH=none is XR_AUTH=byok; XR_AUTH=keys keeps XR_BYOK as it is
        (true: gateway key plus an upstream key in X-Upstream-Authorization)."""
        if self.auth == "byok" and not self.byok:
            object.__setattr__(self, "byok", True)
        elif self.auth == "none" and self.byok:
            object.__setattr__(self, "auth", "byok")
        if self.auth == "keys" and not self.auth_secret:
            raise ConfigError(
                "XR_AUTH=keys needs XR_AUTH_SECRET, the server secret gateway keys are hashed "
                "with: a random value of at least 16 characters, the same on every instance "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')."
            )
        for name in ("auth_secret", "admin_key", "compaction_key"):
            value = getattr(self, name)
            if value is not None and len(value) < 16:
                raise ConfigError(
                    f"{env_name(name)} is {len(value)} characters long; use a random value of "
                    "at least 16 (python -c 'import secrets; print(secrets.token_urlsafe(32))')."
                )
        if self.keys_file and self.redis_url:
            raise ConfigError(
                "XR_KEYS_FILE and XR_REDIS_URL are both set: with Redis the gateway keys live "
                "in Redis and the file would be ignored. Unset XR_KEYS_FILE (move its keys with "
                "`xrouter keys create`), or unset XR_REDIS_URL."
            )

    def __repr__(self) -> str:
        return masked_repr(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = env_name(f.name)
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not valid: {exc}.") from None
        return cls(**values)


def env_name(field_name: str) -> str:
    return "XR_" + field_name.upper()


def documented_variables() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting; docs/configuration.md matches it."""
    rows = []
    for f in fields(Settings):
        rows.append((env_name(f.name), show_default(f.default), f.metadata["doc"]))
    return rows
