"""Refusals log one line per setting per interval, and the next line counts the rest."""

from __future__ import annotations

import logging

import pytest

from xrouter.application.refusal_log import RefusalLog


def test_one_line_per_setting_per_interval_counting_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    refusals = RefusalLog(logging.getLogger("test.refusals"), interval_s=10.0, now=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.refusals"):
        for _ in range(5):
            refusals.refused("XR_A", "refused by %s", "XR_A")
        refusals.refused("XR_B", "refused by %s", "XR_B", level=logging.INFO)
        now[0] += 10.0
        refusals.refused("XR_A", "refused by %s", "XR_A")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (logging.WARNING, "refused by XR_A"),
        (logging.INFO, "refused by XR_B"),
        (logging.WARNING, "refused by XR_A (4 more refused since the last line)"),
    ]
