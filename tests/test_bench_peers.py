"""The peer comparison's report (bench/peers_report.py): the figures a run produced become the
table, the ratios and the targets of issue 16, and a peer that could not run is named with why.
The measuring itself needs the peers installed and two cores; it runs as `bench/run.py --suite
peers`, not here."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench_modules() -> Any:
    """bench/ is a directory of scripts importing each other by bare name."""
    sys.path.insert(0, str(BENCH))
    try:
        import peer_gateways
        import peers
        import peers_report
    finally:
        sys.path.remove(str(BENCH))
    return peers, peers_report, peer_gateways


def _figures(peers: Any, **values: float) -> Any:
    base = {
        "added_p50_ms": 1.0, "rps": 500.0, "p50_ms": 40.0, "p99_ms": 60.0,
        "added_ttfb_ms": 0.8, "cpu_ms_per_1k_chunks": 10.0, "startup_s": 0.4,
        "idle_rss_mib": 60.0, "peak_rss_mib": 90.0,
    }  # fmt: skip
    return peers.Figures(**(base | values))


def test_the_table_holds_each_gateways_median_and_xrouters_ratio_to_each_peer(
    bench_modules: Any,
) -> None:
    peers, report, _ = bench_modules
    result = peers.PeerResult()
    result.runs["XRouter"] = [_figures(peers, rps=r) for r in (400.0, 600.0, 500.0)]
    result.runs["Portkey"] = [_figures(peers, rps=250.0, added_p50_ms=4.0)] * 3
    result.runs["LiteLLM"] = [_figures(peers, rps=50.0, added_p50_ms=20.0)] * 3

    lines = report.table(result)

    assert lines[0] == (
        "| figure | XRouter | Portkey | LiteLLM | XRouter / Portkey | XRouter / LiteLLM |"
    )
    throughput = next(line for line in lines if line.startswith("| throughput"))
    assert throughput == (
        "| throughput, c=32, one core | 500 req/s | 250 req/s | 50 req/s | 2.00x | 10.00x |"
    )
    added = next(line for line in lines if line.startswith("| added p50"))
    assert added.endswith("| 0.25x | 0.05x |")


def test_targets_say_which_are_missed_and_by_how_much(
    bench_modules: Any,
) -> None:
    peers, report, _ = bench_modules
    result = peers.PeerResult()
    result.runs["XRouter"] = [
        _figures(peers, cpu_ms_per_1k_chunks=30.0, p99_ms=150.0, startup_s=1.1, idle_rss_mib=96)
    ]
    result.runs["Portkey"] = [_figures(peers, cpu_ms_per_1k_chunks=24.0, added_p50_ms=3.0)]
    result.skipped["LiteLLM"] = "install failed: no matching distribution"

    lines = report.targets(result)

    assert "CPU per 1,000 chunks <= 0.5x Portkey: 1.25x, **missed** (needs 12.00, has 30.00)" in (
        lines
    )
    assert "added p50 at c=1 <= 0.5x Portkey: 0.33x, met" in lines
    assert "Against LiteLLM: not measured (install failed: no matching distribution)." in lines
    assert "p99 <= 2x p50 at c=32: 3.75x, **missed**" in lines
    assert "start to first 200 <= 0.5 s: 1.10 s, **missed**" in lines
    assert "idle RSS <= 64 MiB: 96 MiB, **missed**" in lines


def test_a_median_leaves_out_repetitions_that_have_no_value(
    bench_modules: Any,
) -> None:
    peers, _, _ = bench_modules
    result = peers.PeerResult()
    result.runs["Portkey"] = [
        _figures(peers, added_ttfb_ms=math.nan),
        _figures(peers, added_ttfb_ms=30.0),
        _figures(peers, added_ttfb_ms=32.0),
    ]

    median = result.median("Portkey")

    assert median.added_ttfb_ms == 31.0
    assert result.median("LiteLLM") is None


def test_the_rendered_section_names_a_peer_that_was_not_measured_and_the_extra_rows(
    bench_modules: Any,
) -> None:
    peers, report, _ = bench_modules
    result = peers.PeerResult(versions={"Portkey": "@portkey-ai/gateway 1.15.2"})
    result.runs["XRouter"] = [_figures(peers)]
    result.runs["XRouter, Redis + keys"] = [_figures(peers, rps=200.0)]
    result.skipped["Portkey"] = "not installed: no `node` on PATH"

    text = "\n".join(report.render(result, ["    bench/run.py --suite peers"]))

    assert "- Not measured: Portkey: not installed: no `node` on PATH" in text
    assert "| figure | XRouter | XRouter, Redis + keys |" in text
    assert "| throughput, c=32, one core | 500 req/s | 200 req/s |" in text


def test_litellm_is_configured_with_both_upstream_models_and_a_master_key(
    bench_modules: Any,
) -> None:
    _, _, gateways = bench_modules

    config = gateways.litellm_config(18001)

    assert config.count("api_base: http://127.0.0.1:18001/v1") == 2
    assert "model_name: fake\n" in config
    assert "model_name: fake-2000\n" in config
    assert f"master_key: {gateways.LITELLM_MASTER_KEY}" in config
