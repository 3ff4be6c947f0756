"""Contract test for rtc.aiortc_hooks: fails loudly if the aiortc internals it relies on move.

Everything here runs without any network I/O: senders are driven through ``_next_encoded_frame`` and
receivers are fed RTP packets directly through ``_handle_rtp_packet``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import types
from collections.abc import AsyncIterator
from typing import Any

import aioice.ice
import aiortc
import av
import pylibsrtp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.vpx import VpxPayloadDescriptor, vp8_depayload
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
)

from peer.media import SyntheticAudioTrack, SyntheticVideoTrack
from rtc import aiortc_hooks as hooks

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
SSRC = 0x1234


def xor_after(kind: str, data: bytes) -> bytes:
    """Test transform: XOR everything after the VP8 10/3-byte or Opus 1-byte clear header."""
    clear = (10 if hooks.is_vp8_keyframe(data) else 3) if kind == "video" else 1
    return data[:clear] + bytes(b ^ 0x5A for b in data[clear:])


class PacketTrack(MediaStreamTrack):
    """Yields pre-encoded av.Packets (as a pass-through receiver would)."""

    kind = "video"

    def __init__(self, payloads: list[bytes]) -> None:
        super().__init__()
        self._payloads = list(payloads)
        self._n = 0

    async def recv(self) -> av.Packet:
        packet = av.Packet(self._payloads[self._n % len(self._payloads)])
        packet.pts = self._n * 3000
        packet.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return packet


@pytest.fixture
async def pc():
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    yield pc
    await pc.close()


def test_internals_unchanged() -> None:
    assert aiortc.__version__.startswith("1.16"), aiortc.__version__
    assert hooks.check_internals() == []


def test_check_internals_detects_moved_internals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCRtpSender, "_send_keyframe")
    monkeypatch.setattr(RTCRtpReceiver, "_send_rtcp_pli", lambda self: None)
    problems = hooks.check_internals()
    assert any("_send_keyframe" in p for p in problems), problems
    assert any("_send_rtcp_pli" in p for p in problems), problems


def test_allow_loopback_candidates_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda v4, v6: ["192.0.2.7"] if v4 else [])
    hooks.allow_loopback_candidates()
    first = aioice.ice.get_host_addresses
    hooks.allow_loopback_candidates()
    assert aioice.ice.get_host_addresses is first
    assert aioice.ice.get_host_addresses(True, False) == ["192.0.2.7", "127.0.0.1"]
    assert aioice.ice.get_host_addresses(False, True) == []


async def test_bind_host_candidates_in_keeps_aioice_host_sockets_in_the_range(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    loop = asyncio.get_running_loop()
    hooks.bind_host_candidates_in(loop, 41000, 41003)
    hooks.bind_host_candidates_in(loop, 41000, 41003)  # idempotent
    conns = [aioice.ice.Connection(ice_controlling=True) for _ in range(5)]
    try:
        for c in conns:
            await c.gather_candidates()  # binds only: no STUN or TURN server, nothing is sent
        assert sorted(c.local_candidates[0].port for c in conns[:4]) == [41000, 41001, 41002, 41003]
        assert conns[4].local_candidates == []  # the range is exhausted: no candidate rather than another port
    finally:
        for c in conns:
            await c.close()
        del loop.create_datagram_endpoint  # type: ignore[method-assign]


def test_bind_host_candidates_in_tries_the_next_port_on_uvloop_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker runs uvloop, whose failed bind is an OSError without errno, caused by EADDRINUSE: the range is
    walked all the same (a taken first port must not cost a connection its host candidate)."""
    import socket

    import uvloop

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    monkeypatch.setattr(hooks.secrets, "randbelow", lambda n: 0)  # the walk starts on a taken port
    taken = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for i, sock in enumerate(taken):
        sock.bind(("127.0.0.1", 41100 + i))

    async def main() -> list[int]:
        hooks.bind_host_candidates_in(asyncio.get_running_loop(), 41100, 41103)
        conns = [aioice.ice.Connection(ice_controlling=True) for _ in range(2)]
        try:
            for c in conns:
                await c.gather_candidates()  # binds only: no STUN or TURN server, nothing is sent
            return [len(c.local_candidates) for c in conns] + [c.local_candidates[0].port for c in conns[:1]]
        finally:
            for c in conns:
                await c.close()

    try:
        assert uvloop.run(main()) == [1, 0, 41103]  # the one free port, then none left
    finally:
        for sock in taken:
            sock.close()


async def _frames(sender: RTCRtpSender, codec: RTCRtpCodecParameters, n: int) -> list[bytes]:
    """Run the sender's encode path n times; return each whole encoded frame (VP8 descriptors removed)."""
    out = []
    for _ in range(n):
        enc = await sender._next_encoded_frame(codec)
        if enc is None:
            out.append(b"")
        elif codec is VP8:
            out.append(b"".join(vp8_depayload(p) for p in enc.payloads))
        else:
            out.append(b"".join(enc.payloads))
    return out


async def test_sender_transform_vp8_is_per_instance(pc: RTCPeerConnection) -> None:
    hooked = pc.addTrack(SyntheticVideoTrack(fps=120))
    plain = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        other = plain.addTrack(SyntheticVideoTrack(fps=120))
        seen: list[tuple[str, bytes]] = []

        def fn(kind: str, data: bytes) -> bytes:
            seen.append((kind, data))
            return xor_after(kind, data)

        hooks.set_sender_transform(hooked, fn)
        frames = await _frames(hooked, VP8, 3)
        assert [k for k, _ in seen] == ["video"] * 3
        # the whole frame went through fn before packetization
        assert frames == [xor_after("video", d) for _, d in seen]
        assert hooks.is_vp8_keyframe(seen[0][1]) and not hooks.is_vp8_keyframe(seen[1][1])
        assert hooks.sender_stats(hooked).frames_transformed == 3

        # another sender in the process is untouched
        clear = await _frames(other, VP8, 1)
        assert len(seen) == 3 and hooks.is_vp8_keyframe(clear[0])

        # None drops the frame: nothing is sent
        hooks.set_sender_transform(hooked, lambda kind, data: None)
        assert await hooked._next_encoded_frame(VP8) is None
        assert hooks.sender_stats(hooked).frames_dropped == 1

        # an exception also drops (fail closed)
        def boom(kind: str, data: bytes) -> bytes:
            raise RuntimeError("no key")

        hooks.set_sender_transform(hooked, boom)
        assert await hooked._next_encoded_frame(VP8) is None

        # removing the transform restores clear frames
        hooks.set_sender_transform(hooked, None)
        assert (await _frames(hooked, VP8, 1))[0] != b""
    finally:
        await plain.close()


