"""Secrets masked by value on every exit (issue 9 item 3): the client's JSON error, the SSE
frames, the stored response, the logs.

The gateway is configured the way users configure it (XR_* variables into the container) and
talks to fake upstreams that echo the credential they received into every field of an error.
The key has no `sk-` shape, so only masking by value can catch it.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from dependency_injector import providers

from tests.conftest import LiveServer, make_container
from tests.gigachat_fake import (
    AUTH_KEY,
    Certificates,
    GigaChatFake,
    api_error,
    certificates_fixture,  # noqa: F401  (the fixture)
    gigachat_fixture,  # noqa: F401  (the fixture)
    oauth_error,
)
from tests.helpers import sse_events
from tests.log_audit import register_secret
from tests.upstreams import FakeUpstream, RecordedRequest, Reply
from xrouter.adapters.providers.upstream_errors import map_stream_error, map_upstream_error
from xrouter.adapters.storage.memory import InMemoryResponseStore
from xrouter.application.ports import StoredResponse
from xrouter.domain.secrets import MASK, SecretMasker
from xrouter.entrypoints.logging_setup import SecretMaskingFilter, install_secret_filter

KEY = "Zq9xT4mLr8Vb2Nc7Kd1Fh6Gj3Ps5Wy0Ua2Ie4Oo9"
"""The operator's upstream key: 40 characters, no `sk-` prefix, no credential shape."""
CLIENT_TOKEN = "Cl7tQw3Er9Ty5Ui1Op8As4Df2Gh6Jk0Lz3Xc7Vb"
"""A BYOK client's own upstream token, of the same unusual shape."""
register_secret(CLIENT_TOKEN, "CLIENT_TOKEN of tests/test_secret_masking.py")  # only in headers
CHAT_PATH = "/v1/chat/completions"
MODEL = "up/gpt-test"


class SavingStore(InMemoryResponseStore):
    """The in-memory store, remembering which responses were saved (so the test can fetch
    each one back over HTTP)."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[str] = []

    async def save(self, stored: StoredResponse) -> bool:
        self.saved.append(stored.response.id)
        return await super().save(stored)


class Logs(logging.Handler):
    """Every line logged, formatted with its traceback, at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[Logs]:
    """Attached to the root logger by `gateway` once the app is built (building it replaces
    the root's handlers, pytest's caplog one included), removed afterwards."""
    root = logging.getLogger()
    handler, level = Logs(), root.level
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def gateway(
    serve_with: Any, environ: dict[str, str], logs: Logs, **settings: Any
) -> tuple[LiveServer, SavingStore]:
    container = make_container(discovery=False, **settings)
    container.environ.override(providers.Object(environ))
    store = SavingStore()
    container.response_store.override(providers.Object(store))
    server = serve_with(container=container)
    root = logging.getLogger()
    root.addHandler(logs)
    root.setLevel(logging.DEBUG)
    return server, store


