"""How each gateway of the `peers` suite is started, configured to relay OpenAI-compatible chat
completions to the same fake upstream, and timed from process spawn to its first relayed 200.

Every gateway answers `POST /v1/chat/completions` with a model that reaches the fake upstream:

- XRouter: `xrouter serve` (one worker), provider `up` (bench/upstream_env.py), model `up/fake`;
  nothing else set, so telemetry is as users get it by default (metrics and access log on).
- Portkey: `node start-server.js --port=N` as its README runs it (with its log console, not
  `--headless`); the route is per request, in headers (`x-portkey-provider: openai`,
  `x-portkey-custom-host`), model `fake`.
- LiteLLM: `litellm --config` (one worker) with a model list naming the fake upstream; a master
  key (it refuses to start without one), and LITELLM_LOCAL_MODEL_COST_MAP=True so that its start
  does not wait on downloading the model price list (the bench machine may have no internet).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import servers
import upstream_env
from workload import chat_body

CHAT = "/v1/chat/completions"
LITELLM_MASTER_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
LONG_CHUNKS = 2000  # content chunks of the long streams the chunk CPU is measured on
UPSTREAM_MODEL = "fake"
LONG_MODEL = f"fake-{LONG_CHUNKS}"
START_TIMEOUT_S = 90.0
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class GatewaySpec:
    """One gateway to measure: how to start it on a port, and what every request carries."""

    name: str
    command: Callable[[int], list[str]]
    model_prefix: str = ""  # XRouter's provider prefix; the peers take the upstream's ids
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    src: Path | None = None  # XRouter only: import xrouter from here (`--rev`)

    def model(self, upstream_model: str) -> str:
        return self.model_prefix + upstream_model


def chat_request(port: int, spec: GatewaySpec | None, model: str, stream: bool) -> bytes:
    """A raw HTTP/1.1 chat completion request (to the upstream itself when `spec` is None)."""
    body = chat_body(spec.model(model) if spec else model, stream)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (spec.headers if spec else {}).items())
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def xrouter(
    upstream_port: int, src: Path | None, env: dict[str, str] | None = None, name: str = "XRouter",
    headers: dict[str, str] | None = None,
) -> GatewaySpec:  # fmt: skip
    return GatewaySpec(
        name=name,
        command=lambda port: servers.command("xrouter", servers.GATEWAY, port),
        model_prefix=f"{upstream_env.PROVIDER}/",
        env=upstream_env.gateway_env(upstream_port) | (env or {}),
        headers=headers or {},
        src=src,
    )


def portkey(upstream_port: int, start_script: Path) -> GatewaySpec:
    node = "node"
    return GatewaySpec(
        name="Portkey",
        command=lambda port: [node, str(start_script), f"--port={port}"],
        headers={
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1",
            "Authorization": "Bearer bench-key",
        },
    )


def litellm_config(upstream_port: int) -> str:
    """The proxy's config: both upstream models, and the master key."""
    models = "".join(
        f"  - model_name: {model}\n"
        f"    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        f"      api_key: bench-key\n"
        for model in (UPSTREAM_MODEL, LONG_MODEL)
    )
    return f"model_list:\n{models}general_settings:\n  master_key: {LITELLM_MASTER_KEY}\n"


def litellm(upstream_port: int, venv: Path, workdir: Path) -> GatewaySpec:
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(upstream_port))
    binary = venv / "bin" / "litellm"
    return GatewaySpec(
        name="LiteLLM",
        command=lambda port: [
            *(str(binary), "--config", str(config), "--host", "127.0.0.1"),
            *("--port", str(port), "--num_workers", "1"),
        ],
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        headers={"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
    )


def probe(port: int, request: bytes) -> bool:
    """One request on its own connection (closed after it): did it answer 200?"""
    raw = request.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S) as sock:
            sock.sendall(raw)
            head = sock.recv(64)
            while sock.recv(65536):  # read to the end: the request is complete when timed
                pass
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 200")


def start(spec: GatewaySpec, cpus: set[int] | None) -> servers.Server:
    """Spawn the gateway (pinned to `cpus`, like every process it forks) and wait for the first
    200 to a relayed chat completion; `startup_s` is the time from spawn to that answer."""
    port = servers.free_port()
    env = {**spec.env, "PYTHONPATH": servers.bench_path(spec.src)}
    request = chat_request(port, spec, UPSTREAM_MODEL, stream=False)
    return servers.launch(
        spec.name, port, spec.command(port), env, cpus, lambda: probe(port, request),
        START_TIMEOUT_S, f"{spec.name} did not answer a chat completion with 200",
    )  # fmt: skip
