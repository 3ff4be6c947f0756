"""RTP-level forwarding in the real worker: NACKs served by the SFU, a mid-stream joiner decodes at once."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSrPacket,
    pack_remb_fci,
)
from aiortc.sdp import SessionDescription

from rtc import aiortc_hooks as hooks
from server.sfu.layers import RETRY_PAUSED_AFTER
from server.sfu.rtp import PAUSED

from .harness import Harness, slot_stats, until

pytestmark = [pytest.mark.sfu, pytest.mark.media]

RED = (200, 40, 40)


async def test_a_subscribers_loss_is_repaired_by_the_sfu_not_the_publisher(sfu: Harness) -> None:
    sfu.members("r-nack", {"a", "s1"})
    pub = sfu.client("r-nack", "a", colour=RED)
    nacks_at_publisher: list[int] = []
    video_sender = next(t.sender for t in pub.pc.getTransceivers() if t.kind == "video")
    original = video_sender._handle_rtcp_packet

    async def count_nacks(packet: Any) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            nacks_at_publisher.append(len(packet.lost))
        await original(packet)

    video_sender._handle_rtcp_packet = count_nacks  # type: ignore[method-assign]
    await pub.negotiate()
    sub = sfu.client("r-nack", "s1", slots=1)
    await sub.negotiate()
    sink = sub.sink_of("a")
    assert await sink.wait_frames(11, within=6)

    # the subscriber's link loses every 10th video packet once (on the wire: before SRTP), retransmissions pass
    answer = SessionDescription.parse(sub.pc.remoteDescription.sdp)
    video_pt = next(m.rtp.codecs[0].payloadType for m in answer.media if m.kind == "video")
    lost: set[int] = set()
    seen = 0
    ice = next(t.receiver.transport for t in sub.pc.getTransceivers()).transport
    wire = ice._recv

    async def lossy_wire() -> bytes:
        nonlocal seen
        while True:
            data = await wire()
            if len(data) > 12 and 128 <= data[0] < 192 and data[1] & 0x7F == video_pt:
                seq = int.from_bytes(data[2:4], "big")
                if seq not in lost:
                    seen += 1
                    if seen % 10 == 0:
                        lost.add(seq)
                        continue
            return data

    ice._recv = lossy_wire
    frames = sink.frames
    await asyncio.sleep(3)
    ice._recv = wire
    slots = await slot_stats(sfu, "r-nack", "s1")
    video = next(s for s in slots.values() if s["kind"] == "video")
    print(f"\n[NACK] {len(lost)} packets lost on the subscriber's link, {video['retransmitted']} retransmitted by "
          f"the SFU ({video['nack_missed']} not in its buffer); {sink.frames - frames} frames; "
          f"NACKs at the publisher: {sum(nacks_at_publisher)}")
    assert len(lost) >= 4
    assert len(lost) - 1 <= video["retransmitted"] <= 2 * len(lost)  # the last loss may not be asked for yet
    assert video["nack_missed"] == 0
    assert nacks_at_publisher == []  # loss on one subscriber's link does not reach the publisher
    assert sink.frames - frames >= 45  # the picture went on (30 fps sent; >= 15 fps on a loaded machine)


async def test_a_subscriber_joining_mid_stream_decodes_within_half_a_second(sfu: Harness) -> None:
    sfu.members("r-join", {"a", "s1"})
    pub = sfu.client("r-join", "a", colour=RED)
    await pub.negotiate()
    await asyncio.sleep(2.0)  # well past the publisher's first key frame
    sub = sfu.client("r-join", "s1", slots=1)
    connected_at: list[float] = []

    @sub.pc.on("connectionstatechange")
    def on_state() -> None:
        if sub.pc.connectionState == "connected" and not connected_at:
            connected_at.append(time.monotonic())

    await sub.negotiate()
    sink = sub.sink_of("a")
    assert await until(lambda: sink.first_frame_time is not None, 3)
    assert sink.first_frame_time is not None and connected_at
    first_frame_at = sink._started_at + sink.first_frame_time
    delay = first_frame_at - connected_at[0]
    print(f"\n[join] first decoded frame {delay * 1000:.0f} ms after the subscriber's connection was up")
    assert delay <= 0.5
    assert await sink.wait_frames(11, within=2)


async def test_video_pauses_when_the_subscribers_link_cannot_carry_it_and_audio_goes_on(sfu: Harness) -> None:
    sfu.members("r-pause", {"a", "s1"})
    pub = sfu.client("r-pause", "a", colour=RED)
    await pub.negotiate()
    sub = sfu.client("r-pause", "s1", slots=1)
    await sub.negotiate()
    video, audio = sub.sink_of("a"), sub.sink_of("a", "audio")
    assert await video.wait_frames(11, within=6)
    mid = sub.mid_of("a")
    answer = SessionDescription.parse(sub.pc.remoteDescription.sdp)
    sfu_ssrc = next(m.ssrc[0].ssrc for m in answer.media if m.rtp.muxId == mid)
    receiver = next(t.receiver for t in sub.pc.getTransceivers() if t.mid == mid)

    async def remb(bitrate: int) -> None:
        await receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0,
                                                 fci=pack_remb_fci(bitrate, [sfu_ssrc])))

    async def report_loss(fraction_lost: int) -> None:
        await receiver._send_rtcp(RtcpRrPacket(ssrc=1, reports=[RtcpReceiverInfo(
            ssrc=sfu_ssrc, fraction_lost=fraction_lost, packets_lost=100, highest_sequence=0, jitter=0, lsr=0,
            dlsr=0)]))

    await asyncio.sleep(1.2)  # the SFU has measured what the publisher's layers cost
    await remb(500)  # a REMB alone never pauses
    await asyncio.sleep(0.3)
    assert "paused" not in sub.mapping.get(mid, {})
    deadline = time.monotonic() + 6
    while sub.mapping.get(mid, {}).get("paused") is not True and time.monotonic() < deadline:
        await report_loss(128)  # half of it lost: even the base layer (all aiortc sends) does not fit
        await asyncio.sleep(0.25)
    assert sub.mapping.get(mid, {}).get("paused") is True, sub.mapping
    await asyncio.sleep(0.3)
    frames, samples = video.frames, audio.frames
    for _ in range(8):
        await report_loss(128)
        await asyncio.sleep(0.25)
    print(f"\n[pause] video frames while paused: {video.frames - frames}, audio frames: {audio.frames - samples}")
    assert video.frames - frames <= 1
    assert audio.frames - samples >= 50  # the sound goes on
    # the link is good again: the SFU retries the base layer by itself (RETRY_PAUSED_AFTER), on a key frame
    assert await until(lambda: "paused" not in sub.mapping.get(mid, {}), RETRY_PAUSED_AFTER + 3), sub.mapping
    assert await video.wait_frames(video.frames + 10, within=3)


async def test_a_weak_subscriber_gets_a_lower_layer_and_the_others_keep_the_top_one(sfu: Harness) -> None:
    """An L1T3 publisher, two subscribers; one loses 15 % of what reaches it: the SFU steps it down layer by layer
    to the base layer (not a pause: the SFU repairs the loss from its buffer) and goes on sending it frames, while
    the other keeps every layer."""
    sfu.members("r-weak", {"a", "weak", "good"})
    pub = sfu.client("r-weak", "a", colour=RED)
    hooks.send_temporal_layers(pub.pc.getTransceivers()[0].sender)
    await pub.negotiate()
    weak = sfu.client("r-weak", "weak", slots=1)
    good = sfu.client("r-weak", "good", slots=1)
    await asyncio.gather(weak.negotiate(), good.negotiate())
    assert await weak.sink_of("a").wait_frames(11, within=6)
    assert await good.sink_of("a").wait_frames(11, within=6)
    lossy = random.Random(16)
    hooks.impair_receive(weak.pc.getTransceivers()[0].receiver.transport,
                         lambda data: not 128 <= data[0] < 192 or lossy.random() >= 0.15)  # RTP/RTCP only

    async def video_slot(pid: str) -> dict[str, Any]:
        return next(s for s in (await slot_stats(sfu, "r-weak", pid)).values() if s["kind"] == "video")

    layers = []
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        slot = await video_slot("weak")
        layers.append(slot["max_layer"])
        if slot["layer"] == 0:
            break
        await asyncio.sleep(0.5)
    print(f"\n[weak] max_layer over time: {layers}")
    assert (await video_slot("weak"))["layer"] == 0, layers
    assert PAUSED not in layers
    before_weak, before_good = await video_slot("weak"), await video_slot("good")
    good_frames = good.sink_of("a").frames
    await asyncio.sleep(3)
    after_weak, after_good = await video_slot("weak"), await video_slot("good")
    print(f"[weak] packets in 3 s: {after_weak['forwarded'] - before_weak['forwarded']} at layer {after_weak['layer']}, "
          f"repaired {after_weak['retransmitted']}; good: {after_good['forwarded'] - before_good['forwarded']} "
          f"at layer {after_good['layer']}")
    assert after_weak["max_layer"] == after_weak["layer"] == 0  # still the base layer, not paused
    assert after_weak["forwarded"] - before_weak["forwarded"] >= 3 * 5  # the base layer's frames keep coming
    assert after_weak["retransmitted"] > 0  # its losses repaired from the SFU's buffer
    assert after_good["max_layer"] == after_good["layer"] == 2
    assert after_good["forwarded"] - before_good["forwarded"] > 2 * (after_weak["forwarded"] - before_weak["forwarded"])
    assert good.sink_of("a").frames - good_frames >= 3 * 15


async def test_a_subscriber_gets_one_compound_sender_report_for_all_its_streams(sfu: Harness) -> None:
    """The SFU's sender reports (A/V sync, round-trip times at the subscriber) come on one timer per worker: each
    connection gets one compound packet a second with an SR per stream it receives and their CNAMEs, not one
    packet per stream; the subscriber's receivers take them (each knows its stream's last SR)."""
    sfu.members("r-sr", {"a", "b", "s1"})
    for pid, colour in (("a", RED), ("b", (40, 160, 220))):
        await sfu.client("r-sr", pid, colour=colour).negotiate()
    sub = sfu.client("r-sr", "s1", slots=2)
    dtls = next(t.receiver.transport for t in sub.pc.getTransceivers())
    compounds: list[list[Any]] = []
    original = dtls._handle_rtcp_data

    async def record(data: bytes) -> None:
        compounds.append(RtcpPacket.parse(data))
        await original(data)

    dtls._handle_rtcp_data = record  # type: ignore[method-assign]
    await sub.negotiate()
    assert await sub.sink_of("a").wait_frames(5, within=6) and await sub.sink_of("b").wait_frames(5, within=6)
    assert await until(lambda: any(sum(isinstance(p, RtcpSrPacket) for p in c) == 4 for c in compounds), 5)
    first = next(i for i, c in enumerate(compounds) if sum(isinstance(p, RtcpSrPacket) for p in c) == 4)
    reports = compounds[first]
    srs = [p for p in reports if isinstance(p, RtcpSrPacket)]
    sdes = [chunk.ssrc for p in reports if isinstance(p, RtcpSdesPacket) for chunk in p.chunks]
    assert isinstance(reports[0], RtcpSrPacket) and sorted(sdes) == sorted(p.ssrc for p in srs)
    assert all(p.sender_info.packet_count > 0 and p.sender_info.ntp_timestamp > 0 for p in srs)
    # the subscriber only subscribes: its connection is tapped all the same, and its feedback goes direct
    stats = await sfu.manager.stats()
    peers = next(w["rooms"]["r-sr"]["peers"] for w in stats.values() if "r-sr" in w["rooms"])
    assert peers["s1"]["direct"] and peers["a"]["direct"]
    assert await until(lambda: len(compounds) > first + 2, 5)  # never one each from then on
    assert all(len([p for p in c if isinstance(p, RtcpSrPacket)]) in (0, 4) for c in compounds[first:])
    lsr = {ssrc for t in sub.pc.getTransceivers() if t.direction == "recvonly"
           for ssrc in t.receiver._RTCRtpReceiver__lsr}  # type: ignore[attr-defined]
    assert lsr >= {p.ssrc for p in srs}
