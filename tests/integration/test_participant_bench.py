"""Smoke test of the signaling benchmark with tiny numbers (child-process server and baseline)."""

from __future__ import annotations

import itertools

import pytest

from tools.bench_signaling import KNEE_RATES, _median_knee, bench_signaling, percentile

pytestmark = [pytest.mark.integration]


async def test_bench_signaling_shape() -> None:
    result = await bench_signaling(rooms=2, participants=3, seconds=2)
    for key in ("rooms", "participants", "seconds", "messages", "p50_ms", "p99_ms", "join_p50_ms",
                "join_p99_ms", "rss_mb", "baseline", "baseline_ratio"):
        assert key in result, key
    assert (result["rooms"], result["participants"], result["seconds"]) == (2, 3, 2)
    assert result["messages"] == 12 and result["lost"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] < 1000
    assert 0 < result["join_p50_ms"] <= result["join_p99_ms"]
    assert result["rss_mb"] > 10
    assert set(result["baseline"]) >= {"p50_ms", "p99_ms"} and result["baseline"]["messages"] == 12
    assert result["baseline_ratio"] > 0
    # CPU is counted in clock ticks: a run this small may count none
    assert result["cpu_us_per_delivery"] >= 0 and result["baseline"]["cpu_us_per_delivery"] >= 0
    assert "cpu_ratio" in result and result["closed_sockets"] == {} == result["baseline"]["closed_sockets"]


async def test_bench_against_the_fixture_server(alcove: object) -> None:
    result = await bench_signaling(rooms=1, participants=2, seconds=1, server=alcove.url,  # type: ignore[attr-defined]
                                   admin_key=alcove.admin_key)  # type: ignore[attr-defined]
    assert result["messages"] == 2 and result["rss_mb"] is None


def test_the_knee_is_the_median_of_its_searches() -> None:
    searches = [{"deliveries_per_s": k, "steps": [{"delivered_per_s": k}]} for k in (900, None, 1200)]
    knee = _median_knee(searches)
    assert knee["deliveries_per_s"] == 900 and knee["steps"] == [{"delivered_per_s": 900}]
    assert knee["repeats"] == [900, None, 1200]  # a search that found no knee counts as the lowest
    assert _median_knee(searches[:1])["deliveries_per_s"] == 900
    assert all(abs(b / a - 1.25) < 0.01 for a, b in itertools.pairwise(KNEE_RATES))


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile(list(map(float, range(100))), 0.99) == 98.0


async def test_bench_e2ee_reports_both_throughputs() -> None:
    from tools.bench_e2ee import bench_e2ee

    result = await bench_e2ee(seconds=0.5)
    python = result["python"]
    assert python["sframe_mb_s"] > 0 and python["aesgcm_mb_s"] > 0 and python["frames"] > 100
    assert python["ratio"] > 0 and python["cpu_pct_per_av_stream"] > 0
    assert result["browser"] is None and "browser" in result["note"]
