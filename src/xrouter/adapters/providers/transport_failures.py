"""The transport's failures as canonical errors, each named for what ran out or broke.

One timeout policy, one message per limit, each naming its setting: connect, write, pool
(waiting for a free connection), first byte (the response head), idle (silence between bytes
of a body) and total (a whole non-stream call). A failure of the proxy is a proxy failure
that names the proxy's host (never its credentials), not a failure of the upstream. A limit
on an answer's size is a 502 that names its setting, with a WARNING line naming it too.

Messages never carry a request header or a body: httpx's exception texts name sockets and
protocol states only.
"""

from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass
from typing import Literal

import httpx

from xrouter.adapters.providers.body_limits import LimitExceeded
from xrouter.adapters.providers.transport_settings import TransportSettings
from xrouter.domain.errors import ProviderError, ProviderTimeout

log = logging.getLogger("xrouter.transport")

Phase = Literal["connect", "write", "pool", "first_byte", "idle", "total"]
STREAM_CLOSED_EARLY = "the upstream closed the stream before it finished"

_TIMEOUTS: dict[Phase, tuple[str, str]] = {
    # phase: (its TransportSettings field, what it is called in a message)
    "connect": ("connect_timeout_s", "the connect timeout"),
    "write": ("write_timeout_s", "the write timeout"),
    "pool": ("pool_timeout_s", "the pool timeout"),
    "first_byte": ("first_byte_timeout_s", "the first-byte timeout"),
    "idle": ("read_timeout_s", "the read timeout between bytes"),
    "total": ("total_timeout_s", "the total deadline of a call"),
}


@dataclass(frozen=True, slots=True)
class TransportFailures:
    """Builds the errors of one upstream's transport (`provider`, `settings`)."""

    provider: str
    settings: TransportSettings
    proxy: str | None
    """`host:port` of the proxy calls go through, None when they go direct."""

    def timeout(self, phase: Phase) -> ProviderTimeout:
        field, name = _TIMEOUTS[phase]
        seconds = getattr(self.settings, field)
        setting = self.settings.setting_names(field)
        p = self.provider
        what = {
            "connect": f"Could not connect to {self._target()} within {seconds:g} s",
            "write": f"Sending the request to {p} stalled for {seconds:g} s",
            "pool": f"No connection to {p} became free within {seconds:g} s",
            "first_byte": f"{p} did not start its answer within {seconds:g} s",
            "idle": f"{p} sent nothing for {seconds:g} s",
            "total": f"{p} did not answer within {seconds:g} s",
        }[phase]
        return ProviderTimeout(f"{what} ({name}, {setting}); the call was abandoned.", phase=phase)

    def connect_failed(self, exc: httpx.TransportError) -> ProviderError:
        return ProviderError(f"Could not connect to {self._target()}: {describe(exc)}.")

    def proxy_failed(self, exc: httpx.TransportError) -> ProviderError:
        proxy = f"The proxy {self.proxy}" if self.proxy else "The proxy"
        return ProviderError(
            f"{proxy} failed the call to {self.provider} ({self._host()}): {describe(exc)}. "
            "Check HTTPS_PROXY / HTTP_PROXY / NO_PROXY."
        )

    def hung_up(self, exc: httpx.TransportError) -> ProviderError:
        return ProviderError(
            f"{self.provider} closed the connection without answering: {describe(exc)}."
        )

    def broken(self, exc: httpx.TransportError) -> ProviderError:
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return ProviderError(f"{self.provider}: {STREAM_CLOSED_EARLY}.")
        return ProviderError(f"The connection to {self.provider} failed: {describe(exc)}.")

    def too_large(self, exc: LimitExceeded) -> ProviderError:
        # LimitExceeded names the TransportSettings field in capitals (`MAX_BODY_BYTES`).
        setting = self.settings.setting_names(exc.setting.lower())
        log.warning(
            "%s sent %s larger than %d bytes; the call was abandoned and its connection "
            "dropped (limit: %s)",
            self.provider,
            exc.what,
            exc.limit,
            setting,
        )
        return ProviderError(
            f"{self.provider} sent {exc.what} larger than {exc.limit} bytes, the limit set by "
            f"{setting}; the call was abandoned. Raise {setting} if such answers are expected."
        )

    def undecodable(self, reason: str) -> ProviderError:
        return ProviderError(f"{self.provider} sent an answer the gateway cannot use: {reason}.")

    def not_a_stream(self, status: int, content_type: str, size: str) -> ProviderError:
        shown = f"`{content_type[:80]}`" if content_type else "no content type"
        return ProviderError(
            f"{self.provider} answered a streaming request with status {status}, {shown} and "
            f"{size} instead of an event stream (`text/event-stream`)."
        )

    def no_done(self) -> ProviderError:
        return ProviderError(f"{self.provider} closed the stream before `[DONE]`.")

    def _target(self) -> str:
        if self.proxy:
            return f"the proxy {self.proxy} for {self.provider}"
        return f"{self.provider} ({self._host()})"

    def _host(self) -> str:
        url = httpx.URL(self.settings.base_url)
        return f"{url.host}:{url.port}" if url.port else url.host


def proxy_for(base_url: str, *, trust_env: bool) -> str | None:
    """`host:port` of the environment's proxy for `base_url` (HTTP(S)_PROXY, ALL_PROXY, minus
    NO_PROXY), for messages only; credentials in the proxy URL are never part of it."""
    if not trust_env:
        return None
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    try:
        parsed = httpx.URL(proxy if "://" in proxy else f"http://{proxy}")
    except httpx.InvalidURL:
        return "(unparsable proxy URL)"
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host


def describe(exc: Exception) -> str:
    """The exception's kind and text; httpx's texts name sockets and protocol states, never
    the request's headers."""
    text = str(exc).strip().rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