async def test_send_temporal_layers_encodes_l1t3_under_the_transform(pc: RTCPeerConnection) -> None:
    """The sender's encoder becomes the L1T3 one; the transform still sees each whole frame and the layer
    descriptor (T, L, Y) stays in clear before it; another sender keeps aiortc's single layer."""
    layered = pc.addTrack(SyntheticVideoTrack(fps=120))
    hooks.send_temporal_layers(layered)
    seen: list[bytes] = []
    hooks.set_sender_transform(layered, lambda kind, data: seen.append(data) or xor_after(kind, data))
    descriptors = []
    for _ in range(5):
        enc = await layered._next_encoded_frame(VP8)
        assert enc is not None
        descriptors.append(VpxPayloadDescriptor.parse(enc.payloads[0])[0])
        assert b"".join(vp8_depayload(p) for p in enc.payloads) == xor_after("video", seen[-1])
    assert isinstance(layered._RTCRtpSender__encoder, hooks.TemporalVp8Encoder)  # type: ignore[attr-defined]
    assert [d.tid for d in descriptors] == [(0, 0), (2, 1), (1, 1), (2, 0), (0, 0)]
    assert descriptors[4].tl0picidx == (descriptors[0].tl0picidx + 1) & 0xFF
    plain = pc.addTrack(SyntheticVideoTrack(fps=120))
    enc = await plain._next_encoded_frame(VP8)
    assert enc is not None and VpxPayloadDescriptor.parse(enc.payloads[0])[0].tid is None


async def test_sender_transform_on_packed_packets(pc: RTCPeerConnection) -> None:
    """A sender fed av.Packet uses encoder.pack(); the transform still sees each whole frame."""
    payloads = [b"\x10" + bytes(range(40)), b"\x11" + bytes(range(50))]
    sender = pc.addTrack(PacketTrack(payloads))
    seen: list[bytes] = []
    hooks.set_sender_transform(sender, lambda kind, data: seen.append(data) or data[::-1])
    frames = await _frames(sender, VP8, 2)
    assert seen == payloads
    assert frames == [p[::-1] for p in payloads]


async def test_sender_transform_opus(pc: RTCPeerConnection) -> None:
    sender = pc.addTrack(SyntheticAudioTrack())
    seen: list[str] = []
    hooks.set_sender_transform(sender, lambda kind, data: seen.append(kind) or xor_after(kind, data))
    frames = [f for f in await _frames(sender, OPUS, 5) if f]
    assert frames and set(seen) == {"audio"} and len(seen) == len(frames)
    hooks.set_sender_transform(sender, lambda kind, data: None)
    assert all(f == b"" for f in await _frames(sender, OPUS, 3))


async def test_keyframe_request_hooks(pc: RTCPeerConnection) -> None:
    sender = pc.addTrack(SyntheticVideoTrack(fps=120))
    calls: list[str] = []
    unsubscribe = hooks.on_keyframe_request(sender, lambda: calls.append("sync"))

    async def forward() -> None:
        calls.append("async")

    hooks.on_keyframe_request(sender, forward)
    frames = await _frames(sender, VP8, 2)
    assert hooks.is_vp8_keyframe(frames[0]) and not hooks.is_vp8_keyframe(frames[1])

    await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc))
    await asyncio.sleep(0)
    assert calls == ["sync", "async"]
    assert hooks.sender_stats(sender).keyframe_requests == 1
    # aiortc's own behaviour is kept: the next encoded frame is a keyframe
    assert hooks.is_vp8_keyframe((await _frames(sender, VP8, 1))[0])

    unsubscribe()
    await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=sender._ssrc))
    await asyncio.sleep(0)
    assert calls == ["sync", "async", "async"]

    # the FIR also forced a keyframe; then force_keyframe: next frame is a keyframe, callbacks not notified
    frames = await _frames(sender, VP8, 2)
    assert hooks.is_vp8_keyframe(frames[0]) and not hooks.is_vp8_keyframe(frames[1])
    hooks.force_keyframe(sender)
    assert hooks.is_vp8_keyframe((await _frames(sender, VP8, 1))[0])
    assert hooks.sender_stats(sender).keyframe_requests == 2


async def _offline_receiver(pc: RTCPeerConnection) -> RTCRtpReceiver:
    receiver = pc.addTransceiver("video", direction="recvonly").receiver
    receiver._track = RemoteStreamTrack(kind="video")  # normally set by setRemoteDescription
    await receiver.receive(RTCRtpReceiveParameters(codecs=[VP8], encodings=[RTCRtpDecodingParameters(ssrc=SSRC, payloadType=96)]))
    return receiver


async def _feed(
    receiver: RTCRtpReceiver, pc: RTCPeerConnection, n: int, transform=None, first: int = 0
) -> list[bytes]:
    """Encode n frames with a separate sender and feed them to receiver as RTP; returns the clear frames."""
    sender = pc.addTrack(SyntheticVideoTrack(fps=120))
    if transform is not None:
        hooks.set_sender_transform(sender, transform)
    clear: list[bytes] = []
    if transform is None:
        hooks.set_sender_transform(sender, lambda kind, data: clear.append(data) or data)
    seq = first * 1000
    for i in range(first, first + n + 1):  # the jitter buffer releases a video frame when the next one starts
        enc = await sender._next_encoded_frame(VP8)
        assert enc is not None
        for j, payload in enumerate(enc.payloads):
            packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=i * 3000, ssrc=SSRC)
            packet.payload = payload
            packet.marker = int(j == len(enc.payloads) - 1)
            seq += 1
            await receiver._handle_rtp_packet(packet, arrival_time_ms=i * 33)
    return clear[:n]


async def _drain(track: MediaStreamTrack, settle: float = 0.3) -> list[object]:
    items = []
    while True:
        try:
            items.append(await asyncio.wait_for(track.recv(), settle))
        except TimeoutError:
            return items