def upstream_env(upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    return {"XR_UP_BASE_URL": upstream.base_url, "XR_UP_MAX_RETRIES": "0", **extra}


def presented(request: RecordedRequest) -> str:
    """The credential the gateway presented upstream."""
    return request.headers["authorization"].split(" ", 1)[1]


def echo_in_400(request: RecordedRequest) -> Reply:
    """A 400 that quotes the credential in message, param and code."""
    secret = presented(request)
    return Reply.error(
        400, f"Key {secret} is not valid here", param=f"headers.{secret}", code=f"bad.{secret}"
    )


def echo_mid_stream(request: RecordedRequest) -> Reply:
    """Some text, then an in-band error quoting the credential in message and param."""
    secret = presented(request)
    return Reply.sse(
        [
            {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial "}}]},
            {"error": {"message": f"stream broke for {secret}", "code": "invalid_request_error",
                       "param": f"p.{secret}"}},
        ],
        done=False,
    )  # fmt: skip


def stored_texts(server: LiveServer, store: SavingStore) -> list[str]:
    with server.client() as client:
        replies = [client.get(f"/v1/responses/{rid}") for rid in store.saved]
    assert all(reply.status_code == 200 for reply in replies), [r.text for r in replies]
    return [reply.text for reply in replies]


def assert_nowhere(secret: str, texts: list[str], logs: Logs) -> None:
    for text in texts:
        assert secret not in text
    for line in logs.lines:
        assert secret not in line


def logged_masked(logs: Logs, words: str) -> bool:
    """Whether a log line says `words` (with the secret masked): the logs did run."""
    return any(words in line for line in logs.lines)


# --- the operator's key, configured by environment ------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_configured_key_echoed_in_a_400_reaches_no_exit(
    serve_with: Any, fake_upstream: FakeUpstream, logs: Logs, stream: bool
) -> None:
    fake_upstream.route(CHAT_PATH, echo_in_400)
    server, store = gateway(serve_with, upstream_env(fake_upstream, XR_UP_API_KEY=KEY), logs)
    with server.client() as client:
        reply = client.post("/v1/responses", json={"model": MODEL, "input": "x", "stream": stream})
    assert presented(fake_upstream.requests(CHAT_PATH)[0]) == KEY
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["message"] == f"up: Key {MASK} is not valid here"
    assert (error["param"], error["code"]) == (f"headers.{MASK}", f"bad.{MASK}")
    assert logged_masked(logs, f"Key {MASK} is not valid here")
    assert_nowhere(KEY, [reply.text, *stored_texts(server, store)], logs)


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_a_configured_key_echoed_mid_stream_reaches_no_exit(
    serve_with: Any, fake_upstream: FakeUpstream, logs: Logs, api: str
) -> None:
    fake_upstream.route(CHAT_PATH, echo_mid_stream)
    server, store = gateway(serve_with, upstream_env(fake_upstream, XR_UP_API_KEY=KEY), logs)
    with server.client() as client:
        if api == "responses":
            reply = client.post(
                "/v1/responses", json={"model": MODEL, "input": "x", "stream": True}
            )
        else:
            body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]}
            reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200
    assert "partial" in reply.text and f"stream broke for {MASK}" in reply.text
    if api == "responses":
        events, _ = sse_events(reply.text)
        assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
        assert events[-1]["response"]["error"]["message"] == f"up: stream broke for {MASK}"
        stored = stored_texts(server, store)
        assert len(stored) == 1 and f"stream broke for {MASK}" in stored[0]
    else:
        stored = stored_texts(server, store)
    assert logged_masked(logs, f"stream broke for {MASK}")
    assert_nowhere(KEY, [reply.text, *stored], logs)


# --- BYOK: the client's own token -----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_byok_token_echoed_in_a_400_reaches_no_exit(
    serve_with: Any, fake_upstream: FakeUpstream, logs: Logs, stream: bool
) -> None:
    fake_upstream.route(CHAT_PATH, echo_in_400)
    server, store = gateway(serve_with, upstream_env(fake_upstream), logs, byok=True)
    with server.client(headers={"authorization": f"Bearer {CLIENT_TOKEN}"}) as client:
        reply = client.post("/v1/responses", json={"model": MODEL, "input": "x", "stream": stream})
    assert presented(fake_upstream.requests(CHAT_PATH)[0]) == CLIENT_TOKEN
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == (f"headers.{MASK}", f"bad.{MASK}")
    assert logged_masked(logs, f"Key {MASK} is not valid here")
    assert_nowhere(CLIENT_TOKEN, [reply.text, *stored_texts(server, store)], logs)


def test_a_byok_token_echoed_mid_stream_reaches_no_exit(
    serve_with: Any, fake_upstream: FakeUpstream, logs: Logs
) -> None:
    fake_upstream.route(CHAT_PATH, echo_mid_stream)
    server, store = gateway(serve_with, upstream_env(fake_upstream), logs, byok=True)
    with server.client(headers={"authorization": f"Bearer {CLIENT_TOKEN}"}) as client:
        reply = client.post("/v1/responses", json={"model": MODEL, "input": "x", "stream": True})
    events, _ = sse_events(reply.text)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["message"] == f"up: stream broke for {MASK}"
    assert logged_masked(logs, f"stream broke for {MASK}")
    assert_nowhere(CLIENT_TOKEN, [reply.text, *stored_texts(server, store)], logs)


