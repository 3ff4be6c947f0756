"""``alcove bench sfu``'s floor (tools/bench_sfu.py ``_floor``): a relay on the SFU worker's own event loop that
moves the forward phase's datagrams and does nothing else. It must really move them (every datagram of every
publisher to every subscriber, at the rate asked for), on the worker's loop, and report its CPU per packet sent.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/sfu/test_bench_floor.py'
"""

from __future__ import annotations

import pytest

from tools import bench_sfu

# serial: it checks a rate (every datagram at the rate asked for, ±10 %), which a CI machine busy with the browser
# suite beside it once cut to 87 % (the sinks' sockets overflow while the relay's process waits for a core)
pytestmark = [pytest.mark.sfu, pytest.mark.media, pytest.mark.serial]


async def test_the_floor_moves_every_datagram_to_every_subscriber() -> None:
    publishers, subscribers, video_pps = 2, 3, 44.0  # not a whole number of datagrams per frame
    floor = await bench_sfu._floor(publishers=publishers, subscribers=subscribers, seconds=2.0, windows=2,
                                   video_pps=video_pps, video_bytes=1000)
    expected = publishers * subscribers * (50 + video_pps)  # audio every 20 ms, video in 30 frames a second
    assert 0.9 * expected <= floor["packets_out_per_second"] <= 1.1 * expected, floor
    assert floor["event_loop"] == "uvloop", floor  # the worker's own loop (server.sfu.worker.run_loop)
    assert floor["cpu_percent"] > 0 and len(floor["cpu_percent_windows"]) == 2, floor
    assert floor["cpu_us_per_packet_out"] == pytest.approx(10_000 * floor["cpu_percent"]
                                                           / floor["packets_out_per_second"], rel=0.02)
    assert floor["streams_per_core_estimate"] == pytest.approx(100 * publishers * subscribers / floor["cpu_percent"],
                                                               rel=0.02)
