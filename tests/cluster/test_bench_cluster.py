"""``alcove bench signaling --instances 2 --redis URL``: the knee against the baseline relay, and the same load on
one and two instances sharing Redis (a small run: the figures' shape, not their size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.bench_signaling import bench_signaling

from .conftest import RedisServer, require_cluster_tools

pytestmark = [pytest.mark.integration, pytest.mark.redis]


async def test_bench_signaling_on_two_instances(tmp_path: Path) -> None:
    require_cluster_tools()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        result = await bench_signaling(rooms=4, participants=3, seconds=2, instances=2, redis=redis.url, knee=True,
                                       repeats=1)
    finally:
        redis.stop()
    assert result["lost"] == 0
    for knee in (result["knee"], result["baseline"]["knee"]):
        assert knee["steps"] and knee["steps"][0]["delivered_per_s"] > 0
    assert result["knee_ratio"] is None or result["knee_ratio"] > 0
    one, two = result["instances"]["1"], result["instances"]["2"]
    assert one["cross_instance_share"] == 0.0 and two["cross_instance_share"] == pytest.approx(2 / 3, abs=0.01)
    for run in (one, two):
        assert run["lost"] == 0 and run["delivered_per_s"] > 0 and run["p50_ms"] is not None
    assert two["redis_cpu_us_per_crossing"] is not None and two["redis_cpu_us_per_crossing"] > 0