def test_byok_requests_that_succeed_log_no_token(
    serve_with: Any, fake_upstream: FakeUpstream, logs: Logs
) -> None:
    """No log line of a whole request carries the client's token: the transport logs no
    headers, and nothing else sees the token (the log filter cannot know it, so this is the
    sources' own doing)."""
    server, _ = gateway(serve_with, upstream_env(fake_upstream), logs, byok=True)
    with server.client(headers={"authorization": f"Bearer {CLIENT_TOKEN}"}) as client:
        for stream in (False, True):
            reply = client.post(
                "/v1/responses", json={"model": MODEL, "input": "hello", "stream": stream}
            )
            assert reply.status_code == 200
    assert presented(fake_upstream.requests(CHAT_PATH)[0]) == CLIENT_TOKEN
    assert len(logs.lines) >= 2  # DEBUG logging did run through both requests
    assert_nowhere(CLIENT_TOKEN, [], logs)


def test_an_error_before_generation_is_masked_with_the_requests_own_token(
    serve_with: Any, fake_upstream: FakeUpstream, logs: Logs
) -> None:
    """A client that pastes its token where a model name goes gets a 404 that does not quote
    it back (the HTTP exit masks every envelope with the request's bearer token)."""
    server, _ = gateway(serve_with, upstream_env(fake_upstream), logs, byok=True)
    with server.client(headers={"authorization": f"Bearer {CLIENT_TOKEN}"}) as client:
        reply = client.post("/v1/responses", json={"model": CLIENT_TOKEN, "input": "x"})
    assert reply.status_code == 404
    assert reply.json()["error"]["message"].startswith(f"The model '{MASK}' does not exist")
    assert CLIENT_TOKEN not in reply.text


def test_the_app_puts_the_log_filter_on_the_handlers_it_logs_through(
    serve_with: Any, fake_upstream: FakeUpstream, logs: Logs
) -> None:
    """The app leaves logging to its host and filters the handlers it finds; the
    filter is on each of them, with the configured key."""
    gateway(serve_with, upstream_env(fake_upstream, XR_UP_API_KEY=KEY), logs)
    handlers = [handler for handler in logging.getLogger().handlers if handler is not logs]
    assert handlers
    for handler in handlers:
        (masking,) = [f for f in handler.filters if isinstance(f, SecretMaskingFilter)]
        assert masking.masker.mask(f"x {KEY}") == f"x {MASK}"


# --- GigaChat: credentials and the tokens it fetches ---------------------------------------------


def gigachat_env(fake: GigaChatFake, certificates: Certificates) -> dict[str, str]:
    return {
        "XR_GIGACHAT_AUTH_KEY": fake.auth_key,
        "XR_GIGACHAT_SCOPE": fake.scope,
        "XR_GIGACHAT_BASE_URL": fake.base_url,
        "XR_GIGACHAT_OAUTH_URL": fake.oauth_url,
        "XR_GIGACHAT_CA_BUNDLE": certificates.ca_file,
        "XR_GIGACHAT_MAX_RETRIES": "0",
    }


def test_a_fetched_gigachat_token_and_the_auth_key_echoed_by_the_api_reach_no_exit(
    serve_with: Any,
    gigachat: GigaChatFake,
    certificates: Certificates,
    logs: Logs,
) -> None:
    gigachat.token_prefix = "access-token-of-unusual-shape-"

    def echo(request: RecordedRequest) -> Reply:
        return api_error(400, f"token {presented(request)} and key {AUTH_KEY} are not allowed")

    gigachat.api.route(gigachat.CHAT, echo)
    server, store = gateway(serve_with, gigachat_env(gigachat, certificates), logs)
    with server.client() as client:
        reply = client.post(
            "/v1/responses", json={"model": "gigachat/GigaChat-2-Max", "input": "x"}
        )
    (token,) = gigachat.issued
    register_secret(token, "a GigaChat token the gateway fetched")
    assert presented(gigachat.api.requests(gigachat.CHAT)[0]) == token
    assert reply.status_code == 400
    assert (
        reply.json()["error"]["message"] == f"gigachat: token {MASK} and key {MASK} are not allowed"
    )
    assert logged_masked(logs, f"token {MASK} and key {MASK} are not allowed")
    texts = [reply.text, *stored_texts(server, store)]
    assert_nowhere(token, texts, logs)
    assert_nowhere(AUTH_KEY, texts, logs)


