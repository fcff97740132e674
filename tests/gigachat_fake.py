"""A fake GigaChat for tests: the API and the OAuth endpoint, each on its own HTTPS port on
127.0.0.1, with certificates from a throwaway CA (trustme).

Built on tests/upstreams.py (the same raw HTTP/1.1 server, `Reply` scripts and request
recording), served over TLS. What it checks, like the real one:

- OAuth (`POST /api/v2/oauth`, its own port): `Authorization: Basic <key>` exactly as issued,
  an `RqUID` uuid4, a form body with a known `scope` the key grants. Failures answer GigaChat's
  OAuth shape `{code, message}`. Success issues `tok-<n>` with `expires_at` in epoch ms (or
  seconds, `expires_in_seconds=True`) `token_lifetime_s` from now.
- Password auth (`POST /api/v1/token`): HTTP Basic `user:password` -> `{tok, exp}`.
- API (`/api/v1/...`): every call needs `Authorization: Bearer <a live token>`, else 401
  `{status: 401, message: "Unauthorized"}`; tokens can be revoked or expired on demand. Then
  the per-path script (`fake.api.script(path, Reply...)`), else the default: `POST
  /chat/completions` echoes the last user message (as a JSON answer, or with `stream: true` as
  `data:` chunks, a penultimate chunk with finish_reason and usage, and `data: [DONE]`);
  `GET /models` lists `fake.models`.

Helpers build GigaChat-shaped bodies: `completion(...)`, `chunk(...)`, `api_error(...)`,
`oauth_error(...)`.
"""

from __future__ import annotations

import base64
import itertools
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trustme

from tests.upstreams import FakeUpstream, RecordedRequest, Reply
from xrouter.adapters.providers.gigachat.factory import create_gigachat_provider
from xrouter.adapters.providers.gigachat.provider import GigaChatProvider
from xrouter.adapters.providers.gigachat.tls import TLSSettings
from xrouter.application.ports import CallContext, GenerationRequest
from xrouter.domain.models import ModelRoute
from xrouter.domain.responses import InputItem, ResponseRequest
from xrouter.entrypoints.gigachat_config import GigaChatConfig, gigachat_spec

AUTH_KEY = base64.b64encode(b"test-client-id:test-client-secret").decode()
USER, PASSWORD = "gc-user", "gc-pass-word-1"
MODEL_VERSION = "GigaChat-2-Max:2.0.28.2"
CREATED = 1_750_000_000
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_WORDS = re.compile(r"\S+\s*")


# --- GigaChat-shaped bodies ----------------------------------------------------------------------


def usage(prompt: int = 10, completion: int = 5, precached: int = 0) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion - precached,
        "precached_prompt_tokens": precached,
    }