async def test_receiver_transform_decodes_and_drops(pc: RTCPeerConnection) -> None:
    receiver = await _offline_receiver(pc)
    hooks.set_receiver_transform(receiver, xor_after)  # XOR is its own inverse
    await _feed(receiver, pc, 4, transform=xor_after)
    decoded = await _drain(receiver.track)
    assert len(decoded) == 4 and all(isinstance(f, av.VideoFrame) for f in decoded)
    stats = hooks.receiver_stats(receiver)
    assert stats.frames_received == 4 and stats.frames_to_decoder == 4 and stats.frames_decoded == 4

    hooks.set_receiver_transform(receiver, lambda kind, data: None)
    await _feed(receiver, pc, 3, transform=xor_after, first=5)
    assert await _drain(receiver.track) == []
    assert stats.frames_dropped >= 3 and stats.frames_to_decoder == 4


async def test_passthrough_yields_packets_and_plis(pc: RTCPeerConnection) -> None:
    receiver = await _offline_receiver(pc)
    stats = hooks.make_passthrough(receiver)
    clear = await _feed(receiver, pc, 4)
    packets = await _drain(receiver.track)
    assert all(isinstance(p, av.Packet) for p in packets)
    assert [bytes(p) for p in packets] == clear  # type: ignore[arg-type]
    assert [p.is_keyframe for p in packets] == [True, False, False, False]  # type: ignore[attr-defined]
    assert [p.pts for p in packets] == [0, 3000, 6000, 9000]  # type: ignore[attr-defined]
    assert packets[0].time_base == fractions.Fraction(1, 90000)  # type: ignore[attr-defined]
    assert stats.packets_forwarded == 4 and stats.keyframes_forwarded == 1
    assert stats.frames_to_decoder == 0 and stats.frames_decoded == 0

    # PLI upstream: not connected, so aiortc swallows the send error, but the call path is exercised
    assert await hooks.request_keyframe(receiver) is True
    assert await hooks.request_keyframe(receiver, min_interval=60) is False  # rate-limited
    assert await hooks.request_keyframe(receiver, ssrc=SSRC) is True
    assert stats.plis_sent == 2


# ---------------------------------------------------------------- metadata: header extensions, Opus CBR

AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


def _extmaps(sdp: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in sdp.splitlines() if line.startswith("a=extmap:")]


def _opus_fmtp(sdp: str) -> list[str]:
    pts = [line.split(":", 1)[1].split(" ", 1)[0] for line in sdp.splitlines()
           if line.startswith("a=rtpmap:") and "opus/48000" in line.lower()]
    return [line.split(" ", 1)[1] for line in sdp.splitlines()
            if any(line.startswith(f"a=fmtp:{pt} ") for pt in pts)]


async def test_limit_metadata_offer_and_answer_carry_no_audio_level_and_opus_cbr() -> None:
    from rtc.codecs import TRANSPORT_HEADER_EXTENSIONS, prefer_vp8_opus_all

    plain = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    quiet = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        # A plain aiortc offer has the audio level: what the hook must take away.
        plain.addTrack(SyntheticAudioTrack())
        plain.addTrack(SyntheticVideoTrack(64, 48, 5))
        prefer_vp8_opus_all(plain)
        plain_offer = await plain.createOffer()
        assert AUDIO_LEVEL in _extmaps(plain_offer.sdp)
        # Offerer side: transceivers made by addTrack before limit_metadata, and one added after it.
        quiet.addTrack(SyntheticAudioTrack())
        hooks.limit_metadata(quiet)
        hooks.limit_metadata(quiet)  # idempotent
        quiet.addTrack(SyntheticVideoTrack(64, 48, 5))
        prefer_vp8_opus_all(quiet)
        offer = await quiet.createOffer()
        assert _extmaps(offer.sdp) and set(_extmaps(offer.sdp)) <= TRANSPORT_HEADER_EXTENSIONS
        assert _opus_fmtp(offer.sdp) == ["cbr=1"]
        # Answerer side: transceivers created by setRemoteDescription from an offer that has the audio level.
        hooks.limit_metadata(other)
        await other.setRemoteDescription(plain_offer)
        answer = await other.createAnswer()
        assert set(_extmaps(answer.sdp)) <= TRANSPORT_HEADER_EXTENSIONS and AUDIO_LEVEL not in answer.sdp
        assert _opus_fmtp(answer.sdp) == ["cbr=1"]
    finally:
        for p in (plain, quiet, other):
            await p.close()


