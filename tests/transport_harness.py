"""The transport test harness: an HttpTransport aimed at the fake upstream that records its
retry waits instead of sleeping, and small helpers shared by the transport test modules."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.upstreams import FakeUpstream
from xrouter.adapters.providers.transport import HttpTransport, SSEEvent, TransportSettings
from xrouter.entrypoints.env_fields import EnvNames

CHAT = "/v1/chat/completions"
SECRET = "sk-live-0123456789abcdefSECRET"
FAKE_NAMES = EnvNames("XR_FAKE_")
"""The fake upstream's settings named as the configuration names a provider called `fake`'s."""
HEADERS = {
    "Authorization": f"Bearer {SECRET}",
    "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
}


def chat_body(text: str = "hello world", *, stream: bool = False) -> bytes:
    payload: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": text}]}
    if stream:
        payload["stream"] = True
    return json.dumps(payload).encode()


@dataclass
class Harness:
    upstream: FakeUpstream
    waits: list[float] = field(default_factory=list)
    made: list[HttpTransport] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def transport(self, **overrides: Any) -> HttpTransport:
        """A transport to the fake that records its retry waits instead of sleeping."""
        options: dict[str, Any] = {
            "base_url": self.upstream.base_url,
            "read_timeout_s": 5.0,
            "first_byte_timeout_s": 5.0,
            "trust_env": False,  # a proxy in the environment must not sit between us and 127.0.0.1
            "setting_names": FAKE_NAMES,
        }
        options.update(overrides)
        made = HttpTransport(
            "fake", TransportSettings(**options), sleep=self.sleep, jitter=lambda: 0.5
        )
        self.made.append(made)
        return made


@pytest.fixture(name="harness")
async def harness_fixture(fake_upstream: FakeUpstream) -> AsyncIterator[Harness]:
    """Import `harness_fixture` into a test module to use the `harness` fixture."""
    harness = Harness(fake_upstream)
    yield harness
    for made in harness.made:
        await made.aclose()


async def collect(reads: AsyncGenerator[list[SSEEvent], None]) -> list[SSEEvent]:
    """The events of a stream, its batches (one per read of the body) joined."""
    async with aclosing(reads) as iterator:
        return [event async for batch in iterator for event in batch]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
