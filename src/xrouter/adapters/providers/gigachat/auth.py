"""GigaChat access tokens: where they come from, how long they are kept, how they get onto a
request.

Sources (`TokenSource`): the OAuth endpoint with an authorization key (the normal path), the
API's `/token` with a user and password, or a ready token from configuration. `TokenCache`
keeps the current token and refreshes it `refresh_margin_s` before it expires, one refresh at
a time however many requests wait (single flight: they all await the same fetch, and a failed
fetch fails all of them, instead of each retrying in turn against an endpoint limited to 10
requests a second). `BearerAuth` is the httpx auth flow the API client runs on every request:
it adds the token and, on a 401, drops it, fetches a fresh one and sends the request once more.
Because it runs inside httpx, the shared transport's retries, deadlines and in-flight limit wrap
the whole exchange, streams included (a 401 always comes before a stream starts).

Every failure here is a canonical error whose message names the cause and the setting to check,
never a secret: not the key, not the password, not a token. Each token fetched is also handed to
`on_token` (the container's SecretRegistry), so it is masked by value wherever it could show up
later: an upstream error that echoes it, a log line.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import msgspec

from xrouter.adapters.providers.transport_settings import SettingNames, field_names
from xrouter.adapters.providers.upstream_errors import redact
from xrouter.domain.errors import GatewayError, ProviderError, ProviderTimeout

log = logging.getLogger("xrouter.gigachat.auth")

REFRESH_MARGIN_S = 60.0
"""A token is refreshed this long before it expires (the SDK's `token_expiry_buffer_ms`)."""
_MS_THRESHOLD = 10**12
"""`expires_at` values below this are seconds, not milliseconds (some docs examples)."""
_MESSAGE_LIMIT = 300


def ca_hint(names: SettingNames) -> str:
    """What to do when a GigaChat host's certificate cannot be verified."""
    return (
        f"Set {names('ca_bundle')} to a CA bundle that contains the Russian Trusted Root CA "
        "(https://www.gosuslugi.ru/crt)."
    )


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    expires_at: float | None
    """Unix time in seconds; None when unknown (a token from configuration)."""

    def __repr__(self) -> str:  # a token never shows up in a traceback or a log line
        return f"AccessToken(expires_at={self.expires_at!r})"


class TokenSource(Protocol):
    @property
    def refreshable(self) -> bool:
        """Whether `fetch` can return a different token (a refused one may be replaced)."""
        ...

    async def fetch(self) -> AccessToken:
        """A fresh token; raise a GatewayError naming the cause when none can be had."""
        ...


def expires_at_seconds(raw: object) -> float | None:
    """GigaChat's `expires_at`/`exp` as Unix seconds: milliseconds per the SDK, but values that
    can only be seconds (below 10^12, i.e. before 2001 as milliseconds) are taken as seconds."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return raw / 1000 if raw >= _MS_THRESHOLD else float(raw)


class StaticToken:
    """A ready access token from configuration: used as is, never refreshed."""

    refreshable = False

    def __init__(self, token: str) -> None:
        self._token = AccessToken(token, None)

    async def fetch(self) -> AccessToken:
        return self._token


class _OAuthReply(msgspec.Struct):
    access_token: str | None = None
    expires_at: int | float | None = None
    tok: str | None = None
    exp: int | float | None = None


class _Refusal(msgspec.Struct):
    code: int | str | None = None
    message: str | None = None
    status: int | None = None


_OAUTH_CAUSES = {
    # {code: (cause, what to do)}, from the GigaChat docs' OAuth error examples; {setting} is
    # the scope's setting as the operator names it
    1: ("the scope is malformed", "Check {setting}."),
    5: ("the scope is empty", "Check {setting}."),
    7: (
        "wrong scope: the authorization key does not grant the scope {scope}",
        "Set {setting} to the scope of your key: GIGACHAT_API_PERS (individuals), "
        "GIGACHAT_API_B2B (prepaid business) or GIGACHAT_API_CORP (pay-as-you-go business).",
    ),
}


class OAuthSource:
    """Tokens from `POST .../api/v2/oauth` with the authorization key (Basic, sent as given)."""

    refreshable = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        auth_key: str,
        scope: str,
        *,
        names: SettingNames = field_names,
    ) -> None:
        self._client = client
        self._url = url
        self._auth_key = auth_key
        self._scope = scope
        self._names = names

    async def fetch(self) -> AccessToken:
        headers = {
            "Authorization": f"Basic {self._auth_key}",
            "RqUID": str(uuid.uuid4()),
            "Accept": "application/json",
        }
        what = "the GigaChat OAuth endpoint"
        response = await _send(
            self._client,
            what,
            "POST",
            self._url,
            headers=headers,
            data={"scope": self._scope},
            names=self._names,
        )
        if response.status_code != 200:
            raise self._refused(response)
        reply = _decode(response.content, what)
        token = reply.access_token or reply.tok
        if not token:
            raise ProviderError(
                f"{what} answered without an access token.", code="upstream_auth_failed"
            )
        return AccessToken(token, expires_at_seconds(reply.expires_at or reply.exp))

    def _refused(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        refusal = _refusal(response.content)
        said = f" ({_clean(refusal.message)})" if refusal.message else ""
        code = refusal.code if isinstance(refusal.code, int) else None
        scope, key = self._names("scope"), self._names("auth_key")
        if code in _OAUTH_CAUSES:
            cause, fix = _OAUTH_CAUSES[code]
            detail = f": {_clean(refusal.message)}" if refusal.message else ""
            text = f"{cause.format(scope=self._scope)} (OAuth code {code}{detail}). " + fix.format(
                setting=scope
            )
        elif status in (401, 403):
            text = (
                f"the authorization key was refused (status {status}){said}. Check {key}: it "
                "is the ready Base64 key from the GigaChat personal cabinet, sent as is."
            )
        elif status == 400:
            text = f"the token request was rejected (status 400){said}. Check {scope} and {key}."
        elif status == 429:
            text = f"too many token requests (status 429){said}. Retry later."
        else:
            text = f"the token endpoint failed (status {status}){said}."
        return ProviderError(f"GigaChat authentication failed: {text}", code="upstream_auth_failed")


def basic_credentials(user: str, password: str) -> str:
    """The HTTP Basic credentials of `/token`: a secret of its own (it decodes to the password)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class PasswordSource:
    """Tokens from the API's `POST /token` with HTTP Basic user:password (some hosts only)."""

    refreshable = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        user: str,
        password: str,
        *,
        names: SettingNames = field_names,
    ) -> None:
        self._client = client
        self._url = url
        self._credentials = basic_credentials(user, password)
        self._names = names

    async def fetch(self) -> AccessToken:
        what = "the GigaChat /token endpoint"
        response = await _send(
            self._client,
            what,
            "POST",
            self._url,
            headers={"Authorization": f"Basic {self._credentials}", "Accept": "application/json"},
            names=self._names,
        )
        if response.status_code != 200:
            refusal = _refusal(response.content)
            said = f" ({_clean(refusal.message)})" if refusal.message else ""
            if response.status_code in (401, 403):
                cause = (
                    f"the user and password were refused (status {response.status_code}){said}."
                    f" Check {self._names('user')} and {self._names('password')}."
                )
            else:
                cause = (
                    f"{what} failed (status {response.status_code}){said}. Not every host "
                    f"offers it: {self._names('base_url')} must be one that does."
                )
            raise ProviderError(
                f"GigaChat authentication failed: {cause}", code="upstream_auth_failed"
            )
        reply = _decode(response.content, what)
        token = reply.tok or reply.access_token
        if not token:
            raise ProviderError(
                f"{what} answered without an access token.", code="upstream_auth_failed"
            )
        return AccessToken(token, expires_at_seconds(reply.exp or reply.expires_at))