class SpeechAndSilence(MediaStreamTrack):
    """20 ms mono frames, unpaced: a loud tone with noise for 10 frames, then silence for 10, and so on."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    async def recv(self) -> av.AudioFrame:
        import math
        import random

        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        loud = (self.n // 10) % 2 == 0
        rng = random.Random(self.n)
        samples = [int(12000 * math.sin(2 * math.pi * 440 * i / 48000) + rng.randint(-4000, 4000)) if loud else 0
                   for i in range(960)]
        frame.planes[0].update(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))
        frame.sample_rate = 48000
        frame.pts = self.n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self.n += 1
        return frame


async def test_limit_metadata_makes_the_opus_encoder_constant_bitrate() -> None:
    async def sizes(limited: bool) -> list[int]:
        p = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            sender = p.addTrack(SpeechAndSilence())
            if limited:
                hooks.limit_metadata(p)
            frames = await _frames(sender, OPUS, 60)
            return [len(f) for f in frames if f][5:]  # past the encoder's start-up
        finally:
            await p.close()

    vbr = await sizes(False)
    cbr = await sizes(True)
    assert max(vbr) > 2 * min(vbr), vbr  # VBR: silence is much smaller than speech
    assert len(set(cbr)) == 1, cbr  # CBR: every packet has the same size


def test_check_internals_detects_moved_forwarding_internals(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    monkeypatch.delattr(RTCDtlsTransport, "_handle_rtp_data")
    monkeypatch.setattr(RTCRtpSender, "send", lambda self, parameters: None)
    problems = hooks.check_internals()
    assert any("_handle_rtp_data" in p for p in problems), problems
    assert any("RTCRtpSender.send" in p for p in problems), problems


async def test_tap_rtp_takes_packets_before_aiortc_and_untaps(pc: RTCPeerConnection) -> None:
    transceiver = pc.addTransceiver("video", direction="sendrecv")
    dtls = transceiver.receiver.transport
    seen: list[bytes] = []
    reached_aiortc: list[bytes] = []

    async def original(data: bytes, arrival_time_ms: int) -> None:
        reached_aiortc.append(data)

    # stand-in for aiortc's own handler, so that nothing needs a negotiated router
    type_handler = type(dtls)._handle_rtp_data
    try:
        type(dtls)._handle_rtp_data = lambda self, data, arrival_time_ms: original(data, arrival_time_ms)
        untap = hooks.tap_rtp(dtls, lambda data, ms: seen.append(data) or data[1] != 0)
        await dtls._handle_rtp_data(b"\x80\x60" + b"\x00" * 10, 0)  # consumed by the tap
        await dtls._handle_rtp_data(b"\x80\x00" + b"\x00" * 10, 0)  # passed on
        untap()
        await dtls._handle_rtp_data(b"\x80\x61" + b"\x00" * 10, 0)
    finally:
        type(dtls)._handle_rtp_data = type_handler
    assert [d[1] for d in seen] == [0x60, 0x00]
    assert [d[1] for d in reached_aiortc] == [0x00, 0x61]


async def test_small_datagram_reads_sets_aioice_sockets_to_64_kib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    loop = asyncio.get_running_loop()
    hooks.bind_host_candidates_in(loop, 41010, 41011)
    hooks.small_datagram_reads(loop)
    hooks.small_datagram_reads(loop)  # idempotent
    hooks.bind_host_candidates_in(loop, 41010, 41011)  # still idempotent once wrapped by small_datagram_reads
    conns = [aioice.ice.Connection(ice_controlling=True) for _ in range(2)]
    try:
        for c in conns:
            await c.gather_candidates()  # binds only: nothing is sent
        transports = [p.transport for c in conns for p in c._protocols]
        assert transports and all(t.max_size == hooks.DATAGRAM_READ_SIZE for t in transports)
        assert 65527 <= hooks.DATAGRAM_READ_SIZE < 128 * 1024  # whole UDP datagrams, below glibc's mmap threshold
        assert sorted(c.local_candidates[0].port for c in conns) == [41010, 41011]  # the range still applies
    finally:
        for c in conns:
            await c.close()
        del loop.create_datagram_endpoint  # type: ignore[method-assign]


def _srtp_pair() -> tuple[pylibsrtp.Session, pylibsrtp.Session, pylibsrtp.Session]:
    """Two sending sessions with one key (the same input gives the same output) and the matching receiver."""
    key = bytes(range(30))

    def policy(direction: int) -> pylibsrtp.Policy:
        p = pylibsrtp.Policy(key=key, ssrc_type=direction)
        p.allow_repeat_tx = True
        return p

    return (pylibsrtp.Session(policy(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)),
            pylibsrtp.Session(policy(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)),
            pylibsrtp.Session(policy(pylibsrtp.Policy.SSRC_ANY_INBOUND)))


class _Wire:
    """Stand-in for the asyncio datagram transport of an ICE pair: keeps what is written (copied: a view of
    the SRTP buffer is overwritten by the next packet)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def sendto(self, data: bytes | memoryview, addr: object) -> None:
        self.sent.append((bytes(data), addr))


def _sink_on(session: pylibsrtp.Session, *, relayed: bool = False) -> tuple[hooks.RtpSink, _Wire, object]:
    import types

    wire = _Wire()
    protocol = aioice.ice.StunProtocol(None)  # type: ignore[arg-type]
    if relayed:
        async def send_data(data: bytes, addr: object) -> None:
            wire.sendto(data, addr)

        protocol = types.SimpleNamespace(send_data=send_data)  # type: ignore[assignment]
    else:
        protocol.transport = wire  # type: ignore[assignment]
    pair = types.SimpleNamespace(protocol=protocol, remote_addr=("127.0.0.1", 9))
    dtls = types.SimpleNamespace(state="connected", _tx_srtp=session,
                                 transport=types.SimpleNamespace(_connection=types.SimpleNamespace(_nominated={1: pair})))
    sender = types.SimpleNamespace(_ssrc=0xABCD, transport=dtls, _RTCRtpSender__ntp_timestamp=0,
                                   _RTCRtpSender__rtp_timestamp=0, _RTCRtpSender__packet_count=0,
                                   _RTCRtpSender__octet_count=0)
    return hooks.RtpSink(sender), wire, sender  # type: ignore[arg-type]


async def test_rtp_sink_protects_in_place_byte_for_byte_as_session_protect() -> None:
    in_place, reference, receiver = _srtp_pair()
    sink, wire, sender = _sink_on(in_place)
    header = bytearray(b"\x90\xe4\x00\x00\x00\x00\x00\x00\x00\x00\xab\xcd\xbe\xde\x00\x01\x32\x00\x00\x00")
    expected = []
    for n in range(40):
        header[2:4] = (65530 + n & 0xFFFF).to_bytes(2, "big")  # reused, as the forwarder does
        header[4:8] = (3000 * n).to_bytes(4, "big")
        payload = bytes([n]) * (1 + 31 * n)  # 1 to 1210 bytes
        assert sink.send_rtp(header, payload, 3000 * n, n << 32)
        expected.append(reference.protect(bytes(header) + payload))
    assert sink._in_place is not None  # the in-place path ran, not its fallback
    assert [data for data, _ in wire.sent] == expected
    assert [receiver.unprotect(data) for data, _ in wire.sent][-1] == bytes(header) + bytes([39]) * 1210
    assert {addr for _, addr in wire.sent} == {("127.0.0.1", 9)}
    assert (sender._RTCRtpSender__packet_count, sender._RTCRtpSender__octet_count) == (  # type: ignore[attr-defined]
        40, sum(1 + 31 * n for n in range(40)))
    assert (sender._RTCRtpSender__rtp_timestamp, sender._RTCRtpSender__ntp_timestamp) == (  # type: ignore[attr-defined]
        3000 * 39, 39 << 32)
    # beyond the room the SRTP buffer keeps for its trailer: refused, as Session.protect refuses it
    assert not sink.send_rtp(header, b"\x00" * 1400, 0, 0)
    # a relayed pair gets bytes of its own (TURN sends later, the buffer is reused at once)
    sending, _, receiving = _srtp_pair()
    relayed, wire2, _ = _sink_on(sending, relayed=True)
    for n in (1, 2):
        header[2:4] = n.to_bytes(2, "big")
        assert relayed.send_rtp(header, bytes([n]) * 100, 0, 0)
    await asyncio.gather(*relayed._pending)
    assert [receiving.unprotect(d)[-1] for d, _ in wire2.sent] == [1, 2]


