"""Upstream failures as canonical gateway errors.

`map_upstream_error` reads a non-2xx answer (status, body, headers); `map_stream_error` reads an
error object that came inside a 200 (an OpenRouter mid-stream error frame, a `response.failed`
error, a per-choice error). Both keep the upstream's status and message, because that is what
the person debugging needs, and both prefix the message with the provider's name.

What never reaches a message: request headers (the transport does not pass them here) and
anything in the upstream text that looks like a credential (masked by `redact`, in `message`,
`param` and `code` alike). Credentials of any shape the gateway knows by value are masked later,
on every exit (domain/secrets.py). When the
gateway's own key is refused, the upstream text is dropped altogether: it may quote the key,
and the client cannot fix it anyway; the message tells the operator which setting to check.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from xrouter.adapters.providers.transport_settings import SettingNames, field_names
from xrouter.domain.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    ProviderError,
    ProviderTimeout,
    Unauthorized,
    UpstreamRateLimited,
)

ErrorMapper = Callable[[Any], GatewayError]
"""What a parser raises for an error object found inside a 200 (an OpenAI-style `error`, a
GigaChat `{status, message}`): `map_stream_error` bound to the provider and its setting
names."""

MESSAGE_LIMIT = 500
"""Upstream text kept in a message, in characters."""

_SECRET = re.compile(
    r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(sk|rk|pk)-[A-Za-z0-9_-]{8,}"
    r"|\b(api[_-]?key|access[_-]?token|token|password|secret)(\s*[=:]\s*)[^\s,;\"'&]{6,}"
)
_TITLE = re.compile(r"(?is)<title[^>]*>(.*?)</title>")
_SPACES = re.compile(r"\s+")
_MODERATION_TYPES = frozenset({"content_policy_violation", "refusal", "moderation"})


class UpstreamModelNotFound(ModelNotFound):
    """A 404 from the upstream about the model: the canonical `model_not_found`, with the
    upstream's own words instead of the gateway's catalogue hint."""

    def __init__(self, message: str) -> None:
        NotFound.__init__(self, message, param="model")


def redact(text: str) -> str:
    """`text` with anything shaped like a credential (bearer tokens, `sk-...` keys,
    `api_key=...`) masked."""

    def mask(match: re.Match[str]) -> str:
        if match.group(1):
            return f"{match.group(1)} ***"
        if match.group(2):
            return f"{match.group(2)}-***"
        return f"{match.group(3)}{match.group(4)}***"

    return _SECRET.sub(mask, text)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` (seconds or an HTTP date);
    None when absent or unreadable. Never negative."""
    lowered = {key.lower(): value for key, value in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        seconds = _number(raw_ms)
        if seconds is not None:
            return seconds / 1000
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _number(raw: str) -> float | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if math.isnan(value) or math.isinf(value):
        return None
    return max(0.0, value)


class _Detail(msgspec.Struct, frozen=True):
    """What an error body told us, whatever its dialect."""

    message: str | None = None
    code: str | None = None
    status_code: int | None = None
    param: str | None = None
    error_type: str | None = None
    """OpenRouter's typed `metadata.error_type`."""
    kind: str | None = None
    """OpenAI's `type` ("server_error", "invalid_request_error")."""
    moderation: bool = False


def map_upstream_error(
    provider: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    byok: bool = False,
    setting_names: SettingNames = field_names,
) -> GatewayError:
    """The canonical error for a non-2xx answer of `provider`.

    `byok` says the credential was the client's own key: a refusal is then the client's 401,
    not the gateway's misconfiguration, whose message names the key's setting by
    `setting_names`.
    """
    detail = _read_body(body, headers)
    error = _for_status(
        provider, status, detail, parse_retry_after(headers), byok=byok, names=setting_names
    )
    error.upstream_status = status
    return error


def map_stream_error(
    provider: str, error: Mapping[str, Any], *, setting_names: SettingNames = field_names
) -> GatewayError:
    """The canonical error for an error object received inside a 200 stream or body.

    OpenRouter's `code` may be an HTTP status (429, 502) or a string ("server_error",
    "rate_limit_exceeded"); `metadata.error_type` refines a missing code. Unknown codes are a
    ProviderError: the upstream failed, and the message says how.
    """
    detail = _from_error_object(error)
    if detail.status_code is not None:
        mapped = _for_status(
            provider, detail.status_code, detail, None, byok=False, names=setting_names
        )
        mapped.upstream_status = detail.status_code  # reported in-band, but the upstream's own
        return mapped
    text = _with_provider(provider, detail.message, "failed while streaming and gave no message")
    code = (detail.code or detail.error_type or detail.kind or "").lower()
    if code in {"rate_limit_exceeded", "rate_limited", "too_many_requests"}:
        return UpstreamRateLimited(text)
    if code in {"insufficient_quota", "payment_required"}:
        return PaymentRequired(text)
    if code in {"timeout", "provider_timeout", "request_timeout", "timed_out"}:
        return ProviderTimeout(text)
    if code in {"authentication", "permission_denied", "invalid_api_key", "unauthorized"}:
        return _credentials_refused(provider, None, setting_names)
    if code in {"model_not_found"}:
        return UpstreamModelNotFound(text)
    if code in {
        "invalid_request",
        "invalid_request_error",
        "invalid_prompt",
        "context_length_exceeded",
        "max_tokens_exceeded",
        "token_limit_exceeded",
        "string_too_long",
        "content_policy_violation",
        "image_content_policy_violation",
    }:
        return InvalidRequest(text, code=code, param=detail.param)
    return ProviderError(text)


def _for_status(
    provider: str,
    status: int,
    detail: _Detail,
    retry_after: float | None,
    *,
    byok: bool,
    names: SettingNames,
) -> GatewayError:
    message = detail.message
    if status in (401, 403) and not byok:
        if status == 403 and (detail.moderation or detail.error_type in _MODERATION_TYPES):
            return InvalidRequest(
                _with_provider(provider, message, "refused the input (moderation)"),
                code="content_policy_violation",
            )
        return _credentials_refused(provider, status, names)
    if status in (400, 422):
        return InvalidRequest(
            _with_provider(provider, message, f"rejected the request (status {status})"),
            code=detail.code or detail.error_type,
            param=detail.param,
        )
    if status in (401, 403):
        return Unauthorized(
            _with_provider(provider, message, f"refused your API key (status {status})")
        )
    if status == 402:
        return PaymentRequired(
            _with_provider(provider, message, "reports insufficient credits (status 402)")
        )
    if status == 404:
        text = _with_provider(provider, message, "answered 404 Not Found")
        if detail.code == "model_not_found" or (message and "model" in message.lower()):
            return UpstreamModelNotFound(text)
        return NotFound(text, code=detail.code)
    if status in (408, 504):
        return ProviderTimeout(
            f"{provider} timed out (upstream status {status})" + _suffix(message)
            + ". Retry later, or send a shorter request."
        )  # fmt: skip
    if status == 413:
        return PayloadTooLarge(
            _with_provider(provider, message, "says the request is too large (status 413)")
        )
    if status == 429:
        code = detail.code if detail.code == "insufficient_quota" else None
        return UpstreamRateLimited(
            f"{provider} is rate-limiting requests (upstream status 429)" + _suffix(message),
            code=code,
            retry_after=retry_after,
        )
    return ProviderError(f"{provider} failed with upstream status {status}" + _suffix(message))


def _credentials_refused(provider: str, status: int | None, names: SettingNames) -> ProviderError:
    seen = f" (upstream status {status})" if status is not None else ""
    return ProviderError(
        f"The gateway's credentials for {provider} were refused{seen}. The gateway operator "
        f"should check {names('api_key')}.",
        code="upstream_auth_failed",
    )


def _with_provider(provider: str, message: str | None, fallback: str) -> str:
    return f"{provider}: {message}" if message else f"{provider} {fallback}."


def _suffix(message: str | None) -> str:
    return f": {message}" if message else ""


def _read_body(body: bytes, headers: Mapping[str, str]) -> _Detail:
    stripped = body.strip()
    if not stripped:
        return _Detail()
    if stripped[:1] in (b"{", b"["):
        try:
            decoded = msgspec.json.decode(stripped)
        except msgspec.DecodeError:
            decoded = None
        if isinstance(decoded, dict):
            return _from_envelope(decoded)
    text = stripped.decode("utf-8", errors="replace")
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if text.startswith("<") or "html" in content_type.lower():
        title = _TITLE.search(text)
        return _Detail(message=_clean(title.group(1)) if title else None)
    return _Detail(message=_clean(text))


def _from_envelope(body: Mapping[str, Any]) -> _Detail:
    error = body.get("error")
    if isinstance(error, Mapping):
        return _from_error_object(error)
    if isinstance(error, str):
        return _Detail(message=_clean(error))
    # GigaChat ({status, message}), its OAuth ({code, message}), FastAPI-style ({detail}).
    message = body.get("message")
    if message is None:
        message = body.get("detail")
    if isinstance(message, str):
        return _Detail(message=_clean(message))
    if message is not None:
        return _Detail(message=_clean(msgspec.json.encode(message).decode()))
    return _Detail()


def _from_error_object(error: Mapping[str, Any]) -> _Detail:
    message = error.get("message")
    text = _clean(message) if isinstance(message, str) else None
    metadata = error.get("metadata")
    error_type: str | None = None
    moderation = False
    if isinstance(metadata, Mapping):
        raw = metadata.get("raw")
        if isinstance(raw, str) and raw.strip() and (text is None or raw not in text):
            text = _clean(f"{text} ({raw})" if text else raw)
        typed = metadata.get("error_type")
        error_type = typed if isinstance(typed, str) else None
        moderation = "reasons" in metadata or "flagged_input" in metadata
    code = error.get("code")
    status_code: int | None = None
    string_code: str | None = None
    if isinstance(code, int) and not isinstance(code, bool):
        status_code = code
    elif isinstance(code, str) and code.isdigit():
        status_code = int(code)
    elif isinstance(code, str) and code:
        string_code = _clean(code)
    kind = error.get("type")
    param = error.get("param")
    return _Detail(
        message=text,
        code=string_code,
        status_code=status_code if status_code is not None and 100 <= status_code < 600 else None,
        # `param` and `code` reach the client next to `message`: an upstream that echoes a
        # credential into them is cleaned the same way.
        param=_clean(param) if isinstance(param, str) else None,
        error_type=_clean(error_type) if error_type else None,
        kind=kind if isinstance(kind, str) and kind else None,
        moderation=moderation,
    )


def _clean(text: str) -> str | None:
    text = redact(_SPACES.sub(" ", text).strip())
    if not text:
        return None
    if len(text) > MESSAGE_LIMIT:
        return text[: MESSAGE_LIMIT - 1] + "…"
    return text