class TokenCache:
    """The current token of one source, refreshed before it expires, one fetch at a time."""

    def __init__(
        self,
        source: TokenSource,
        *,
        now: Callable[[], float] = time.time,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        self._source = source
        self._now = now
        self._margin = refresh_margin_s
        self._on_token = on_token
        """Told every fresh token before it is used (to mask it by value everywhere)."""
        self._token: AccessToken | None = None
        self._flight: asyncio.Future[AccessToken] | None = None
        self.fetches = 0
        """Tokens fetched so far (for tests and metrics)."""

    @property
    def refreshable(self) -> bool:
        return self._source.refreshable

    async def token(self) -> str:
        """A token usable now: the cached one, or a fresh one when it is about to expire."""
        current = self._token
        if current is not None and self._usable(current):
            return current.value
        flight = self._flight
        if flight is None:
            flight = asyncio.ensure_future(self._fetch())
            # A fetch whose waiters were all cancelled must not warn about an unread error.
            flight.add_done_callback(_consume)
            self._flight = flight
        # shield: one waiter giving up does not cancel the fetch the others wait for.
        return (await asyncio.shield(flight)).value

    def invalidate(self, token: str) -> None:
        """Forget `token` after the API refused it. A token already replaced by a concurrent
        refresh is left alone, so many 401s at once still cause one refresh."""
        if self._token is not None and self._token.value == token:
            self._token = None

    def _usable(self, token: AccessToken) -> bool:
        return token.expires_at is None or token.expires_at - self._margin > self._now()

    async def _fetch(self) -> AccessToken:
        try:
            try:
                token = await self._source.fetch()
            except GatewayError:
                previous = self._token
                if previous is not None and (
                    previous.expires_at is None or previous.expires_at > self._now()
                ):
                    # An early refresh failed, but the token still works: keep serving.
                    log.warning("refreshing the GigaChat token failed; the current one is kept")
                    return previous
                raise
            self.fetches += 1
            if self._on_token is not None:
                self._on_token(token.value)
            self._token = token
            if token.expires_at is not None and token.expires_at - self._margin <= self._now():
                log.warning(
                    "GigaChat issued a token that expires within %.0f s; it is used, and "
                    "refreshed on the next request",
                    self._margin,
                )
            return token
        finally:
            self._flight = None


class BearerAuth(httpx.Auth):
    """httpx auth flow for the GigaChat API: the cached token as a bearer; on a 401, drop the
    token, fetch a fresh one and send the request once more. A request that already carries
    `Authorization` (the client's own token, in BYOK mode) goes out untouched."""

    requires_request_body = True

    def __init__(self, tokens: TokenCache) -> None:
        self._tokens = tokens

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("GigaChat's BearerAuth works with httpx.AsyncClient only.")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if "authorization" in request.headers:
            yield request
            return
        token = await self._tokens.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401 or not self._tokens.refreshable:
            return
        log.info("GigaChat refused the access token (401); refreshing it and retrying once")
        self._tokens.invalidate(token)
        fresh = await self._tokens.token()
        request.headers["Authorization"] = f"Bearer {fresh}"
        yield request


# --- helpers ------------------------------------------------------------------------------------


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def _send(
    client: httpx.AsyncClient,
    what: str,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    data: dict[str, str] | None = None,
    names: SettingNames,
) -> httpx.Response:
    """One token request; transport failures become canonical errors that name the host and,
    for a certificate problem, the setting that fixes it (as `names` names it)."""
    try:
        return await client.request(method, url, headers=headers, data=data)
    except httpx.TimeoutException:
        raise ProviderTimeout(
            f"GigaChat authentication failed: {what} ({_host(url)}) did not answer in time."
        ) from None
    except httpx.TransportError as exc:
        raise _transport_failure(what, url, exc, names) from None


def _transport_failure(
    what: str, url: str, exc: httpx.TransportError, names: SettingNames
) -> GatewayError:
    if is_certificate_error(exc):
        return ProviderError(
            f"GigaChat authentication failed: the TLS certificate of {what} ({_host(url)}) "
            f"could not be verified ({_describe_ssl(exc)}). {ca_hint(names)}",
            code="upstream_tls_failed",
        )
    text = str(exc).strip() or type(exc).__name__
    return ProviderError(
        f"GigaChat authentication failed: could not reach {what} ({_host(url)}): {_clean(text)}.",
        code="upstream_auth_failed",
    )


def is_certificate_error(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a failed TLS certificate verification."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe_ssl(exc: BaseException) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or "certificate verify failed"
        seen = seen.__cause__ or seen.__context__
    return "certificate verify failed"


def _host(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host


def _decode(content: bytes, what: str) -> _OAuthReply:
    try:
        return msgspec.json.decode(content, type=_OAuthReply)
    except msgspec.DecodeError:
        raise ProviderError(
            f"GigaChat authentication failed: {what} answered with a body that is not the "
            "expected JSON.",
            code="upstream_auth_failed",
        ) from None


def _refusal(content: bytes) -> _Refusal:
    try:
        return msgspec.json.decode(content, type=_Refusal)
    except msgspec.DecodeError:
        return _Refusal()


def _clean(text: str) -> str:
    text = redact(" ".join(text.split()))
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"