class _KeepingWire(_Wire):
    """A transport that keeps the object it is given (as uvloop's does when it has to queue a datagram)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[object] = []

    def sendto(self, data: bytes | memoryview, addr: object) -> None:
        self.kept.append(data)


async def test_rtp_sink_gives_a_transport_other_than_asyncios_a_copy() -> None:
    in_place, reference, _ = _srtp_pair()
    sink, _, sender = _sink_on(in_place)
    keeping = _KeepingWire()
    sender.transport.transport._connection._nominated[1].protocol.transport = keeping  # type: ignore[attr-defined]
    header = bytearray(b"\x80\x60\x00\x00\x00\x00\x00\x00\x00\x00\xab\xcd")
    expected = []
    for n in range(3):
        header[2:4] = n.to_bytes(2, "big")
        assert sink.send_rtp(header, bytes([n]) * 200, 0, 0)
        expected.append(reference.protect(bytes(header) + bytes([n]) * 200))
    assert [bytes(d) for d in keeping.kept] == expected  # type: ignore[arg-type]  # not the reused buffer


async def test_rtp_sink_sends_on_asyncios_socket_directly_and_queues_behind_a_queue() -> None:
    """On asyncio's datagram transport the sink sends on its socket (no Python send path per packet); while the
    transport holds a queue, through the transport (after what is queued: the order is kept)."""
    import socket
    import types

    loop = asyncio.get_running_loop()
    receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiving.bind(("127.0.0.1", 0))
    receiving.settimeout(2)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: aioice.ice.StunProtocol(None), local_addr=("127.0.0.1", 0))  # type: ignore[arg-type]
    try:
        in_place, reference, _ = _srtp_pair()
        pair = types.SimpleNamespace(protocol=protocol, remote_addr=receiving.getsockname())
        dtls = types.SimpleNamespace(state="connected", _tx_srtp=in_place, transport=types.SimpleNamespace(
            _connection=types.SimpleNamespace(_nominated={1: pair})))
        sender = types.SimpleNamespace(_ssrc=0xABCD, transport=dtls, _RTCRtpSender__ntp_timestamp=0,
                                       _RTCRtpSender__rtp_timestamp=0, _RTCRtpSender__packet_count=0,
                                       _RTCRtpSender__octet_count=0)
        sink = hooks.RtpSink(sender)  # type: ignore[arg-type]
        header = bytearray(b"\x80\x60\x00\x00\x00\x00\x00\x00\x00\x00\xab\xcd")
        calls: list[object] = []
        original = transport.sendto
        transport.sendto = lambda data, addr=None: (calls.append(data), original(data, addr))  # type: ignore[method-assign]
        header[2:4] = (1).to_bytes(2, "big")
        assert sink.send_rtp(header, b"\x01" * 300, 0, 0)
        assert sink._sock is not None and calls == []  # its socket, directly
        assert receiving.recv(2048) == reference.protect(bytes(header) + b"\x01" * 300)
        queued = reference.protect(b"\x80\x60\x00\x09" + bytes(8) + b"queued")
        transport._buffer.append((queued, receiving.getsockname()))  # type: ignore[attr-defined]
        header[2:4] = (2).to_bytes(2, "big")
        assert sink.send_rtp(header, b"\x02" * 300, 0, 0)
        assert len(calls) == 1 and isinstance(calls[0], memoryview)  # through the transport, which copies
        transport._buffer.popleft()  # type: ignore[attr-defined]
        transport._buffer_size = 0  # type: ignore[attr-defined]
    finally:
        transport.close()
        receiving.close()


async def test_in_place_unprotect_is_session_unprotect() -> None:
    """tap_rtp's in-place unprotect gives what pylibsrtp's ``unprotect``/``unprotect_rtcp`` give, and None where
    they raise (a tampered packet, a replayed one)."""
    sending, _, receiving = _srtp_pair()
    reference = pylibsrtp.Session(pylibsrtp.Policy(key=bytes(range(30)), ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
    in_place = hooks._InPlace.of(receiving)
    assert in_place is not None
    for n in range(20):
        rtp = sending.protect(b"\x80\x60" + n.to_bytes(2, "big") + bytes(8) + bytes([n]) * (60 * n + 1))
        assert in_place.unprotect(rtp) == reference.unprotect(rtp)
    assert in_place.unprotect(rtp) is None  # replayed
    tampered = bytearray(sending.protect(b"\x80\x60\x00\x99" + bytes(8) + b"payload"))
    tampered[-1] ^= 1
    assert in_place.unprotect(bytes(tampered)) is None
    rtcp = sending.protect_rtcp(bytes(RtcpRrPacket(ssrc=7, reports=[])))
    assert in_place.unprotect_rtcp(rtcp) == reference.unprotect_rtcp(rtcp) == bytes(RtcpRrPacket(ssrc=7, reports=[]))
    assert in_place.unprotect(b"\x80" * 2000) is None  # longer than the session's buffer
    assert hooks._InPlace.of(None) is None


async def test_tap_rtp_direct_path_hands_rtp_from_the_socket_callback(pc: RTCPeerConnection) -> None:
    transceiver = pc.addTransceiver("video", direction="sendrecv")
    dtls = transceiver.receiver.transport
    connection = dtls.transport._connection
    sender_session, _, receiver_session = _srtp_pair()
    dtls._rx_srtp = receiver_session
    protocol = aioice.ice.StunProtocol(connection)
    protocol.local_candidate = aioice.Candidate("1", 1, "udp", 1, "127.0.0.1", 9, "host")
    connection._protocols.append(protocol)
    queued = connection._queue
    seen: list[bytes] = []
    rtp = b"\x80\x60\x00\x07" + b"\x00" * 4 + b"\x00\x00\x12\x34" + b"payload"
    rtcp = b"\x80\xc9\x00\x01\x00\x00\x12\x34"  # a receiver report: aiortc's way
    try:
        untap = hooks.tap_rtp(dtls, lambda data, ms: seen.append(data) or True)
        assert "datagram_received" not in protocol.__dict__  # not before SRTP is up and a packet came
        await dtls._handle_rtp_data(rtp, 0)  # the first packet, through aiortc's loop
        assert "datagram_received" in protocol.__dict__
        protocol.datagram_received(sender_session.protect(rtp[:2] + b"\x00\x08" + rtp[4:]), ("127.0.0.1", 9))
        assert seen == [rtp, rtp[:2] + b"\x00\x08" + rtp[4:]] and queued.empty()  # no queue, no task
        protected = bytearray(sender_session.protect(rtp[:2] + b"\x00\x09" + rtp[4:]))
        protected[-1] ^= 1  # fails authentication: dropped, as aiortc drops it
        protocol.datagram_received(bytes(protected), ("127.0.0.1", 9))
        assert len(seen) == 2 and queued.empty()
        protocol.datagram_received(b"", ("127.0.0.1", 9))  # an empty datagram: nothing to do
        protocol.datagram_received(rtcp, ("127.0.0.1", 9))  # SRTCP that fails authentication: dropped
        protocol.datagram_received(b"\x17\xfe\xfd" + b"\x00" * 10, ("127.0.0.1", 9))  # DTLS, STUN: aioice's queue
        assert [queued.get_nowait()[0] for _ in range(1)] == [b"\x17\xfe\xfd" + b"\x00" * 10] and queued.empty()
        untap()
        assert "datagram_received" not in protocol.__dict__
        protocol.datagram_received(sender_session.protect(rtp[:2] + b"\x00\x0a" + rtp[4:]), ("127.0.0.1", 9))
        assert len(seen) == 2 and queued.qsize() == 1  # aioice's way again
        # an impaired wire (the lossy benchmark's subscriber) is never bypassed: no direct path on it
        restore = hooks.impair_receive(dtls, lambda data: True)
        untap = hooks.tap_rtp(dtls, lambda data, ms: seen.append(data) or True)
        await dtls._handle_rtp_data(rtp[:2] + b"\x00\x0b" + rtp[4:], 0)
        assert "datagram_received" not in protocol.__dict__
        untap()
        restore()
    finally:
        dtls._rx_srtp = None
        connection._protocols.remove(protocol)


async def test_tap_rtp_direct_path_passes_what_the_tap_declines_to_aiortc(pc: RTCPeerConnection) -> None:
    transceiver = pc.addTransceiver("video", direction="sendrecv")
    dtls = transceiver.receiver.transport
    connection = dtls.transport._connection
    sender_session, _, receiver_session = _srtp_pair()
    protocol = aioice.ice.StunProtocol(connection)
    protocol.local_candidate = aioice.Candidate("1", 1, "udp", 1, "127.0.0.1", 9, "host")
    reached_aiortc: list[bytes] = []

    async def original(data: bytes, arrival_time_ms: int) -> None:
        reached_aiortc.append(data)

    type_handler = type(dtls)._handle_rtp_data
    try:
        type(dtls)._handle_rtp_data = lambda self, data, arrival_time_ms: original(data, arrival_time_ms)
        dtls._rx_srtp = receiver_session
        connection._protocols.append(protocol)
        untap = hooks.tap_rtp(dtls, lambda data, ms: data[1] != 0)  # payload type 0 is declined
        await dtls._handle_rtp_data(b"\x80\x60\x00\x01" + b"\x00" * 8, 0)
        for seq, pt in ((2, 0x00), (3, 0x60), (4, 0x00)):
            packet = bytes([0x80, pt]) + seq.to_bytes(2, "big") + b"\x00" * 8
            protocol.datagram_received(sender_session.protect(packet), ("127.0.0.1", 9))
        await asyncio.sleep(0)  # aiortc's handler runs as a task
        assert [(d[1], d[3]) for d in reached_aiortc] == [(0, 2), (0, 4)]
        untap()
    finally:
        type(dtls)._handle_rtp_data = type_handler
        dtls._rx_srtp = None
        connection._protocols.remove(protocol)


@contextlib.asynccontextmanager
async def _direct_feedback(pc: RTCPeerConnection) -> AsyncIterator[types.SimpleNamespace]:
    """A tapped connection on the direct path with one RtpSink sender: its feedback and keyframe requests, what
    reaches aiortc's own RTCP handler, and ``send(rtcp)`` to deliver an SRTCP datagram in the socket callback."""
    transceiver = pc.addTransceiver("video", direction="sendrecv")
    dtls = transceiver.receiver.transport
    sender = transceiver.sender
    connection = dtls.transport._connection
    sender_session, _, receiver_session = _srtp_pair()
    protocol = aioice.ice.StunProtocol(connection)
    protocol.local_candidate = aioice.Candidate("1", 1, "udp", 1, "127.0.0.1", 9, "host")
    sink = hooks.rtp_sink(sender)
    t = types.SimpleNamespace(sender=sender, sink=sink, ssrc=sender._ssrc, protocol=protocol, connection=connection,
                              sender_session=sender_session, feedback=[], keyframes=[], reached_aiortc=[])
    sink.feedback = lambda kind, value: t.feedback.append((kind, value))
    hooks.on_keyframe_request(sender, lambda: t.keyframes.append(1))

    async def original(data: bytes) -> None:
        t.reached_aiortc.append(data)

    def send(rtcp: bytes) -> None:
        protocol.datagram_received(sender_session.protect_rtcp(rtcp), ("127.0.0.1", 9))

    t.send = send
    type_handler = type(dtls)._handle_rtcp_data
    try:
        type(dtls)._handle_rtcp_data = lambda self, data: original(data)
        dtls._rx_srtp = receiver_session
        dtls._rtp_router.register_sender(sender, t.ssrc)
        connection._protocols.append(protocol)
        t.untap = hooks.tap_rtp(dtls, lambda data, ms: True)
        await dtls._handle_rtp_data(b"\x80\x60\x00\x01" + b"\x00" * 8, 0)  # the first packet: direct from now on
        yield t
    finally:
        type(dtls)._handle_rtcp_data = type_handler
        if protocol in connection._protocols:
            connection._protocols.remove(protocol)


