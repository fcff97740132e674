"""What one upstream's transport is configured with: where it is, its timeouts, retries, limits,
and what the operator calls each of those settings.

Built in `entrypoints` from the provider's configuration, as part of its provider
specification (`provider_spec.py`); docs/providers.md documents each field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from xrouter.adapters.providers.body_limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_HEAD_BYTES,
)
from xrouter.adapters.providers.deployments import Deployment, Strategy

SettingNames = Callable[[str], str]
"""The name the operator sets a provider setting by, from the setting's field name:
"max_inflight" -> the variable or file key that sets it. Adapters call it to say in a message
which setting to change; how settings are spelled is the configuration's business, so the
callable is built in `entrypoints` and adapters never spell a name themselves."""


def field_names(name: str) -> str:
    """The SettingNames of a provider built without configuration (tests, embedding): each
    setting named by its field."""
    return name


@dataclass(frozen=True, slots=True)
class TransportSettings:
    base_url: str
    connect_timeout_s: float = 10.0
    """Opening a connection (TCP and TLS), to the upstream or to its proxy."""
    first_byte_timeout_s: float = 120.0
    """From handing the request over to the response's status line and headers. A non-stream
    answer starts only when it is complete, so this bounds its generation too."""
    read_timeout_s: float = 120.0
    """Longest silence between bytes of a body; a long stream lives while bytes flow."""
    write_timeout_s: float = 30.0
    """Longest stall while sending the request."""
    pool_timeout_s: float = 10.0
    """Waiting for a free connection when every pooled one is busy."""
    total_timeout_s: float = 600.0
    """Deadline for a whole non-stream call, retries and waits included."""
    max_retries: int = 2
    """Retries after the first try."""
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    max_inflight: int = 64
    """Generation calls open at once to this upstream (streams count until they end); shared
    by every worker and instance when the gateway runs on Redis."""
    queue_timeout_s: float = 30.0
    """How long a call over `max_inflight` waits, in arrival order, for a slot before it is
    refused (429 with Retry-After). 0 refuses it at once (fail-fast)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """A non-stream answer's body as received (compressed or not)."""
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    """One server-sent event of a stream."""
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    """What a compressed answer may inflate to (a stream: in total)."""
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    """An answer's status line and headers (and trailers)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Static headers on every call (attribution headers, for instance)."""
    verify: bool | str = True
    """TLS verification: True, or a CA bundle path. Never disabled silently. Used when the
    transport builds its own client (a provider that hands it one brings its own TLS)."""
    cert: tuple[str, str] | None = None
    """Client certificate and key files, for mutual TLS (as `verify`)."""
    max_retry_wait_s: float = 30.0
    """Longest wait an upstream's Retry-After may ask for; asking more ends the retries."""
    overload_retry_after_s: float = 1.0
    """Retry-After given to a caller rejected by the in-flight limit."""
    trust_env: bool = True
    """Honour HTTP(S)_PROXY / NO_PROXY and SSL_CERT_FILE / SSL_CERT_DIR from the environment."""
    setting_names: SettingNames = field_names
    """How the operator names this provider's settings (these fields, and `api_key`), for
    the messages that say which one to change."""
    deployments: tuple[Deployment, ...] = ()
    """Several places to send calls to instead of `base_url` (`deployments.py`); empty: one."""
    strategy: Strategy = "least_inflight"
    """How the deployment of each attempt is chosen."""
    cooldown_s: float = 30.0
    """How long a deployment whose attempt failed (connect error, 429, 5xx) is skipped."""
