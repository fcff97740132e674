"""GigaChat authentication and TLS, provider against the HTTPS fake (tests/gigachat_fake.py):
OAuth with the authorization key, the token cache (single flight, refresh before expiry,
refresh and one retry on 401), password and ready-token modes, BYOK, OAuth failures, the CA
bundle, insecure mode, mutual TLS, the concurrency limit, and secrets kept out of logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.gigachat_fake import (
    AUTH_KEY,
    PASSWORD,
    USER,
    UUID4,
    Certificates,
    GigaChatFake,
    api_error,
    certificates_fixture,  # noqa: F401  (the fixture)
    collect,
    gigachat_fixture,  # noqa: F401  (the fixture)
    make_call,
    oauth_error,
    provider_for,
)
from tests.upstreams import Reply
from xrouter.adapters.providers.gigachat.auth import expires_at_seconds
from xrouter.adapters.providers.gigachat.provider import GigaChatProvider
from xrouter.adapters.providers.gigachat.tls import TLSSettings
from xrouter.application.ports import CallContext
from xrouter.domain.errors import GatewayError, Overloaded, ProviderError, Unauthorized
from xrouter.domain.provider_events import TextDelta

Factory = Callable[..., GigaChatProvider]


@pytest.fixture
async def make_provider(
    gigachat: GigaChatFake,
    certificates: Certificates,
) -> AsyncIterator[Factory]:
    made: list[GigaChatProvider] = []

    def make(**kwargs: Any) -> GigaChatProvider:
        provider = provider_for(gigachat, certificates, **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


def text_of(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def failure(provider: GigaChatProvider, body: dict[str, Any] | None = None) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await collect(provider, make_call(body or {"input": "hi"}))
    return caught.value


# --- OAuth and the token cache -------------------------------------------------------------------


async def test_one_token_for_many_concurrent_requests(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    gigachat.oauth_delay_s = 0.2  # every request arrives while the token is on its way
    provider = make_provider()
    results = await asyncio.gather(
        *(collect(provider, make_call({"input": f"hello {n}"})) for n in range(20))
    )
    assert sorted(text_of(events) for events in results) == sorted(f"hello {n}" for n in range(20))
    (oauth_request,) = gigachat.oauth.requests(gigachat.OAUTH)
    assert oauth_request.headers["authorization"] == f"Basic {AUTH_KEY}"  # sent as given
    assert UUID4.fullmatch(oauth_request.headers["rquid"])
    assert oauth_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert oauth_request.body == b"scope=GIGACHAT_API_B2B"
    assert set(gigachat.bearers()) == {"Bearer tok-1"}
    assert gigachat.api.hits(gigachat.CHAT) == 20


async def test_token_is_refreshed_a_minute_before_it_expires(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    clock = [time.time()]
    gigachat.token_lifetime_s = 600
    provider = make_provider(now=lambda: clock[0])
    await collect(provider, make_call({"input": "one"}))
    clock[0] += 600 - 61  # 61 s left: still used
    await collect(provider, make_call({"input": "two"}))
    clock[0] += 2  # 59 s left: refreshed before GigaChat would refuse it
    await collect(provider, make_call({"input": "three"}))
    assert gigachat.bearers() == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    rquids = [r.headers["rquid"] for r in gigachat.oauth.requests(gigachat.OAUTH)]
    assert len(rquids) == 2 and rquids[0] != rquids[1]  # a fresh RqUID per token request


async def test_expires_at_in_seconds_is_accepted(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    gigachat.expires_in_seconds = True
    provider = make_provider()
    await collect(provider, make_call({"input": "one"}))
    await collect(provider, make_call({"input": "two"}))
    assert gigachat.oauth.hits(gigachat.OAUTH) == 1  # read as ms it would look long expired
    assert expires_at_seconds(1_750_000_000_000) == expires_at_seconds(1_750_000_000) == 1.75e9


async def test_a_401_drops_the_token_refreshes_and_retries_once(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    provider = make_provider()
    await collect(provider, make_call({"input": "before"}))
    gigachat.revoke("tok-1")  # GigaChat forgets it early (restart, revocation)
    events = await collect(provider, make_call({"input": "after"}))
    assert text_of(events) == "after"
    assert gigachat.bearers() == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    assert gigachat.oauth.hits(gigachat.OAUTH) == 2


async def test_a_401_with_the_fresh_token_too_fails_without_a_third_try(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    provider = make_provider()
    gigachat.api.script(gigachat.CHAT, [api_error(401, "Unauthorized")] * 3)
    error = await failure(provider)
    assert isinstance(error, ProviderError) and error.status == 502
    assert error.code == "upstream_auth_failed"
    assert "a fresh one too" in error.message and "XR_GIGACHAT_AUTH_KEY" in error.message
    assert gigachat.api.hits(gigachat.CHAT) == 2
    assert gigachat.oauth.hits(gigachat.OAUTH) == 2


async def test_a_stream_refused_with_401_is_retried_with_a_fresh_token(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    provider = make_provider()
    gigachat.api.script(gigachat.CHAT, api_error(401, "Unauthorized"))
    events = await collect(provider, make_call({"input": "streamed words", "stream": True}))
    assert text_of(events) == "streamed words"
    assert gigachat.api.hits(gigachat.CHAT) == 2


async def test_a_failing_token_endpoint_is_asked_once_for_all_waiting_requests(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    gigachat.oauth.script(
        gigachat.OAUTH, Reply.json({"status": 503, "message": "busy"}, status=503, delay_s=0.2)
    )
    provider = make_provider()
    results = await asyncio.gather(
        *(collect(provider, make_call({"input": "x"})) for _ in range(8)), return_exceptions=True
    )
    assert all(isinstance(r, ProviderError) for r in results)
    assert gigachat.oauth.hits(gigachat.OAUTH) == 1
    assert gigachat.api.hits(gigachat.CHAT) == 0
    # the next request tries again
    assert text_of(await collect(provider, make_call({"input": "later"}))) == "later"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (oauth_error(401, 4, "Can't decode 'Authorization' header"), "XR_GIGACHAT_AUTH_KEY"),
        (
            oauth_error(400, 7, "scope from db not fully includes consumed scope"),
            "wrong scope",
        ),
        (oauth_error(400, 5, "scope is empty"), "XR_GIGACHAT_SCOPE"),
        (Reply.json({"status": 500, "message": "oops"}, status=500), "status 500"),
        (Reply(status=200, body=b"<html>not json</html>"), "not the expected JSON"),
    ],
)
async def test_oauth_failures_are_a_502_naming_the_cause(
    make_provider: Factory,
    gigachat: GigaChatFake,
    reply: Reply,
    expected: str,
) -> None:
    gigachat.oauth.script(gigachat.OAUTH, reply)
    error = await failure(make_provider())
    assert error.status == 502 and error.code == "upstream_auth_failed"
    assert error.message.startswith("GigaChat authentication failed")
    assert expected in error.message
    assert gigachat.api.hits() == 0


async def test_wrong_scope_against_the_real_check(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    error = await failure(make_provider(scope="GIGACHAT_API_CORP"))
    assert "GIGACHAT_API_PERS" in error.message and "OAuth code 7" in error.message
    assert gigachat.oauth.requests(gigachat.OAUTH)[0].body == b"scope=GIGACHAT_API_CORP"


# --- other credentials -----------------------------------------------------------------------


async def test_user_and_password_get_a_token_from_the_api_token_endpoint(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    provider = make_provider(auth_key=None, user=USER, password=PASSWORD)
    assert text_of(await collect(provider, make_call({"input": "hi"}))) == "hi"
    assert gigachat.oauth.hits() == 0
    (token_request,) = gigachat.api.requests("/api/v1/token")
    assert token_request.headers["authorization"].startswith("Basic ")
    assert gigachat.bearers() == ["Bearer tok-1"]

    refused = make_provider(auth_key=None, user=USER, password="wrong")
    error = await failure(refused)
    assert error.status == 502 and "XR_GIGACHAT_PASSWORD" in error.message


async def test_a_ready_access_token_is_used_as_is_and_never_refreshed(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    gigachat.add_token("ready-token-123")
    provider = make_provider(auth_key=None, access_token="ready-token-123")
    assert text_of(await collect(provider, make_call({"input": "hi"}))) == "hi"
    gigachat.revoke("ready-token-123")
    error = await failure(provider)
    assert error.status == 502 and "XR_GIGACHAT_ACCESS_TOKEN" in error.message
    assert gigachat.bearers() == ["Bearer ready-token-123"] * 2  # no retry: nothing to refresh
    assert gigachat.oauth.hits() == 0


async def test_byok_sends_the_clients_token_and_a_refusal_is_the_clients_401(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    gigachat.add_token("client-token-abc")
    provider = make_provider(byok=True)  # the operator's key stays for discovery only
    call = make_call({"input": "mine"}, context=CallContext(client_token="client-token-abc"))
    assert text_of(await collect(provider, call)) == "mine"
    assert gigachat.bearers() == ["Bearer client-token-abc"]
    assert gigachat.oauth.hits() == 0
    with pytest.raises(Unauthorized):
        await collect(provider, make_call({"input": "x"}, context=CallContext("not-a-token")))
    with pytest.raises(Unauthorized):
        await collect(provider, make_call({"input": "x"}))  # no token at all
    assert gigachat.api.hits(gigachat.CHAT) == 2
    assert [m.id for m in await provider.list_models()] == [
        "gigachat/GigaChat-2",
        "gigachat/GigaChat-2-Max",
    ]
    assert gigachat.bearers(gigachat.MODELS) == ["Bearer tok-1"]


# --- TLS ----------------------------------------------------------------------------------------


async def test_without_the_ca_bundle_the_oauth_host_fails_with_a_clear_tls_error(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    error = await failure(make_provider(tls=TLSSettings()))
    assert error.status == 502 and error.code == "upstream_tls_failed"
    assert "could not be verified" in error.message
    assert "XR_GIGACHAT_CA_BUNDLE" in error.message
    assert gigachat.oauth.hits() == 0 and gigachat.api.hits() == 0


async def test_without_the_ca_bundle_the_api_host_fails_with_a_clear_tls_error(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    gigachat.add_token("ready")
    error = await failure(make_provider(auth_key=None, access_token="ready", tls=TLSSettings()))
    assert error.status == 502 and error.code == "upstream_tls_failed"
    assert "CERTIFICATE_VERIFY_FAILED" in error.message
    assert "XR_GIGACHAT_CA_BUNDLE" in error.message
    assert gigachat.api.hits() == 0


async def test_insecure_mode_works_without_a_bundle_and_warns(
    make_provider: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        provider = make_provider(tls=TLSSettings(verify=False))
    assert "verification is DISABLED" in caplog.text
    assert text_of(await collect(provider, make_call({"input": "ok"}))) == "ok"


async def test_mutual_tls_sends_the_client_certificate(certificates: Certificates) -> None:
    fake = GigaChatFake(certificates.mtls_server(), certificates.server).start()
    with_cert = provider_for(
        fake,
        certificates,
        tls=TLSSettings(
            ca_bundle=certificates.ca_file,
            cert=(certificates.client_cert_file, certificates.client_key_file),
        ),
    )
    without_cert = provider_for(fake, certificates)
    try:
        assert text_of(await collect(with_cert, make_call({"input": "mtls"}))) == "mtls"
        with pytest.raises(ProviderError):
            await collect(without_cert, make_call({"input": "no cert"}))
        assert fake.api.hits(fake.CHAT) == 1
    finally:
        await with_cert.aclose()
        await without_cert.aclose()
        fake.stop()


# --- limits and secrets --------------------------------------------------------------------------


async def test_concurrency_limit_follows_the_scope(
    gigachat: GigaChatFake,
    make_provider: Factory,
) -> None:
    gigachat.scope = "GIGACHAT_API_PERS"
    provider = make_provider(scope="GIGACHAT_API_PERS", max_inflight=None, queue_timeout_s=0)
    gigachat.api.script(
        gigachat.CHAT,
        Reply.sse([{"choices": [{"delta": {"content": "slow"}, "index": 0}]}], chunk_delay_s=0.3),
    )
    first = provider.stream(make_call({"input": "a", "stream": True}))
    assert isinstance((await anext(first))[0], TextDelta)  # the one allowed stream is open
    with pytest.raises(Overloaded) as caught:
        await collect(provider, make_call({"input": "b"}))
    assert caught.value.status == 429 and "XR_GIGACHAT_MAX_INFLIGHT" in caught.value.message
    await first.aclose()
    assert provider._transport.inflight == 0  # closing the stream early freed the slot
    business = make_provider(scope="GIGACHAT_API_B2B", max_inflight=None)
    assert business._transport.settings.max_inflight == 10


async def test_secrets_never_reach_logs_or_error_messages(
    gigachat: GigaChatFake,
    make_provider: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    provider = make_provider()
    await collect(provider, make_call({"input": "hi"}))
    gigachat.revoke()
    await collect(provider, make_call({"input": "again"}))  # refresh after a 401
    gigachat.api.script(gigachat.CHAT, [api_error(401, "Unauthorized")] * 2)
    messages.append((await failure(provider)).message)
    gigachat.oauth.script(gigachat.OAUTH, oauth_error(401, 4, "bad key"))
    gigachat.revoke()
    messages.append((await failure(provider)).message)
    password = make_provider(auth_key=None, user=USER, password=PASSWORD + "x")
    messages.append((await failure(password)).message)
    gigachat.add_token("secret-ready-token")
    ready = make_provider(auth_key=None, access_token="secret-ready-token")
    gigachat.revoke("secret-ready-token")
    messages.append((await failure(ready)).message)
    everything = caplog.text + "\n".join(messages) + repr(provider) + repr(ready)
    assert "GigaChat refused the access token (401)" in caplog.text  # the logs did run
    for secret in [AUTH_KEY, PASSWORD, "secret-ready-token", *gigachat.issued]:
        assert secret not in everything
