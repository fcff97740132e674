"""Every error leaves in the OpenAI envelope `{"error": {message, type, param, code}}`.

Internal errors are logged with their stack trace and the request id; the client gets the
request id and nothing else about the failure.

Every envelope is masked by value before it is encoded: the gateway's secrets (configured and
fetched at run time, `SecretMasker`) and the request's own bearer token, so an upstream that
echoes a credential into an error never hands it to the client.
"""

from __future__ import annotations

import logging
import math
import traceback
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap
from msgspec import Struct

from xrouter.domain.errors import GatewayError
from xrouter.domain.events import ErrorBody
from xrouter.domain.secrets import SecretMasker
from xrouter.entrypoints.http.request_id import request_id_of

log = logging.getLogger("xrouter.http")

AnyRequest = Request[Any, Any, Any]

_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
}


class ErrorEnvelope(Struct):
    """The OpenAI error envelope, for every error the gateway answers."""

    error: ErrorBody


def envelope(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def gateway_error_response(error: GatewayError) -> Response[object]:
    headers = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
    return Response(
        envelope(error.message, error.type, error.param, error.code),
        status_code=error.status,
        headers=headers,
        media_type="application/json",
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for anything else."""
    if authorization is not None and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def exception_handlers(masker: SecretMasker) -> ExceptionHandlersMap:
    """Litestar's exception handlers, each masking with `masker` plus the request's token."""

    def masker_for(request: AnyRequest) -> SecretMasker:
        return masker.including(bearer_token(request.headers.get("authorization")))

    def on_gateway_error(request: AnyRequest, exc: GatewayError) -> Response[object]:
        return gateway_error_response(masker_for(request).mask_error(exc))

    def on_http_exception(request: AnyRequest, exc: HTTPException) -> Response[object]:
        return handle_http_exception(request, exc, masker_for(request))

    def on_internal_error(request: AnyRequest, exc: Exception) -> Response[object]:
        return handle_internal_error(request, exc, masker_for(request))

    return {
        GatewayError: on_gateway_error,
        HTTPException: on_http_exception,
        Exception: on_internal_error,
    }


def handle_http_exception(
    request: AnyRequest, exc: HTTPException, masker: SecretMasker
) -> Response[object]:
    status = exc.status_code
    if status == 404:
        message = f"Unknown route: {request.method} {request.url.path}. See /docs for the API."
        code: str | None = "unknown_route"
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
        code = "method_not_allowed"
    elif status == 413:
        message = (
            "The request body is larger than this gateway accepts "
            "(XR_MAX_BODY_BYTES). Send less input, or raise the limit."
        )
        code = "request_too_large"
        log.info(
            "refused %s %s with 413: the body is over XR_MAX_BODY_BYTES (request %s)",
            request.method,
            request.url.path,
            request_id_of(request.scope),
        )
    elif status >= 500:
        return handle_internal_error(request, exc, masker)
    else:
        message = exc.detail
        code = None
    return Response(
        envelope(
            masker.mask(message), _TYPES_BY_STATUS.get(status, "invalid_request_error"), None, code
        ),
        status_code=status,
        headers=exc.headers or {},
        media_type="application/json",
    )


def handle_internal_error(
    request: AnyRequest, exc: Exception, masker: SecretMasker
) -> Response[object]:
    request_id = request_id_of(request.scope)
    # The traceback is formatted and masked here rather than passed as exc_info: the log
    # filter knows the gateway's secrets but not this request's token.
    log.error(
        "internal error on %s %s (request %s)\n%s",
        request.method,
        masker.mask(request.url.path),
        request_id,
        masker.mask("".join(traceback.format_exception(exc)).rstrip()),
    )
    return Response(
        envelope(
            f"The gateway hit an internal error. Quote request id {request_id} when reporting it.",
            "server_error",
            None,
            "internal_error",
        ),
        status_code=500,
        media_type="application/json",
    )