async def test_tap_rtp_takes_srtcp_feedback_for_its_sinks_below_aiortc(pc: RTCPeerConnection) -> None:
    """SRTCP is unprotected once in the socket callback: a receiver report, NACK and REMB for an RtpSink's sender
    go to its feedback, PLI and FIR to its keyframe hooks, SDES nowhere, without aiortc; the rest of the compound
    packet (a report about another SSRC, feedback for another SSRC) goes to aiortc's own RTCP handler; SRTCP that
    fails authentication is dropped."""
    async with _direct_feedback(pc) as t:
        ssrc, feedback, keyframes, protocol = t.ssrc, t.feedback, t.keyframes, t.protocol
        report = bytes(RtcpRrPacket(ssrc=7, reports=[RtcpReceiverInfo(
            ssrc=ssrc, fraction_lost=3, packets_lost=1, highest_sequence=5, jitter=2, lsr=0, dlsr=0)]))
        other_report = bytes(RtcpRrPacket(ssrc=7, reports=[RtcpReceiverInfo(
            ssrc=0x9999, fraction_lost=0, packets_lost=0, highest_sequence=5, jitter=0, lsr=0, dlsr=0)]))
        sdes = bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=7, items=[(1, b"cname")])]))
        nack = bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=7, media_ssrc=ssrc, lost=[10, 11, 13, 40]))
        other_nack = bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=7, media_ssrc=0x9999, lost=[1]))
        remb = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=7, media_ssrc=0, fci=pack_remb_fci(300_000, [ssrc])))
        pli = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=7, media_ssrc=ssrc))
        fir = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=7, media_ssrc=ssrc, fci=b"\x00" * 8))
        t.send(report + sdes + other_report + nack + other_nack + remb + pli)
        assert feedback == [("rr", (3, 2)), ("nack", [10, 11, 13, 40]), ("remb", 300_000)] and keyframes == [1]
        t.send(nack + fir)
        assert len(feedback) == 4 and keyframes == [1, 1]
        tampered = bytearray(t.sender_session.protect_rtcp(pli))
        tampered[-1] ^= 1
        protocol.datagram_received(bytes(tampered), ("127.0.0.1", 9))
        await asyncio.sleep(0)  # aiortc's handler runs as a task
        assert t.reached_aiortc == [other_report + other_nack] and keyframes == [1, 1]
        assert t.connection._queue.empty()
        t.untap()


