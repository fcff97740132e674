"""Installs the peer gateways the `peers` suite compares XRouter with, each into a throwaway
environment of its own under the user's cache (never into the project's virtualenv, pyproject
or lock file), reused by later runs when the install finished.

- LiteLLM: `litellm[proxy]` from PyPI into a virtualenv of its own. Pinned to 1.106.12: the
  newer releases' `proxy` extra requires `litellm-proxy` / `litellm-proxy-extras` versions the
  package index did not serve when this was written (and 1.107.x was withdrawn after its
  compromised release), so `pip install 'litellm[proxy]'` without a pin fails to resolve.
- Portkey: `@portkey-ai/gateway` from npm into an npm prefix of its own, run by the system
  `node`. `@hono/node-server` (its Node adapter, a `^1.3.3` dependency) is pinned to 1.13.8
  through npm `overrides`: from 1.14.0 on, the adapter's lightweight Response keeps the
  upstream fetch response's immutable Headers when Portkey wraps a streamed answer, and
  Portkey's next `headers.append` throws "immutable": every streamed chat completion through
  Portkey 1.15.2 then answers 500 "Something went wrong". Non-stream answers are unaffected.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import msgspec

LITELLM_VERSION = "1.106.12"
PORTKEY_VERSION = "1.15.2"
HONO_NODE_SERVER_VERSION = "1.13.8"
MARKER = ".bench-installed"  # written last: a directory without it is an unfinished install
PIP_TIMEOUT_S = 900.0
NPM_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class Installed:
    """A peer ready to run (`path` set), or why it is not (`error` set)."""

    name: str
    path: Path | None  # LiteLLM: the virtualenv; Portkey: start-server.js
    version: str
    error: str = ""


def cache_dir() -> Path:
    """Where the throwaway environments live: $XDG_CACHE_HOME/xrouter-bench (~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xrouter-bench"


def _run(command: list[str], cwd: Path | None, timeout_s: float) -> str:
    """Run an install step; "" when it succeeded, else the tail of its output."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{command[0]}: {exc}"
    if done.returncode == 0:
        return ""
    lines = [line for line in done.stderr.decode(errors="replace").splitlines()
             if not line.startswith("WARNING")]  # fmt: skip
    return f"`{' '.join(command[-3:])}` exited {done.returncode}: {' '.join(lines[-3:])}"


def litellm(cache: Path) -> Installed:
    """The LiteLLM proxy's virtualenv, installed when missing."""
    venv = cache / f"litellm-{LITELLM_VERSION}"
    if (venv / MARKER).exists() and (venv / "bin" / "litellm").exists():
        return Installed("LiteLLM", venv, LITELLM_VERSION)
    shutil.rmtree(venv, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    # The project's interpreter makes the venv (its base Python, not the project's packages).
    error = _run([sys.executable, "-m", "venv", str(venv)], None, 120.0) or _run(
        [str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
        None,
        PIP_TIMEOUT_S,
    )
    if error:
        return Installed("LiteLLM", None, LITELLM_VERSION, f"install failed: {error}")
    (venv / MARKER).touch()
    return Installed("LiteLLM", venv, LITELLM_VERSION)


def portkey(cache: Path) -> Installed:
    """The Portkey gateway's start script, installed when missing."""
    name = "Portkey"
    if shutil.which("node") is None:
        return Installed(name, None, PORTKEY_VERSION, "not installed: no `node` on PATH")
    prefix = cache / f"portkey-{PORTKEY_VERSION}-hono-{HONO_NODE_SERVER_VERSION}"
    entry = prefix / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if (prefix / MARKER).exists() and entry.exists():
        return Installed(name, entry, PORTKEY_VERSION)
    shutil.rmtree(prefix, ignore_errors=True)
    prefix.mkdir(parents=True)
    manifest = {
        "name": "xrouter-bench-portkey",
        "private": True,
        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
        "overrides": {"@hono/node-server": HONO_NODE_SERVER_VERSION},
    }
    (prefix / "package.json").write_bytes(msgspec.json.encode(manifest))
    npm = shutil.which("npm") or "npm"
    error = _run([npm, "install", "--no-audit", "--no-fund"], prefix, NPM_TIMEOUT_S)
    if error or not entry.exists():
        return Installed(name, None, PORTKEY_VERSION, f"install failed: {error or 'no entry'}")
    (prefix / MARKER).touch()
    return Installed(name, entry, PORTKEY_VERSION)


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "none"
    done = subprocess.run([node, "--version"], capture_output=True, timeout=10, check=False)
    return done.stdout.decode().strip()