def test_the_gigachat_auth_key_echoed_by_the_oauth_endpoint_reaches_no_exit(
    serve_with: Any,
    gigachat: GigaChatFake,
    certificates: Certificates,
    logs: Logs,
) -> None:

    def refuse(request: RecordedRequest) -> Reply:
        key = presented(request)  # without "Basic ": no credential shape left to spot
        return oauth_error(401, 4, f"key {key} is revoked")

    gigachat.oauth.route(gigachat.OAUTH, refuse)
    server, store = gateway(serve_with, gigachat_env(gigachat, certificates), logs)
    with server.client() as client:
        reply = client.post(
            "/v1/responses", json={"model": "gigachat/GigaChat-2-Max", "input": "x"}
        )
    assert presented(gigachat.oauth.requests(gigachat.OAUTH)[0]) == AUTH_KEY
    assert reply.status_code == 502
    assert f"key {MASK} is revoked" in reply.json()["error"]["message"]
    assert logged_masked(logs, f"key {MASK} is revoked")
    assert_nowhere(AUTH_KEY, [reply.text, *stored_texts(server, store)], logs)


def test_every_configured_secret_is_masked_including_derived_gigachat_credentials() -> None:
    container = make_container()
    container.environ.override(
        providers.Object(
            {
                "XR_UP_BASE_URL": "http://127.0.0.1:9/v1",
                "XR_UP_API_KEY": KEY,
                "XR_GIGACHAT_USER": "gc-user",
                "XR_GIGACHAT_PASSWORD": "gc-pass-word-1",
            }
        )
    )
    basic = base64.b64encode(b"gc-user:gc-pass-word-1").decode()
    masker = container.secret_masker()
    assert masker.mask(f"{KEY} gc-pass-word-1 {basic}") == f"{MASK} {MASK} {MASK}"
    assert masker.mask("gc-user") == "gc-user"  # a user name is not a secret


# --- upstream error fields: the pattern net ---------------------------------------------------


def test_param_and_code_of_an_upstream_error_are_cleaned_like_its_message() -> None:
    """A key the gateway does not know (another tenant's, echoed by a shared upstream) is still
    caught by its shape in every field the client gets."""
    foreign = "sk-proj-Foreign0123456789abcdef"
    body = (
        b'{"error": {"message": "bad ' + foreign.encode() + b'", "param": "'
        + foreign.encode() + b'", "code": "key.' + foreign.encode() + b'"}}'
    )  # fmt: skip
    error = map_upstream_error("up", 400, body, {"content-type": "application/json"})
    streamed = map_stream_error(
        "up", {"message": "x", "code": "invalid_request_error", "param": f"Bearer {foreign}"}
    )
    for text in (error.message, error.param, error.code, streamed.param):
        assert text is not None and foreign not in text


# --- the log filter ------------------------------------------------------------------------------


def test_the_log_filter_masks_message_arguments_and_tracebacks() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(SecretMaskingFilter(SecretMasker([KEY])))
    logger = logging.getLogger("tests.secret_masking.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("key %s in an argument", KEY)
        logger.warning("dict %(k)s", {"k": KEY})
        logger.warning("an object %s", ValueError(KEY))
        try:
            raise RuntimeError(f"failed with {KEY}")
        except RuntimeError:
            logger.exception("in a traceback")
    finally:
        logger.removeHandler(handler)
    assert records[:3] == [f"key {MASK} in an argument", f"dict {MASK}", f"an object {MASK}"]
    assert f"RuntimeError: failed with {MASK}" in records[3]
    assert all(KEY not in record for record in records)


def test_install_replaces_an_earlier_filter_instead_of_stacking() -> None:
    handler = logging.NullHandler()
    logger_name = "tests.secret_masking.install"
    logging.getLogger(logger_name).addHandler(handler)
    try:
        install_secret_filter(SecretMasker([KEY]), [logger_name])
        install_secret_filter(SecretMasker([CLIENT_TOKEN]), [logger_name])
        (only,) = handler.filters
        assert isinstance(only, SecretMaskingFilter) and only.masker.mask(CLIENT_TOKEN) == MASK
    finally:
        logging.getLogger(logger_name).removeHandler(handler)