async def test_a_connection_that_only_subscribes_takes_its_feedback_in_the_socket_callback(
        pc: RTCPeerConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    """No RTP ever comes from a subscriber-only connection: the direct path starts when its RtpSink first finds
    SRTP up and a nominated pair, so that its NACKs, PLIs and REMBs skip aiortc too."""
    import types

    transceiver = pc.addTransceiver("video", direction="sendrecv")
    dtls = transceiver.receiver.transport
    sender = transceiver.sender
    connection = dtls.transport._connection
    sender_session, _, receiver_session = _srtp_pair()
    protocol = aioice.ice.StunProtocol(connection)
    protocol.local_candidate = aioice.Candidate("1", 1, "udp", 1, "127.0.0.1", 9, "host")
    protocol.transport = _Wire()  # type: ignore[assignment]
    sink = hooks.rtp_sink(sender)
    feedback: list[tuple[str, object]] = []
    sink.feedback = lambda kind, value: feedback.append((kind, value))
    nack = bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=7, media_ssrc=sender._ssrc, lost=[5]))
    monkeypatch.setattr(type(dtls), "state", property(lambda self: "connected"))
    try:
        dtls._rx_srtp = receiver_session
        dtls._tx_srtp = sender_session
        dtls._rtp_router.register_sender(sender, sender._ssrc)
        connection._protocols.append(protocol)
        connection._nominated[1] = types.SimpleNamespace(protocol=protocol, remote_addr=("127.0.0.1", 9))
        untap = hooks.tap_rtp(dtls, lambda data, ms: True)
        assert "datagram_received" not in protocol.__dict__
        assert sink._route() is not None  # the first packet to send finds the pair
        assert "datagram_received" in protocol.__dict__
        protocol.datagram_received(sender_session.protect_rtcp(nack), ("127.0.0.1", 9))
        assert feedback == [("nack", [5])] and connection._queue.empty()
        untap()
        assert "datagram_received" not in protocol.__dict__
    finally:
        connection._nominated.pop(1, None)
        dtls._rx_srtp = None
        dtls._tx_srtp = None
        connection._protocols.remove(protocol)


def test_compound_sender_reports_are_aiortcs_reports_in_one_packet() -> None:
    """One SR per sender, with the counters RtpSink.send_rtp fed (as aiortc's _run_rtcp builds it), then one SDES
    with each sender's CNAME; aiortc's round-trip bookkeeping kept; a connection with many senders gets several
    compound packets, each small enough for SRTCP and a safe datagram, each starting with an SR and carrying the
    CNAMEs of its own SRs."""
    import types

    senders = []
    for n in range(3):
        senders.append(types.SimpleNamespace(_ssrc=100 + n, **{
            hooks._TX_NTP: (5 << 32) + n, hooks._TX_RTP_TS: 9000 * n, hooks._TX_PACKETS: 10 + n,
            hooks._TX_OCTETS: (1 << 32) + 1000 * n, hooks._TX_CNAME: f"cname-{n}"}))
    [compound] = hooks.compound_sender_reports(senders)  # type: ignore[arg-type]
    packets = RtcpPacket.parse(compound)
    assert [type(p) for p in packets] == [RtcpSrPacket] * 3 + [RtcpSdesPacket]
    assert [(p.ssrc, p.sender_info.ntp_timestamp, p.sender_info.rtp_timestamp, p.sender_info.packet_count,
             p.sender_info.octet_count) for p in packets[:3]] == [
        (100 + n, (5 << 32) + n, 9000 * n, 10 + n, 1000 * n) for n in range(3)]
    assert [(c.ssrc, c.items) for c in packets[3].chunks] == [(100 + n, [(1, f"cname-{n}".encode())]) for n in range(3)]
    assert senders[0].__dict__[hooks._TX_LSR] == ((5 << 32) >> 16) & 0xFFFFFFFF
    # a 16-member room: 32 senders with aiortc's 36-character CNAMEs
    many = [types.SimpleNamespace(_ssrc=n, **{hooks._TX_NTP: 0, hooks._TX_RTP_TS: 0, hooks._TX_PACKETS: 0,
                                              hooks._TX_OCTETS: 0, hooks._TX_CNAME: f"{{{n:034d}}}"}) for n in range(32)]
    compounds = hooks.compound_sender_reports(many)  # type: ignore[arg-type]
    sending, _, _ = _srtp_pair()
    assert len(compounds) > 1 and all(len(c) <= hooks.RTCP_COMPOUND_MAX for c in compounds)
    ssrcs = []
    for c in compounds:
        sending.protect_rtcp(c)  # pylibsrtp takes it (it refuses more than 1,352 bytes)
        packets = RtcpPacket.parse(c)
        assert isinstance(packets[0], RtcpSrPacket)
        srs = [p.ssrc for p in packets if isinstance(p, RtcpSrPacket)]
        assert srs == [chunk.ssrc for p in packets if isinstance(p, RtcpSdesPacket) for chunk in p.chunks]
        ssrcs += srs
    assert ssrcs == list(range(32))