def completion(
    content: str = "",
    *,
    finish: str = "stop",
    function_call: Mapping[str, Any] | None = None,
    state_id: str | None = None,
    usage_: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if function_call is not None:
        message["function_call"] = dict(function_call)
    if state_id is not None:
        message["functions_state_id"] = state_id
    return {
        "choices": [{"message": message, "index": 0, "finish_reason": finish}],
        "created": CREATED,
        "model": MODEL_VERSION,
        "object": "chat.completion",
        "usage": dict(usage_ or usage()),
    }


def chunk(
    delta: Mapping[str, Any],
    finish: str | None = None,
    usage_: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    choice: dict[str, Any] = {"delta": dict(delta), "index": 0}
    if finish is not None:
        choice["finish_reason"] = finish
    body: dict[str, Any] = {
        "choices": [choice],
        "created": CREATED,
        "model": MODEL_VERSION,
        "object": "chat.completion",
    }
    if usage_ is not None:
        body["usage"] = dict(usage_)
    return body


def api_error(status: int, message: str, **kw: Any) -> Reply:
    return Reply.json({"status": status, "message": message}, status=status, **kw)


def oauth_error(status: int, code: int, message: str) -> Reply:
    return Reply.json({"code": code, "message": message}, status=status)


# --- the servers ---------------------------------------------------------------------------------


class HttpsUpstream(FakeUpstream):
    """tests/upstreams.py's fake, served over TLS; `gate(request)` may answer before scripts."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(models=(), tls=context)
        self.gate: Callable[[RecordedRequest], Reply | None] | None = None

    def _reply_for(self, request: RecordedRequest) -> Reply:
        if self.gate is not None:
            early = self.gate(request)
            if early is not None:
                return early
        return super()._reply_for(request)


@dataclass
class Certificates:
    ca: trustme.CA
    ca_file: str
    server: ssl.SSLContext
    client_cert_file: str
    client_key_file: str

    def mtls_server(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
        return context


def make_certificates(directory: Path) -> Certificates:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("xrouter-client@example.test")
    cert_file, key_file = directory / "client.pem", directory / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    return Certificates(ca, str(ca_file), server, str(cert_file), str(key_file))


class GigaChatFake:
    """The API (`fake.api`, base `fake.base_url`) and OAuth (`fake.oauth`, `fake.oauth_url`)."""

    def __init__(
        self,
        api_context: ssl.SSLContext,
        oauth_context: ssl.SSLContext,
        *,
        scope: str = "GIGACHAT_API_B2B",
    ) -> None:
        self.api = HttpsUpstream(api_context)
        self.oauth = HttpsUpstream(oauth_context)
        self.auth_key = AUTH_KEY
        self.scope = scope
        self.users = {USER: PASSWORD}
        self.token_lifetime_s = 1800.0
        self.expires_in_seconds = False
        self.oauth_delay_s = 0.0
        self.token_prefix = "tok-"
        """Issued tokens are this plus a number (make it long to have tokens masked by value)."""
        self.models: list[dict[str, Any]] = [
            {"id": "GigaChat-2", "object": "model", "owned_by": "salutedevices", "type": "chat"},
            {"id": "GigaChat-2-Max", "object": "model", "owned_by": "salutedevices",
             "type": "chat"},
            {"id": "Embeddings", "object": "model", "owned_by": "salutedevices",
             "type": "embedder"},
        ]  # fmt: skip
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.api.gate = self._check_bearer
        self.api.route("/api/v1/chat/completions", self._chat)
        self.api.route("/api/v1/models", self._models)
        self.api.route("/api/v1/token", self._password_token)
        self.oauth.route("/api/v2/oauth", self._oauth)

    # -- test-facing --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.api.origin}/api/v1"

    @property
    def oauth_url(self) -> str:
        return f"{self.oauth.origin}/api/v2/oauth"

    CHAT = "/api/v1/chat/completions"
    MODELS = "/api/v1/models"
    OAUTH = "/api/v2/oauth"

    @property
    def issued(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def revoke(self, token: str | None = None) -> None:
        """Make `token` (default: every token issued so far) answer 401 from now on."""
        with self._lock:
            for known in [token] if token else list(self._tokens):
                self._tokens[known] = 0.0

    def add_token(self, token: str) -> None:
        """Accept `token` (a token issued elsewhere: configuration, BYOK)."""
        with self._lock:
            self._tokens[token] = time.time() + self.token_lifetime_s

    def chat_bodies(self) -> list[Any]:
        return [request.json for request in self.api.requests(self.CHAT)]

    def bearers(self, path: str = CHAT) -> list[str]:
        return [r.headers.get("authorization", "") for r in self.api.requests(path)]

    def start(self) -> GigaChatFake:
        self.api.start()
        self.oauth.start()
        return self

    def stop(self) -> None:
        self.api.stop()
        self.oauth.stop()

    # -- handlers (run in the servers' thread) ------------------------------------------------

    def _oauth(self, request: RecordedRequest) -> Reply:
        if request.method != "POST":
            return oauth_error(405, 0, "method not allowed")
        if request.headers.get("authorization") != f"Basic {self.auth_key}":
            return oauth_error(401, 4, "Can't decode 'Authorization' header")
        if not UUID4.fullmatch(request.headers.get("rquid", "")):
            return oauth_error(400, 6, "RqUID is invalid")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return oauth_error(400, 1, "scope data format invalid")
        form = urllib.parse.parse_qs(request.body.decode())
        scope = form.get("scope", [""])[0]
        if not scope:
            return oauth_error(400, 5, "scope is empty")
        if scope not in ("GIGACHAT_API_PERS", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP"):
            return oauth_error(400, 1, "scope data format invalid")
        if scope != self.scope:
            return oauth_error(400, 7, "scope from db not fully includes consumed scope")
        token, expires = self._issue()
        stamp = int(expires) if self.expires_in_seconds else int(expires * 1000)
        return Reply.json({"access_token": token, "expires_at": stamp}, delay_s=self.oauth_delay_s)

    def _password_token(self, request: RecordedRequest) -> Reply:
        expected = base64.b64encode(f"{USER}:{self.users[USER]}".encode()).decode()
        if request.method != "POST" or request.headers.get("authorization") != f"Basic {expected}":
            return api_error(401, "Unauthorized")
        token, expires = self._issue()
        return Reply.json({"tok": token, "exp": int(expires * 1000)})

    def _issue(self) -> tuple[str, float]:
        token = f"{self.token_prefix}{next(self._numbers)}"
        expires = time.time() + self.token_lifetime_s
        with self._lock:
            self._tokens[token] = expires
        return token, expires

    def _check_bearer(self, request: RecordedRequest) -> Reply | None:
        if request.path == "/api/v1/token":
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token, 0.0)
        if scheme != "Bearer" or expires <= time.time():
            return api_error(401, "Unauthorized")
        return None

    def _models(self, request: RecordedRequest) -> Reply:
        return Reply.json({"object": "list", "data": self.models})

    def _chat(self, request: RecordedRequest) -> Reply:
        body = request.json if isinstance(request.json, dict) else {}
        messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
        answer = next(
            (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"),
            "",
        )
        counted = usage(prompt=len(" ".join(str(m.get("content")) for m in messages).split()),
                        completion=len(answer.split()))  # fmt: skip
        if not body.get("stream"):
            return Reply.json(completion(answer, usage_=counted))
        frames: list[Mapping[str, Any] | bytes | str] = [
            chunk({"content": word, **({"role": "assistant"} if i == 0 else {})})
            for i, word in enumerate(_WORDS.findall(answer))
        ]
        frames.append(chunk({"content": ""}, "stop", counted))
        return Reply.sse(frames)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session", name="certificates")
def certificates_fixture(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("gigachat-tls"))


@pytest.fixture(name="gigachat")
def gigachat_fixture(certificates: Certificates) -> Iterator[GigaChatFake]:
    fake = GigaChatFake(certificates.server, certificates.server).start()
    try:
        yield fake
    finally:
        fake.stop()


def provider_for(
    fake: GigaChatFake,
    certificates: Certificates,
    *,
    byok: bool = False,
    now: Callable[[], float] = time.time,
    tls: TLSSettings | None = None,
    **overrides: Any,
) -> GigaChatProvider:
    """A GigaChatProvider pointed at `fake`, built as the gateway builds it (a GigaChatConfig
    whose fields `overrides` set, made a spec by the configuration), trusting the test CA
    unless `tls` says otherwise, without retries, with the fake's authorization key and
    scope unless `overrides` say otherwise."""
    values: dict[str, Any] = {
        "base_url": fake.base_url,
        "oauth_url": fake.oauth_url,
        "auth_key": fake.auth_key,
        "scope": fake.scope,
        "max_retries": 0,
        "max_inflight": 32,
    }
    values.update(overrides)
    spec = gigachat_spec(GigaChatConfig(**values), byok)
    spec = replace(spec, tls=tls or TLSSettings(ca_bundle=certificates.ca_file))
    return create_gigachat_provider(spec, now=now)


def make_call(
    body: Mapping[str, Any],
    *,
    context: CallContext | None = None,
    passthrough: Mapping[str, Any] | None = None,
    upstream_model: str = "GigaChat-2-Max",
) -> GenerationRequest:
    """The GenerationRequest the engine would give the provider for a Responses `body`."""
    request = msgspec.convert({"model": f"gigachat/{upstream_model}", **body}, ResponseRequest)
    items = (
        [InputItem(role="user", content=request.input)]
        if isinstance(request.input, str)
        else request.input
    )
    return GenerationRequest(
        route=ModelRoute(provider="gigachat", upstream_model=upstream_model),
        request=request,
        items=items,
        instructions=request.instructions,
        passthrough=dict(passthrough or {}),
        context=context or CallContext(),
    )


async def collect(provider: GigaChatProvider, call: GenerationRequest) -> list[Any]:
    return [event async for batch in provider.stream(call) for event in batch]
