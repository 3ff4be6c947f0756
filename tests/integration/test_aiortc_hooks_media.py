"""Real VP8 + Opus between aiortc peers in one process, over loopback only, exercising rtc.aiortc_hooks.

Run inside a loopback-only network namespace:
    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/integration/test_aiortc_hooks_media.py'
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.mediastreams import MediaStreamTrack

from peer.media import (
    ForwardingTrack,
    SyntheticAudioTrack,
    SyntheticVideoTrack,
    TrackSink,
    rgb_to_yuv,
)
from rtc import aiortc_hooks as hooks
from rtc.codecs import prefer_vp8_opus
from tests.conftest import require_loopback_namespace

pytestmark = [pytest.mark.media, pytest.mark.integration]

RED = (200, 40, 40)
BLUE = (40, 160, 220)
COLOUR_TOLERANCE = 12.0


@pytest.fixture(autouse=True, scope="module")
def loopback_only() -> None:
    require_loopback_namespace()


@pytest.fixture
async def make_pc() -> AsyncIterator[Callable[[], RTCPeerConnection]]:
    pcs: list[RTCPeerConnection] = []

    def make() -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(pc)
        return pc

    yield make
    for pc in pcs:
        await pc.close()


def prefer_vp8(pc: RTCPeerConnection) -> None:
    for t in pc.getTransceivers():
        if t.kind == "video":
            prefer_vp8_opus(t)


async def until(condition: Callable[[], bool], within: float, step: float = 0.02) -> bool:
    """Poll ``condition`` every ``step`` seconds for up to ``within`` seconds."""
    for _ in range(int(within / step)):
        if condition():
            return True
        await asyncio.sleep(step)
    return condition()


async def connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection, within: float = 5.0) -> None:
    prefer_vp8(offerer)
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    assert await until(lambda: offerer.connectionState == answerer.connectionState == "connected", within)


def receiver_of(pc: RTCPeerConnection, kind: str) -> RTCRtpReceiver:
    return next(t.receiver for t in pc.getTransceivers() if t.kind == kind)


def sender_of(pc: RTCPeerConnection, kind: str) -> RTCRtpSender:
    return next(t.sender for t in pc.getTransceivers() if t.kind == kind)


def sinks_of(pc: RTCPeerConnection) -> dict[str, TrackSink]:
    return {t.kind: TrackSink(t.receiver.track).start() for t in pc.getTransceivers()}


def add_media(pc: RTCPeerConnection, colour: tuple[int, int, int]) -> None:
    pc.addTrack(SyntheticVideoTrack(320, 240, 30, colour))
    pc.addTrack(SyntheticAudioTrack())


def assert_colour(sink: TrackSink, colour: tuple[int, int, int]) -> None:
    got = sink.mean_yuv()
    want = rgb_to_yuv(*colour)
    assert got is not None
    assert all(abs(g - w) <= COLOUR_TOLERANCE for g, w in zip(got, want, strict=True)), (got, want)


class CpuMeter:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = self._cpu()

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def report(self, label: str) -> None:
        wall = time.monotonic() - self.t0
        print(f"\n[{label}] wall {wall:.2f} s, CPU {100 * (self._cpu() - self.cpu0) / wall:.0f}% of one core")


async def stop_all(*sinks: TrackSink) -> None:
    for sink in sinks:
        await sink.stop()


async def test_plain_call_both_ways(make_pc: Callable[[], RTCPeerConnection]) -> None:
    a, b = make_pc(), make_pc()
    add_media(a, RED)
    add_media(b, BLUE)
    meter = CpuMeter()
    await connect(a, b)
    sinks_a, sinks_b = sinks_of(a), sinks_of(b)
    try:
        for sinks in (sinks_a, sinks_b):
            assert await sinks["video"].wait_frames(15, within=6)
            assert await sinks["audio"].wait_frames(15, within=3)
        assert_colour(sinks_b["video"], RED)
        assert_colour(sinks_a["video"], BLUE)
        meter.report("plain call")
        print(f"first video frame after {sinks_b['video'].first_frame_time:.3f} s, fps {sinks_b['video'].fps:.1f}")
    finally:
        await stop_all(*sinks_a.values(), *sinks_b.values())


def xor_after(kind: str, data: bytes) -> bytes:
    """XOR everything after the VP8 10/3-byte or Opus 1-byte clear header (its own inverse)."""
    clear = (10 if hooks.is_vp8_keyframe(data) else 3) if kind == "video" else 1
    return data[:clear] + bytes(x ^ 0x5A for x in data[clear:])


async def test_xor_transform_roundtrip(make_pc: Callable[[], RTCPeerConnection]) -> None:
    a, b = make_pc(), make_pc()
    add_media(a, RED)
    b.addTransceiver("video", direction="recvonly")
    b.addTransceiver("audio", direction="recvonly")
    for kind in ("video", "audio"):
        hooks.set_sender_transform(sender_of(a, kind), xor_after)
    meter = CpuMeter()
    await connect(b, a)  # b offers, so its receivers exist (and are hooked) before negotiation
    for kind in ("video", "audio"):
        hooks.set_receiver_transform(receiver_of(b, kind), xor_after)
    sinks = sinks_of(b)
    try:
        assert await sinks["video"].wait_frames(15, within=6)
        assert await sinks["audio"].wait_frames(15, within=3)
        assert_colour(sinks["video"], RED)
        video_rx = hooks.receiver_stats(receiver_of(b, "video"))
        assert video_rx.frames_decoded >= 15 and video_rx.frames_dropped == 0
        assert hooks.sender_stats(sender_of(a, "video")).frames_transformed >= 15
        assert hooks.sender_stats(sender_of(a, "audio")).frames_transformed >= 15
        meter.report("xor transform")
    finally:
        await stop_all(*sinks.values())


async def test_xor_without_receiver_transform_is_garbage(make_pc: Callable[[], RTCPeerConnection]) -> None:
    """Negative control for the round trip: the transformed bytes really are what goes on the wire."""
    a, b = make_pc(), make_pc()
    add_media(a, RED)
    b.addTransceiver("video", direction="recvonly")
    b.addTransceiver("audio", direction="recvonly")
    hooks.set_sender_transform(sender_of(a, "video"), xor_after)
    await connect(b, a)
    video_rx = hooks.receiver_stats(receiver_of(b, "video"))
    sinks = sinks_of(b)
    try:
        assert await until(lambda: video_rx.frames_received >= 20, 6)
        await asyncio.sleep(0.2)
        got = sinks["video"].mean_yuv()
        want = rgb_to_yuv(*RED)
        right_colour = got is not None and all(
            abs(g - w) <= COLOUR_TOLERANCE for g, w in zip(got, want, strict=True)
        )
        print(f"\n[xor, no receiver transform] decoded {sinks['video'].frames} of "
              f"{video_rx.frames_received} frames, mean YUV {got}")
        assert not (sinks["video"].frames >= 10 and right_colour)
    finally:
        await stop_all(*sinks.values())


async def test_dropping_receiver_decodes_nothing(make_pc: Callable[[], RTCPeerConnection]) -> None:
    a, b = make_pc(), make_pc()
    add_media(a, RED)
    b.addTransceiver("video", direction="recvonly")
    b.addTransceiver("audio", direction="recvonly")
    for kind in ("video", "audio"):
        hooks.set_receiver_transform(receiver_of(b, kind), lambda kind, data: None)
    await connect(b, a)
    sinks = sinks_of(b)
    try:
        video_rx = hooks.receiver_stats(receiver_of(b, "video"))
        audio_rx = hooks.receiver_stats(receiver_of(b, "audio"))
        assert await until(lambda: video_rx.frames_received >= 20 and audio_rx.frames_received >= 20, 6)
        await asyncio.sleep(0.2)
        assert sinks["video"].frames == 0 and sinks["audio"].frames == 0
        for stats in (video_rx, audio_rx):
            assert stats.frames_dropped == stats.frames_received
            assert stats.frames_to_decoder == 0 and stats.frames_decoded == 0
    finally:
        await stop_all(*sinks.values())


async def test_forwarding_sfu_never_decodes(make_pc: Callable[[], RTCPeerConnection]) -> None:
    publisher, sfu_in, sfu_out, subscriber = make_pc(), make_pc(), make_pc(), make_pc()
    add_media(publisher, RED)
    sfu_in.addTransceiver("video", direction="recvonly")
    sfu_in.addTransceiver("audio", direction="recvonly")
    sfu_stats = {kind: hooks.make_passthrough(receiver_of(sfu_in, kind)) for kind in ("video", "audio")}
    meter = CpuMeter()
    await connect(sfu_in, publisher)

    # the SFU re-sends the encoded packets (encoder.pack path) to the subscriber
    sources: dict[str, MediaStreamTrack] = {kind: receiver_of(sfu_in, kind).track for kind in ("video", "audio")}
    for kind in ("video", "audio"):
        sfu_out.addTrack(ForwardingTrack(sources[kind]))
    upstream_video = receiver_of(sfu_in, "video")
    hooks.on_keyframe_request(
        sender_of(sfu_out, "video"), lambda: hooks.request_keyframe(upstream_video, min_interval=0.2)
    )
    publisher_requests: list[float] = []
    hooks.on_keyframe_request(sender_of(publisher, "video"), lambda: publisher_requests.append(time.monotonic()))

    subscriber.addTransceiver("video", direction="recvonly")
    subscriber.addTransceiver("audio", direction="recvonly")
    await connect(subscriber, sfu_out)
    sinks = sinks_of(subscriber)
    try:
        assert await sinks["video"].wait_frames(15, within=6)
        assert await sinks["audio"].wait_frames(15, within=3)
        assert_colour(sinks["video"], RED)
        for stats in sfu_stats.values():
            assert stats.packets_forwarded >= 15
            assert stats.frames_to_decoder == 0 and stats.frames_decoded == 0
        assert sfu_stats["video"].keyframes_forwarded >= 1

        # subscriber PLI -> SFU sender hook -> upstream PLI -> publisher forces a keyframe
        before_requests = len(publisher_requests)
        before_keyframes = sfu_stats["video"].keyframes_forwarded
        assert await hooks.request_keyframe(receiver_of(subscriber, "video"))
        assert await until(lambda: sfu_stats["video"].keyframes_forwarded > before_keyframes, 3)
        assert len(publisher_requests) > before_requests
        assert sfu_stats["video"].plis_sent >= 1
        frames = sinks["video"].frames
        assert await sinks["video"].wait_frames(frames + 5, within=2)
        assert sfu_stats["video"].frames_decoded == 0
        meter.report("forwarding SFU (4 PCs in-process: 1 encode, 1 decode)")
    finally:
        await stop_all(*sinks.values())
