"""TLC itself on every spec with its cfg, when the model checker is available.

TLC is on no package registry, so CI has none and these tests skip there, saying so in the
summary (`-rs`). Where it is present (`XR_TLA2TOOLS_JAR`, or `formal/tla2tools.jar`, and `java`
on the PATH) they are the real check: each spec parses, TLC finds no error, and its distinct
state count is the one formal/README.md records (which the Python transcription must match).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .specs import FORMAL, recorded_state_count

SPECS = ("xrouter", "xrouter_inflight", "xrouter_billing")
TLC_TIMEOUT_S = 300


def _tla2tools() -> Path | None:
    configured = os.environ.get("XR_TLA2TOOLS_JAR")
    candidate = Path(configured) if configured else FORMAL / "tla2tools.jar"
    return candidate if candidate.is_file() else None


def _tlc_or_skip() -> tuple[str, Path]:
    jar = _tla2tools()
    java = shutil.which("java")
    if jar is None or java is None:
        missing = "tla2tools.jar" if jar is None else "java"
        pytest.skip(
            f"TLC NOT RUN: {missing} not found (set XR_TLA2TOOLS_JAR or put tla2tools.jar in "
            "formal/; formal/README.md says how to build it). The Python transcription still "
            "checks the same state spaces."
        )
    return java, jar


@pytest.mark.parametrize("spec", SPECS)
def test_tlc_checks_spec_without_error(spec: str, tmp_path: Path) -> None:
    java, jar = _tlc_or_skip()
    result = subprocess.run(
        [
            java,
            "-XX:+UseParallelGC",
            "-cp",
            str(jar),
            "tlc2.TLC",
            "-workers",
            "1",
            "-cleanup",
            "-metadir",
            str(tmp_path / "states"),
            "-config",
            f"{spec}.cfg",
            f"{spec}.tla",
        ],
        cwd=FORMAL,
        capture_output=True,
        text=True,
        timeout=TLC_TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "No error has been found" in output, output[-4000:]
    # The final count, not a progress report printed while the search ran.
    found = re.findall(r"([\d,]+) distinct states found, 0 states left on queue", output)
    assert found, output[-4000:]
    assert int(found[-1].replace(",", "")) == recorded_state_count(spec)
