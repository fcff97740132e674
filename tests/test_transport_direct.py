"""The transport's own client sends through DirectSend (http1/direct.py): what reaches the
upstream, what the caller gets back, cookies and errors are those of httpx's client path."""

from __future__ import annotations

import httpx
import pytest

from tests.transport_harness import (
    CHAT,
    HEADERS,
    Harness,
    chat_body,
    closed_port,
    harness_fixture,  # noqa: F401  (the `harness` fixture)
)
from tests.upstreams import Reply
from xrouter.adapters.providers.http1 import Http1Transport
from xrouter.adapters.providers.http1.direct import DirectSend
from xrouter.adapters.providers.http1.request_head import encode_head
from xrouter.adapters.providers.transport import (
    HttpTransport,
    TransportSettings,
    call_timeout,
    pooled_client,
)
from xrouter.domain.errors import ProviderError


async def test_the_wire_request_is_the_one_httpx_client_sends(harness: Harness) -> None:
    direct = harness.transport(headers={"X-Title": "XRouter"})
    settings = direct.settings
    client = pooled_client(settings, tls=True)
    through_httpx = HttpTransport("fake", settings, client=client)
    try:
        await direct.post_json("/chat/completions", chat_body("one"), HEADERS)
        await through_httpx.post_json("/chat/completions", chat_body("one"), HEADERS)
        await direct.get_json("/models", {})
        await through_httpx.get_json("/models", {})
    finally:
        await through_httpx.aclose()
        await client.aclose()
    posts = harness.upstream.requests(CHAT)
    gets = harness.upstream.requests("/v1/models")
    assert posts[0].headers == posts[1].headers
    assert posts[0].body == posts[1].body
    assert gets[0].headers == gets[1].headers
    assert posts[0].headers["user-agent"].startswith("python-httpx/")
    assert posts[0].headers["x-title"] == "XRouter"


async def test_a_cookie_the_upstream_sets_is_sent_back_as_the_client_does(
    harness: Harness,
) -> None:
    harness.upstream.script(
        CHAT,
        [
            Reply.json({"ok": 1}, headers={"Set-Cookie": "route=east; Path=/"}),
            Reply.json({"ok": 2}),
        ],
    )
    transport = harness.transport()
    first = await transport.post_json("/chat/completions", b"{}", {})
    second = await transport.post_json("/chat/completions", b"{}", {})
    assert (first.json(), second.json()) == ({"ok": 1}, {"ok": 2})
    sent = harness.upstream.requests(CHAT)
    assert "cookie" not in sent[0].headers
    assert sent[1].headers["cookie"] == "route=east"


async def test_a_refused_connection_carries_its_request(harness: Harness) -> None:
    port = closed_port()
    settings = TransportSettings(base_url=f"http://127.0.0.1:{port}/v1", trust_env=False)
    lean = Http1Transport()
    client = pooled_client(settings, tls=True, transport=lean)
    direct = DirectSend(client, lean, call_timeout(settings))
    request = direct.build("POST", "/chat/completions", b"{}", {})
    try:
        with pytest.raises(httpx.ConnectError) as caught:
            await direct.send(request)
    finally:
        await client.aclose()
    assert caught.value.request is request
    assert str(request.url) == f"http://127.0.0.1:{port}/v1/chat/completions"
    transport = harness.transport(base_url=settings.base_url, max_retries=0)
    with pytest.raises(ProviderError):
        await transport.post_json("/chat/completions", b"{}", {})


def test_a_proxy_in_front_keeps_the_client_path() -> None:
    assert DirectSend.usable(None)
    assert DirectSend.usable({"all://localhost": None})
    assert not DirectSend.usable({"http://": object(), "all://localhost": None})


@pytest.mark.parametrize(
    ("method", "body", "headers"),
    [
        ("POST", b'{"a": 1}', {"authorization": "Bearer k", "x-title": "XRouter"}),
        ("POST", b"", {}),
        ("POST", None, {"accept": "text/event-stream"}),
        ("GET", None, {"accept": "application/json"}),
        ("PUT", b"x", {"content-length": "1"}),
    ],
)
def test_the_request_head_is_the_one_httpx_builds(
    method: str, body: bytes | None, headers: dict[str, str]
) -> None:
    settings = TransportSettings(base_url="http://127.0.0.1:9/v1", trust_env=False)
    lean = Http1Transport()
    client = pooled_client(settings, tls=True, transport=lean)
    direct = DirectSend(client, lean, call_timeout(settings))
    ours = direct.build(method, "/chat/completions", body, headers)
    theirs = client.build_request(
        method, "/chat/completions", content=body, headers=headers, timeout=call_timeout(settings)
    )
    assert encode_head(ours) == encode_head(theirs)
    assert ours.extensions == theirs.extensions
    assert str(ours.url) == str(theirs.url)


def test_a_header_value_httpx_refuses_is_refused() -> None:
    settings = TransportSettings(base_url="http://127.0.0.1:9/v1", trust_env=False)
    lean = Http1Transport()
    client = pooled_client(settings, tls=True, transport=lean)
    direct = DirectSend(client, lean, call_timeout(settings))
    with pytest.raises(UnicodeEncodeError):
        client.build_request("POST", "/x", content=b"{}", headers={"x-title": "é"})
    with pytest.raises(UnicodeEncodeError):
        direct.build("POST", "/x", b"{}", {"x-title": "é"})
