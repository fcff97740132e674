"""Starting the fake upstream and a gateway that relays to it (provider `up`)."""

from __future__ import annotations

from pathlib import Path

import servers

FAKE_UPSTREAM = "fake_upstream:create_app"
PROVIDER = "up"


def gateway_env(upstream_port: int) -> dict[str, str]:
    """The gateway's environment: one OpenAI-compatible provider `up` at the fake upstream, no
    retries, room for every benchmark connection, no discovery call at startup."""
    return {
        "XR_UP_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "XR_UP_API_KEY": "bench-key",
        "XR_UP_MAX_RETRIES": "0",
        "XR_UP_MAX_INFLIGHT": "256",
        "XR_DISCOVERY": "false",
    }


def start_pair(
    gateway_cpus: set[int] | None, upstream_cpus: set[int] | None, src: Path | None
) -> tuple[servers.Server, servers.Server]:
    """(upstream, gateway), each with one worker, pinned as asked: the fake upstream on stock
    uvicorn, the gateway as `xrouter serve` runs it."""
    upstream = servers.start("uvicorn", FAKE_UPSTREAM, cpus=upstream_cpus)
    try:
        gateway = servers.start(
            "xrouter", servers.GATEWAY, env=gateway_env(upstream.port), cpus=gateway_cpus, src=src
        )
    except Exception:
        upstream.stop()
        raise
    return upstream, gateway
