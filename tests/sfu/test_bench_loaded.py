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
    monkeypatch.setattr(bench_sfu, "REPLAY_SECONDS", 2)  # a key frame every 2 s (in the clients process too)
    hooks.allow_loopback_candidates()
    loaded = await bench_sfu._loaded(publishers=2, subscribers=2, seconds=2.0, width=320, height=240, windows=1,
                                     streams=10)
    assert loaded["rooms"] == 3 and loaded["streams"] == 12 and loaded["seconds"] == 2, loaded
    assert loaded["complete"] and not loaded["incomplete"], loaded
    assert loaded["decoded_frames"] == 0, loaded
    # every subscriber of every room gets every publisher of its room: 12 video and 12 audio streams, each whole
    assert 27 <= loaded["fps_min"] <= loaded["fps_median"] <= 33, loaded
    clients = loaded["clients"]
    assert clients["subscribers"] == 6 and clients["replayed_publishers"] == 6, clients  # replay, light subscribers
    assert clients["audio_streams"] == 12 and 45 <= clients["audio_pps_min"] <= 55, clients
    assert clients["lost"] == 0, clients
    assert 16 <= clients["rembs_per_second"] <= 32, clients  # 12 video streams, a REMB each every 0.5 s
    feedback = loaded["feedback"]  # as it reached the SFU
    assert 1.5 <= feedback["rembs_per_video_stream_per_second"] <= 2.7, feedback
    assert feedback["receiver_reports_per_stream_per_second"] >= 0.5, feedback
    assert loaded["packets_out_per_second"] >= 12 * (50 + 30), loaded
    assert loaded["streams_per_core"] == int(100 * 12 / loaded["cpu_percent"]), loaded
    assert loaded["cpu_us_per_packet_out"] == pytest.approx(10_000 * loaded["cpu_percent"]
                                                            / loaded["packets_out_per_second"], rel=0.02)
    floor = loaded["floor"]
    assert floor["packets_out_per_second"] == pytest.approx(loaded["packets_out_per_second"], rel=0.1), floor
    assert loaded["forward_to_floor_per_packet"] == pytest.approx(
        loaded["cpu_us_per_packet_out"] / floor["cpu_us_per_packet_out"], rel=0.02)
    last = max(seen, key=lambda stats: sum(slot["forwarded"] for slot in bench_sfu._slots(stats)))
    assert len(last) == 1  # one worker
    rooms = {rid: room for worker in last.values() for rid, room in worker["rooms"].items()}
    assert sorted(rooms) == ["bench0", "bench1", "bench2"]
    for room in rooms.values():
        for pid in ("s0", "s1"):
            slots = list(room["peers"][pid]["slots"].values())
            assert sorted(slot["pid"] for slot in slots) == ["p0", "p0", "p1", "p1"]
            assert all(slot["forwarded"] > 0 for slot in slots)
            # the SFU gets the feedback a subscriber sends: receiver reports (aiortc's, fed without its receive
            # path) for every stream, REMB for every video stream
            assert all(slot["receiver_reports"] > 0 for slot in slots), [(s["kind"], s["receiver_reports"])
                                                                         for s in slots]
            assert all(slot["remb_reports"] > 0 and slot["remb"] > 100_000 for slot in slots
                       if slot["kind"] == "video"), slots


def _fake_phase(**change: Any) -> Any:
    async def phase(**kw: Any) -> dict[str, Any]:
        result = {"streams": 12, "packets_out_per_second": 1000, "cpu_percent": 5.0, "cpu_percent_windows": [5.0],
                  "cpu_per_stream_percent": 0.4, "packets_per_second_per_core": 20_000, "fps_min": 29.0,
                  "fps_median": 30.0, "video_kbps_per_stream": 500, "retransmitted": 0, "pauses": 0,
                  "subscriber_remb_kbps_median": 600, "decoded_frames": 0, "clients_cpu_percent": 30.0,
                  "signaling": {}, "video_streams_counted": 12,
                  "feedback": {"receiver_reports_per_stream_per_second": 1.0, "rembs_per_video_stream_per_second": 2.0},
                  "light": {"subscribers": 6, "replayed_publishers": 6, "audio_streams": 12, "audio_pps_min": 50.0,
                            "lost": 0, "rembs_per_second": 24.0}}
        for key, value in change.items():
            if key in result["light"]:
                result["light"][key] = value
            elif key in result["feedback"]:
                result["feedback"][key] = value
            else:
                result[key] = value
        return result

    return phase


@pytest.mark.parametrize("change, said", [
    ({}, None),
    ({"video_streams_counted": 11}, "11 video and 12 audio streams counted of 12"),
    ({"replayed_publishers": 5}, "5 of 6 publishers sending"),
    ({"fps_min": 20.0}, "a video stream at 20.0 fps"),
    ({"audio_pps_min": 20.0}, "an audio stream at 20.0 packets/s"),
    ({"lost": 200}, "200 packets lost"),
    ({"rembs_per_video_stream_per_second": 0.0}, "feedback reaching the SFU"),
])
def test_a_phase_that_delivers_less_than_every_stream_gives_no_figure_per_stream(
        change: dict[str, Any], said: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    async def floor(**kw: Any) -> dict[str, Any]:
        return {"cpu_us_per_packet_out": 10.0, "cpu_percent": 1.0}

    monkeypatch.setattr(bench_sfu, "_phase", _fake_phase(**change))
    monkeypatch.setattr(bench_sfu, "_floor", floor)
    loaded = asyncio.run(bench_sfu._loaded(publishers=2, subscribers=2, seconds=12.0, width=320, height=240,
                                           windows=3, streams=12))
    assert loaded["seconds"] == 12 and loaded["rooms"] == 3
    if said is None:
        assert loaded["complete"] and loaded["streams_per_core"] == 240 and loaded["cpu_per_stream_percent"], loaded
        return
    assert loaded["complete"] is False, loaded
    assert loaded["streams_per_core"] is None and loaded["cpu_per_stream_percent"] is None, loaded
    assert any(said in why for why in loaded["incomplete"]), loaded


def test_the_loaded_rooms_stay_within_one_clients_process() -> None:
    assert bench_sfu._load_rooms(96, 4, 3) == 8
    assert bench_sfu._load_rooms(96, 2, 3) == 16
    assert bench_sfu._load_rooms(400, 1, 1) == bench_sfu.MAX_LOAD_ROOMS  # 24 rooms, not 400
    assert bench_sfu._load_rooms(400, 1, 16) == bench_sfu.MAX_LOAD_CONNECTIONS // 17  # 11 rooms of 17 connections
    assert bench_sfu._load_rooms(1, 4, 3) == 1


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