async def test_take_feedback_refuses_what_aiortc_refuses_and_never_raises(
        pc: RTCPeerConnection, caplog: pytest.LogCaptureFixture) -> None:
    """Crafted SRTCP from a member: padding is not read as NACK items (a wrong padding hands the whole packet to
    aiortc, which drops it); a NACK asks for at most NACK_MAX packets, each once; a REMB that counts more SSRCs
    than it carries is ignored; an exception in the SFU's own handling drops the packet, is logged once (without
    the packet) and never reaches the event loop."""
    import struct

    async with _direct_feedback(pc) as t:
        ssrc, feedback, send, sink = t.ssrc, t.feedback, t.send, t.sink
        # a NACK for 10 with 4 bytes of padding (00 00 00 04), then one whose padding count is wrong
        send(struct.pack("!BBHII", 0xA1, 205, 4, 7, ssrc) + struct.pack("!HH", 10, 0) + b"\x00\x00\x00\x04")
        assert feedback == [("nack", [10])]
        bad = struct.pack("!BBHII", 0xA1, 205, 3, 7, ssrc) + struct.pack("!HH", 10, 0) + b"\x00\x00\x00\x09"
        send(bad)
        # thousands asked for in one NACK: at most NACK_MAX, each once
        items = b"".join(struct.pack("!HH", 100, 0xFFFF) for _ in range(300))
        send(struct.pack("!BBHII", 0x81, 205, 2 + 300, 7, ssrc) + items)
        lost = feedback[-1][1]
        assert isinstance(lost, list) and len(lost) == len(set(lost)) == 17 <= hooks.NACK_MAX
        items = b"".join(struct.pack("!HH", 100 + 17 * k, 0xFFFF) for k in range(300))
        send(struct.pack("!BBHII", 0x81, 205, 2 + 300, 7, ssrc) + items)
        assert len(feedback[-1][1]) == hooks.NACK_MAX  # type: ignore[arg-type]
        # a REMB that says two SSRCs and carries one (aiortc's parser raises struct.error on it)
        before = len(feedback)
        fci = b"REMB" + bytes([2, 0, 0x10, 0]) + struct.pack("!I", ssrc)
        send(struct.pack("!BBHII", 0x8F, 206, 2 + len(fci) // 4, 7, 0) + fci)
        assert len(feedback) == before
        # the SFU's own handler fails: dropped, logged once, not raised
        sink.feedback = lambda kind, value: 1 / 0
        caplog.clear()
        for _ in range(3):
            send(struct.pack("!BBHII", 0x81, 205, 3, 7, ssrc) + struct.pack("!HH", 11, 0))
        warnings = [r for r in caplog.records if "could not be handled" in r.getMessage()]
        assert len(warnings) == 1
        await asyncio.sleep(0)
        assert t.reached_aiortc == [bad]  # the wrongly padded packet, whole (the bad REMB is dropped here)


async def test_send_remb_sends_nothing_and_says_so_before_the_transport_is_up(pc: RTCPeerConnection,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = pc.addTransceiver("video", direction="recvonly").receiver
    sent: list[Any] = []

    async def record(packet: Any) -> None:
        sent.append(packet)

    monkeypatch.setattr(receiver, "_send_rtcp", record)
    assert await hooks.send_remb(receiver, 500_000, [1234]) is False  # no RTCP SSRC yet
    receiver._set_rtcp_ssrc(99)
    assert await hooks.send_remb(receiver, 500_000, [1234]) is False  # its DTLS transport is not connected
    assert sent == []
    monkeypatch.setattr(type(receiver.transport), "state", property(lambda self: "connected"))
    assert await hooks.send_remb(receiver, 500_000, [1234]) is True
    (packet,) = sent
    assert bytes(packet) == bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=99, media_ssrc=0,
                                                 fci=pack_remb_fci(500_000, [1234])))


async def test_receive_reports_count_what_is_missing_from_the_sequence(pc: RTCPeerConnection) -> None:
    receiver = pc.addTransceiver("video", direction="recvonly").receiver
    reports = hooks.ReceiveReports(receiver, 1234, 90_000)
    for seq in (10, 11, 12, 15, 16):  # 13 and 14 never came
        reports.add(seq, seq * 3000)
    assert reports.packets_lost == 2


async def test_a_nack_through_aiortc_gives_the_sink_sixteen_bit_numbers(pc: RTCPeerConnection) -> None:
    """Feedback that reaches the sink through aiortc (before the direct path takes it) is numbered as on the direct
    path: aiortc's parser leaves a number past 65535 unwrapped (a NACK of 65534 and the three after it), which the
    SFU then neither served nor counted."""
    import struct

    sender = pc.addTransceiver("video", direction="sendonly").sender
    sink = hooks.rtp_sink(sender)
    feedback: list[Any] = []
    sink.feedback = lambda kind, value: feedback.append((kind, value))
    (nack,) = RtcpPacket.parse(struct.pack("!BBHII", 0x81, 205, 3, 7, sender._ssrc) + struct.pack("!HH", 65534, 0b111))
    assert nack.lost == [65534, 65535, 65536, 65537]  # as aiortc parses it
    await sender._handle_rtcp_packet(nack)
    assert feedback == [("nack", [65534, 65535, 0, 1])]
