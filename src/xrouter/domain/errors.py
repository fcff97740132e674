"""The error taxonomy. Each error knows its HTTP status and OpenAI envelope fields, so the
HTTP layer maps any of them with one rule and never leaks internals.

Messages say what was wrong and what to do: they are read by people debugging a client.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error that has a defined answer for the client."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    upstream_status: int | None = None
    """The upstream's HTTP status when this error maps one (for provider-specific advice)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class InvalidRequest(GatewayError):
    """The request is malformed or breaks a rule of the API (400)."""

    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ModelNotAllowed(GatewayError):
    """The caller's gateway key may not use this model (403)."""

    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"

    def __init__(self, model: str, key_name: str) -> None:
        super().__init__(
            f"The key '{key_name}' may not use the model '{model}'. GET /v1/models lists the "
            "models this key may use; ask the gateway's operator for access to others.",
            param="model",
        )


class RateLimited(GatewayError):
    """A gateway key is over one of its limits (429, with Retry-After and the
    x-ratelimit-* headers)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or is not served by this gateway. "
            "GET /v1/models lists the models you can use.",
            param="model",
        )


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class PaymentRequired(GatewayError):
    """The upstream account is out of credits (402): retrying will not help."""

    status = 402
    type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamRateLimited(GatewayError):
    """The upstream rate-limited us (429); `retry_after` carries its hint when it gave one."""

    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class Overloaded(GatewayError):
    """Too many requests in flight; the client should retry after `retry_after` seconds."""

    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class StorageUnavailable(GatewayError):
    """The response store cannot answer now (Redis down or too slow): the request needs
    stored state, so it cannot be served. Stateless requests are not affected (503)."""

    status = 503
    type = "server_error"
    code = "storage_unavailable"


class ProviderError(GatewayError):
    """The upstream provider failed (502). The message names the provider, never a secret."""

    status = 502
    type = "server_error"
    code = "provider_error"


class ProviderTimeout(GatewayError):
    status = 504
    type = "server_error"
    code = "provider_timeout"

    def __init__(self, message: str, *, phase: str | None = None) -> None:
        super().__init__(message)
        self.phase = phase
        """The gateway's limit that ran out (connect, write, pool, first_byte, idle, total);
        None when the upstream itself reported the timeout."""


class ClientDisconnected(GatewayError):
    """The client went away before generation started; nobody reads this answer."""

    status = 499
    type = "invalid_request_error"
    code = "client_disconnected"


class ServerShuttingDown(GatewayError):
    """The gateway is shutting down (503): a new request is refused, and a generation still
    running when the shutdown grace ends is failed. Retry against another instance."""

    status = 503
    type = "server_error"
    code = "server_shutting_down"


class CancelNotConfirmed(GatewayError):
    """A background response's cancel was asked for, but the worker generating it did not
    confirm it in time (504): it may still end cancelled; the client polls."""

    status = 504
    type = "server_error"
    code = "cancel_not_confirmed"
