"""``alcove bench sfu``'s loaded phase (tools/bench_sfu.py ``_loaded``): many rooms on one SFU worker, driven by one
clients process whose publishers replay pre-encoded media and whose subscribers are light. It must really be that:
aiortc's own VP8 bitstream (a key frame where asked, decodable frame by frame), every room's every stream flowing at
30 fps to the right subscribers on one worker, receiver reports still reaching the SFU, and the floor moving each
room's datagrams to that room's subscribers only.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/sfu/test_bench_loaded.py'
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import av
import pytest

from rtc import aiortc_hooks as hooks
from tools import bench_sfu


def _frames(count: int) -> list[av.VideoFrame]:
    picture = bench_sfu._textured_video_track(320, 240, (80, 160, 220))
    frames = []
    for i in range(count):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for plane, data in zip(frame.planes, picture.planes(i), strict=True):
            plane.update(data)
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90_000)
        frames.append(frame)
    return frames


def test_vp8_bitstream_is_aiortcs_encoding_frame_by_frame_with_key_frames_where_asked() -> None:
    stream = hooks.vp8_bitstream(_frames(40), key_at={25})
    assert len(stream) == 40
    assert [i for i, data in enumerate(stream) if hooks.is_vp8_keyframe(data)] == [0, 25]
    decoder = av.CodecContext.create("vp8", "r")
    decoded = 0
    for data in stream[25:]:  # from the forced key frame on, without what came before: a loop can start there
        decoded += len(decoder.decode(av.Packet(data)))
    assert decoded == 15


async def test_replay_track_yields_the_packets_in_a_loop_at_their_rate() -> None:
    track = bench_sfu._replay_track("audio", [b"a", b"b", b"c"], 0.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    packets = [await track.recv() for _ in range(7)]
    took = loop.time() - t0
    assert [bytes(p) for p in packets] == [b"a", b"b", b"c", b"a", b"b", b"c", b"a"]
    assert [p.pts for p in packets] == [960 * i for i in range(7)]  # 20 ms at 48 kHz
    assert packets[0].time_base == fractions.Fraction(1, 48_000)
    assert took >= 0.1  # paced: six intervals of 20 ms


@pytest.mark.sfu
@pytest.mark.media
@pytest.mark.serial  # it checks rates (30 fps on every stream)
async def test_the_loaded_phase_runs_every_room_on_one_worker_at_full_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[int, Any]] = []
    stats_of = bench_sfu._rtp_packets_out

    def keep(stats: dict[int, Any]) -> int:
        seen.append(stats)
        return stats_of(stats)

    monkeypatch.setattr(bench_sfu, "_rtp_packets_out", keep)
    hooks.allow_loopback_candidates()
    probe = bench_sfu._SignalingProbe()
    await probe.start()
    try:
        result = await bench_sfu._phase(mode="forward", publishers=2, subscribers=2, seconds=2.0, width=320,
                                        height=240, probe=probe, windows=1, rooms=3, replay=True)
    finally:
        await probe.stop()
    assert result["streams"] == 12, result
    assert result["decoded_frames"] == 0, result
    assert result["fps_min"] >= 25, result  # every subscriber of every room gets every publisher of its room
    assert result["clients_cpu_percent"] > 0, result
    # 12 streams of audio (50/s) and video (~30 frames/s, at least a packet each)
    assert result["packets_out_per_second"] >= 12 * 70, result
    rooms = {rid: room for worker in seen[-1].values() for rid, room in worker["rooms"].items()}
    assert sorted(rooms) == ["bench0", "bench1", "bench2"]
    assert len(seen[-1]) == 1  # one worker
    for room in rooms.values():
        for pid in ("s0", "s1"):
            slots = room["peers"][pid]["slots"].values()
            assert sorted(slot["pid"] for slot in slots) == ["p0", "p0", "p1", "p1"]
            assert all(slot["forwarded"] > 0 for slot in slots)
            # the light subscribers' receiver reports reach the SFU (aiortc's RTCP, fed without its receive path)
            assert all(slot["receiver_reports"] > 0 for slot in slots), [(s["kind"], s["receiver_reports"]) for s in slots]


@pytest.mark.sfu
@pytest.mark.media
@pytest.mark.serial  # it checks a rate
async def test_the_floor_moves_each_rooms_datagrams_to_that_rooms_subscribers() -> None:
    rooms, publishers, subscribers, video_pps = 3, 2, 2, 40.0
    floor = await bench_sfu._floor(publishers=publishers, subscribers=subscribers, seconds=2.0, windows=2,
                                   video_pps=video_pps, video_bytes=800, rooms=rooms)
    expected = rooms * publishers * subscribers * (50 + video_pps)  # not rooms² : a room's datagrams stay in it
    assert 0.9 * expected <= floor["packets_out_per_second"] <= 1.1 * expected, floor
    assert floor["streams_per_core_estimate"] == pytest.approx(
        100 * rooms * publishers * subscribers / floor["cpu_percent"], rel=0.02)
