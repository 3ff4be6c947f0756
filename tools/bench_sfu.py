"""``alcove bench sfu``: the forwarding SFU against aiortc's decode + relay + re-encode, in one run.

Three processes per phase, so that each figure measures what it names:

* this process plays the signaling server: it runs the :class:`server.sfu.SfuManager` and a tiny aiohttp
  WebSocket echo that a client on the same loop pings every 20 ms (the "signaling latency" while media
  flows);
* the SFU worker process (spawned by the manager) forwards the media; its CPU is read from ``/proc``;
* a clients process runs ``publishers`` aiortc publishers (synthetic VP8 + Opus, 640x480 at 30 fps, half of
  the picture noise so that the encoder sends its full ~500 kbps) and ``subscribers`` aiortc subscribers, each receiving every publisher (their receivers
  are pass-through too, so counting frames costs the clients nothing).

Phase ``forward`` uses the real SFU worker (RTP-level forwarding); phase ``pack`` the same worker on the former
path (``WorkerConfig.pack``: packets re-packetized by aiortc's sender with ``encoder.pack()``); phase
``transcode`` the same worker with ``transcode=True``: each publish stream is decoded once and fanned out
(MediaRelay(buffered=False) semantics) to senders that re-encode it per subscriber — aiortc's stock relay.
A *stream* is one publisher's audio+video delivered to one subscriber (``publishers * subscribers`` streams).
``packets_per_second_per_core``: RTP packets the forwarder sent per second, divided by the share of a core
it used. The default size is 640x480 (aiortc's VP8 encoder sends ~500 kbps).

Then the *floor*: a relay on the worker's own event loop that only moves the same datagrams (each publisher's
audio and video at the forward phase's rates, one socket per connection, each datagram sent on to every subscriber)
and does nothing else — no SRTP, no parsing, no feedback. ``ratios.forward_to_floor_per_packet`` is the
forwarder's CPU per packet sent over the floor's, in the same run: what our forwarding adds to the cost of a
process that receives and sends those datagrams at all (wake-ups, system calls, loopback delivery).

Then the *loaded* phase (``--load-streams``, default 96; 0 skips it): the forwarding path where a worker is busy, as
on a server carrying many sessions. As many rooms of ``publishers`` x ``subscribers`` as make about that many
streams, all on one worker; so that one clients process can drive them, the publishers replay pre-encoded media
(aiortc's own VP8 and Opus encoders' output for the same textured picture and tone, recorded once, sent through
aiortc's ``pack()`` path: the same packets on the wire, no encoder per connection) and the subscribers are light
(:class:`_LightSubscriber`). ``loaded.streams_per_core`` is measured, streams over the share of a core the worker
used, where the small room's ``streams_per_core_estimate`` extrapolates from a few per cent of a core; then the
floor for the same rooms (``loaded.floor``, ``loaded.forward_to_floor_per_packet``).

``--lossy`` runs the forwarding phase only, with publishers that send VP8 in three temporal layers
(:func:`rtc.aiortc_hooks.send_temporal_layers`, L1T3 as browsers send in SFU rooms) and subscriber ``s0`` behind a
lossy, rate-limited link: its layer over time, the complete frames its link delivers per second and the longest
gaps (``impaired_link_frames``), what aiortc's jitter buffer makes of them (``impaired_freezes``), the others'
frame rate and layer, and the publishers' key frames per second.

Loopback only: run it inside ``unshare -n sh -c 'ip link set lo up && …'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import math
import multiprocessing
import os
import statistics
import struct
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

MAX_PUBLISHERS = 8
MAX_SUBSCRIBERS = 16
MAX_SECONDS = 120.0
WARMUP = 2.0
PING_INTERVAL = 0.02


# ------------------------------------------------------------------------------------------------ clients


def _textured_video_track(width: int, height: int, colour: tuple[int, int, int]) -> Any:
    """The synthetic test picture with low-amplitude noise over its lower half, fresh every frame, so that VP8
    needs about its whole target bitrate (aiortc's ~500 kbps) instead of the few kbps a flat picture costs."""
    from peer.media import SyntheticVideoTrack

    class TexturedVideoTrack(SyntheticVideoTrack):
        def _make_planes(self, index: int, variants: int) -> tuple[bytes, bytes, bytes]:
            luma, u, v = super()._make_planes(index, variants)
            half = (self.height // 2) * self.width
            noise = bytes(luma[half + i] ^ (b & 0x0F) for i, b in enumerate(os.urandom(len(luma) - half)))
            return luma[:half] + noise, u, v

    return TexturedVideoTrack(width, height, 30, colour)


REPLAY_SECONDS = 4
"""The loaded phase's publishers send one pre-encoded stretch of this many seconds in a loop (a key frame first)."""
REPLAY_WARMUP_FRAMES = 30
"""Frames encoded before the stretch, so that it starts with the encoder's rate control settled (~500 kbps)."""


def _replay_media(width: int, height: int, seconds: int = REPLAY_SECONDS) -> tuple[list[bytes], list[bytes]]:
    """The loaded phase's media, encoded once: ``seconds`` of the bench's textured 30 fps picture by
    aiortc's own VP8 encoder (:func:`rtc.aiortc_hooks.vp8_bitstream`, a key frame at the loop's start, as after a
    PLI) and as many 20 ms Opus packets of the bench's tone by aiortc's Opus encoder."""
    import av
    from aiortc.codecs.opus import OpusEncoder

    from peer.media import (
        AUDIO_SAMPLE_RATE,
        AUDIO_SAMPLES_PER_FRAME,
        AUDIO_TIME_BASE,
        VIDEO_TIME_BASE,
        SyntheticAudioTrack,
    )
    from rtc.aiortc_hooks import vp8_bitstream

    picture = _textured_video_track(width, height, (80, 160, 220))
    count = REPLAY_WARMUP_FRAMES + 30 * seconds

    def frames() -> Any:
        for i in range(count):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane, data in zip(frame.planes, picture.planes(i), strict=True):
                plane.update(data)
            frame.pts, frame.time_base = i * 3000, VIDEO_TIME_BASE
            yield frame

    video = vp8_bitstream(frames(), key_at={REPLAY_WARMUP_FRAMES})[REPLAY_WARMUP_FRAMES:]
    tone = SyntheticAudioTrack()
    encoder = OpusEncoder()
    audio: list[bytes] = []
    for i in range(50 * seconds):
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES_PER_FRAME)
        frame.planes[0].update(tone.chunk(i))
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_SAMPLE_RATE, i * AUDIO_SAMPLES_PER_FRAME, AUDIO_TIME_BASE
        audio.extend(encoder.encode(frame)[0])
    return video, audio


def _replay_track(kind: str, packets: list[bytes], delay: float) -> Any:
    """A track that yields ``packets`` (pre-encoded, :func:`_replay_media`) as ``av.Packet`` in real time, in a loop,
    starting ``delay`` seconds late (publishers do not all send at the same instant): aiortc's sender sends them
    through its ``pack()`` path (packetization, RTP, SRTP) without encoding. A key-frame request cannot be served
    (the stretch's key frame comes round once per loop). ``sent`` counts the packets it has yielded."""
    import fractions

    import av
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    from peer.media import Pacer

    rate, period = (90_000, 1 / 30) if kind == "video" else (48_000, 0.02)

    class ReplayTrack(MediaStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.kind = kind
            self._pacer = Pacer(period)
            self._delay = delay
            self.sent = 0

        async def recv(self) -> Any:  # an av.Packet
            if self.readyState != "live":
                raise MediaStreamError
            if self._delay:
                await asyncio.sleep(self._delay)
                self._delay = 0.0
            n = await self._pacer.next()
            packet = av.Packet(packets[n % len(packets)])
            packet.pts, packet.time_base = round(n * period * rate), fractions.Fraction(1, rate)
            self.sent += 1
            return packet

    return ReplayTrack()


_SEQ_TS_SSRC = struct.Struct("!HII")
"""An RTP header's sequence number, timestamp and SSRC (from byte 2)."""


class _LightStream:
    __slots__ = ("bytes", "clock_rate", "frames", "kind", "receiver", "reports")

    def __init__(self, kind: str, receiver: Any) -> None:
        self.kind = kind
        self.receiver = receiver
        self.clock_rate = 90_000 if kind == "video" else 48_000
        self.reports: Any = None
        self.frames = 0
        """Video: frames (their last packet, marker bit); audio: packets (one 20 ms frame each)."""
        self.bytes = 0


class _LightSubscriber:
    """A subscriber connection of the loaded phase, kept light so that one clients process can receive ~100
    streams: every RTP packet is taken in the socket's read callback after SRTP unprotect
    (:func:`rtc.aiortc_hooks.tap_rtp`) and goes no further (no jitter buffer, no track: aiortc's own receive path
    costs the clients process more than the SFU spends forwarding the packet). The SFU still gets the feedback
    aiortc's receivers send: the packets feed aiortc's receiver statistics (:class:`rtc.aiortc_hooks.ReceiveReports`,
    whose receiver reports its RTCP loop sends) and :meth:`run_remb` sends a REMB per video stream twice a second
    (:func:`rtc.aiortc_hooks.send_remb`, the rate aiortc's receivers send theirs at in the small room) with the
    bitrate received. Counted per publisher: video frames (marker bit) and audio packets; and the packets lost."""

    REMB_INTERVAL = 0.5

    def __init__(self, pc: Any, mapping: dict[str, dict[str, str]]) -> None:
        from aiortc.sdp import SessionDescription

        from rtc.aiortc_hooks import ReceiveReports, send_remb, tap_rtp

        self._make_reports = ReceiveReports
        self._send_remb = send_remb
        self.counts: dict[str, _LightStream] = {}
        """Video streams by publisher (``frames``)."""
        self.audio: dict[str, _LightStream] = {}
        """Audio streams by publisher (``frames``: packets)."""
        self.rembs_sent = 0
        self._streams: dict[int, _LightStream] = {}
        receivers = {t.mid: t.receiver for t in pc.getTransceivers()}
        for media in SessionDescription.parse(pc.remoteDescription.sdp).media:
            entry = mapping.get(media.rtp.muxId or "")
            receiver = receivers.get(media.rtp.muxId)
            if not entry or receiver is None or not media.ssrc:
                continue
            stream = self._streams[media.ssrc[0].ssrc] = _LightStream(entry["kind"], receiver)
            (self.counts if stream.kind == "video" else self.audio)[entry["pid"]] = stream
        tap_rtp(pc.getTransceivers()[0].receiver.transport, self._tap)

    def _tap(self, data: bytes, arrival_ms: int) -> bool:
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        stream = self._streams.get(ssrc)
        if stream is None:
            return True
        reports = stream.reports
        if reports is None:  # from its first packet on, as aiortc's receiver does (a stream's statistics without a
            # packet make aiortc's report loop fail for good)
            reports = stream.reports = self._make_reports(stream.receiver, ssrc, stream.clock_rate)
        reports.add(seq, ts)
        stream.bytes += len(data)
        if stream.kind == "audio" or data[1] & 0x80:  # video: the marker bit, the last packet of a frame
            stream.frames += 1
        return True

    def lost(self) -> int:
        return sum(s.reports.packets_lost for s in self._streams.values() if s.reports is not None)

    async def run_remb(self, phase: float) -> None:
        """Every :data:`REMB_INTERVAL` (on a fixed schedule, starting ``phase`` of an interval late: subscribers do
        not all report at once), a REMB per video stream with the bitrate it received since the last one."""
        loop = asyncio.get_running_loop()
        sent = {ssrc: 0 for ssrc in self._streams}
        due = at = loop.time() + phase * self.REMB_INTERVAL
        while True:
            due += self.REMB_INTERVAL
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            elapsed, at = now - at, now
            for ssrc, stream in self._streams.items():
                if stream.kind != "video":
                    continue
                bitrate = 8 * (stream.bytes - sent[ssrc]) / elapsed if elapsed > 0 else 0
                sent[ssrc] = stream.bytes
                if bitrate and await self._send_remb(stream.receiver, int(bitrate), [ssrc]):
                    self.rembs_sent += 1


class _Arrivals:
    """A received track that notes when each frame arrives (the impaired subscriber's freezes)."""

    def __init__(self, track: Any, times: list[float] | None = None) -> None:
        self.track = track
        self.kind = getattr(track, "kind", "video")
        self.times: list[float] = [] if times is None else times

    async def recv(self) -> Any:
        frame = await self.track.recv()
        self.times.append(time.monotonic())
        return frame

    def freezes(self, t0: float, t1: float) -> dict[str, Any]:
        """Frames within [t0, t1]: per second, and the inter-frame gaps (the window's edges count as frames): the
        longest, and those longer than :data:`FROZEN_GAP` (how many, and their total)."""
        edges = [t0, *(t for t in self.times if t0 < t < t1), t1]
        gaps = [b - a for a, b in itertools.pairwise(edges)]
        frozen = [g for g in gaps if g > FROZEN_GAP]
        per_second = [sum(1 for t in self.times if t0 + i <= t < t0 + i + 1) for i in range(int(t1 - t0))]
        return {"fps": round((len(edges) - 2) / (t1 - t0), 1), "longest_gap_ms": round(1000 * max(gaps)),
                "frozen_intervals": len(frozen), "frozen_seconds": round(sum(frozen), 2),
                "frames_per_second": per_second}


class _LinkFrames:
    """Complete video frames as they arrive on the impaired subscriber's link (after SRTP, after the SFU's repairs,
    before aiortc's jitter buffer), per SSRC: what the SFU delivered, whatever the receiver makes of it. (aiortc's
    jitter buffer waits for a missing packet until 512 more arrived, never asking for a key frame: one loss that
    no repair reaches freezes its output for seconds at a low layer, where a browser would skip and ask.)"""

    def __init__(self) -> None:
        self.payload_types: set[int] = set()
        self.pending: dict[tuple[int, int], list[Any]] = {}
        self.times: dict[int, list[float]] = {}

    def tap(self, data: bytes, arrival_ms: int) -> bool:
        from server.sfu.rtp import parse, read_vp8

        packet = parse(data)
        if packet is None or packet.pt not in self.payload_types or not read_vp8(packet):
            return False
        now = time.monotonic()
        key = (packet.ssrc, packet.ts)
        entry = self.pending.setdefault(key, [set(), None, None, now])
        entry[0].add(packet.seq)
        if packet.start:
            entry[1] = packet.seq
        if packet.marker:
            entry[2] = packet.seq
        first, last = entry[1], entry[2]
        if first is not None and last is not None and len(entry[0]) == ((last - first) & 0xFFFF) + 1:
            del self.pending[key]
            self.times.setdefault(packet.ssrc, []).append(now)
        if len(self.pending) > 256:  # frames that never completed
            for stale in [k for k, e in self.pending.items() if now - e[3] > 5.0]:
                del self.pending[stale]
        return False  # aiortc's receiver gets every packet as before


FROZEN_GAP = 0.5
"""An inter-frame gap longer than this is a frozen picture (the base layer of 30 fps L1T3 is 7.5 fps: 133 ms)."""
LAYER_SAMPLE = 1.0
"""``--lossy``: seconds between two samples of every subscriber's layer."""

LOSSY_LOSS = 0.03
"""``--lossy``: random loss on the impaired subscriber's link..."""
LOSSY_RATE_BPS = 800_000
"""... and the rate its link carries (a policer with a 64 kB bucket): for 2 publishers, below what all layers cost
(2 x ~500 kbps of video, 2 x ~96 kbps of aiortc's Opus, ~80 kbps of headers: ~1.3 Mbps) and what layers 0-1
cost (~0.85 Mbps), above the base layers' ~0.66 Mbps: the link carries the base layer with room for repairs."""
LOSSY_BUCKET = 64_000


class _Policer:
    """A lossy, rate-limited link: random loss, then a token bucket that drops what exceeds the rate."""

    def __init__(self, loss: float, rate_bps: int, bucket: int) -> None:
        import random

        self.random = random.Random(16)
        self.loss = loss
        self.rate = rate_bps / 8
        self.bucket = bucket
        self.tokens = float(bucket)
        self.at = time.monotonic()
        self.dropped = 0
        self.passed = 0

    def keep(self, data: bytes) -> bool:
        now = time.monotonic()
        self.tokens = min(self.bucket, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if not 128 <= data[0] < 192:  # STUN and DTLS pass: the link is impaired for media only
            return True
        if self.random.random() < self.loss or self.tokens < len(data):
            self.dropped += 1
            return False
        self.tokens -= len(data)
        self.passed += 1
        return True


def _key(room: int, rooms: int, pid: str) -> str:
    """A client's name between the clients process and this one: its pid, prefixed by its room's number when the
    phase has several rooms (``3/p0``)."""
    return pid if rooms == 1 else f"{room}/{pid}"


def _room_of(key: str) -> tuple[str, str]:
    """(room id, pid) of a client's :func:`_key`: the room ``bench`` of a phase with one room, else ``bench3``."""
    room, _, pid = key.rpartition("/")
    return f"bench{room}", pid


def _clients_main(conn: Connection, publishers: int, subscribers: int, width: int, height: int,
                  lossy: bool = False, rooms: int = 1, replay: int = 0) -> None:
    asyncio.run(_clients(conn, publishers, subscribers, width, height, lossy, rooms, replay))


async def _clients(conn: Connection, publishers: int, subscribers: int, width: int, height: int,
                   lossy: bool = False, rooms: int = 1, replay: int = 0) -> None:
    """``rooms`` rooms of publishers and subscribers (``replay``: seconds of pre-encoded media the publishers loop,
    and light subscribers; 0: live encoders and aiortc's receivers)."""
    from aiortc import (
        RTCBundlePolicy,
        RTCConfiguration,
        RTCPeerConnection,
        RTCSessionDescription,
    )

    from peer.media import SyntheticAudioTrack, TrackSink
    from rtc import aiortc_hooks as hooks
    from rtc.codecs import prefer_vp8_opus_all

    hooks.allow_loopback_candidates()
    loop = asyncio.get_running_loop()
    pcs: dict[str, RTCPeerConnection] = {}
    answers: dict[str, asyncio.Future[str]] = {}
    mappings: dict[str, dict[str, dict[str, str]]] = {}
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def readable() -> None:
        try:
            while conn.poll():
                msg = conn.recv()
                if msg[0] == "answer":
                    answers[msg[1]].set_result(msg[2])
                elif msg[0] == "tracks":
                    mappings[msg[1]] = msg[2]
                else:
                    inbox.put_nowait(msg)
        except (EOFError, OSError):
            inbox.put_nowait(("stop",))

    loop.add_reader(conn.fileno(), readable)

    async def negotiate(pid: str, pc: RTCPeerConnection) -> None:
        prefer_vp8_opus_all(pc)
        await pc.setLocalDescription(await pc.createOffer())
        answers[pid] = loop.create_future()
        conn.send(("offer", pid, pc.localDescription.sdp))
        sdp = await asyncio.wait_for(answers[pid], 20)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    subscriber_keys: set[str] = set()
    replayed = _replay_media(width, height, replay) if replay else None
    replay_tracks: list[Any] = []
    for room in range(rooms):
        for i in range(publishers):
            pc = pcs[_key(room, rooms, f"p{i}")] = RTCPeerConnection(config)
            if replayed is not None:  # pre-encoded, each publisher at its own moment of the frame interval
                delay = (room * publishers + i) / (rooms * publishers) / 30
                replay_tracks.append(_replay_track("video", replayed[0], delay))
                pc.addTransceiver(replay_tracks[-1], direction="sendonly")
                pc.addTransceiver(_replay_track("audio", replayed[1], delay), direction="sendonly")
                continue
            video = pc.addTransceiver(_textured_video_track(width, height, (40 + 20 * i, 160, 220)),
                                      direction="sendonly")
            if lossy:  # three temporal layers, as browsers send in SFU rooms: a weak link can get a lower frame rate
                hooks.send_temporal_layers(video.sender)
            pc.addTransceiver(SyntheticAudioTrack(), direction="sendonly")
        for i in range(subscribers):
            key = _key(room, rooms, f"s{i}")
            subscriber_keys.add(key)
            pc = pcs[key] = RTCPeerConnection(config)
            for _ in range(publishers):
                pc.addTransceiver("video", direction="recvonly")
                pc.addTransceiver("audio", direction="recvonly")
    await asyncio.gather(*(negotiate(pid, pc) for pid, pc in pcs.items()))
    sinks: dict[str, dict[str, Any]] = {}
    arrivals: dict[str, _Arrivals] = {}
    lights: list[_LightSubscriber] = []
    background: list[asyncio.Task[None]] = []
    for pid, pc in pcs.items():
        if pid not in subscriber_keys:
            continue
        if replay:
            light = _LightSubscriber(pc, mappings.get(pid, {}))
            lights.append(light)
            background.append(asyncio.ensure_future(light.run_remb(len(lights) / (rooms * subscribers))))
            sinks[pid] = dict(light.counts)
            continue
        sinks[pid] = {}
        for t in pc.getTransceivers():
            entry = mappings.get(pid, {}).get(t.mid or "")
            if entry and entry["kind"] == "video" and t.receiver.track is not None:
                hooks.make_passthrough(t.receiver)
                track: Any = t.receiver.track
                if lossy and pid == "s0":
                    track = arrivals[entry["pid"]] = _Arrivals(track)
                sinks[pid][entry["pid"]] = TrackSink(track).start()
            elif t.receiver.track is not None:
                hooks.make_passthrough(t.receiver)
                TrackSink(t.receiver.track).start()  # drain audio
    deadline = time.monotonic() + 20
    while any(pc.connectionState != "connected" for pc in pcs.values()) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    policer = _Policer(LOSSY_LOSS, LOSSY_RATE_BPS, LOSSY_BUCKET) if lossy else None
    link_frames = _LinkFrames()
    link_ssrcs: dict[str, int] = {}
    if policer is not None:  # subscriber s0 sits behind the bad link
        from aiortc.sdp import SessionDescription

        s0 = pcs["s0"]
        hooks.impair_receive(s0.getTransceivers()[0].receiver.transport, policer.keep)
        for media in SessionDescription.parse(s0.remoteDescription.sdp).media:
            entry = mappings.get("s0", {}).get(media.rtp.muxId or "")
            if entry and entry["kind"] == "video" and media.ssrc:
                link_ssrcs[entry["pid"]] = media.ssrc[0].ssrc
                link_frames.payload_types |= {c.payloadType for c in media.rtp.codecs
                                              if c.mimeType.lower() == "video/vp8" and c.payloadType is not None}
        hooks.tap_rtp(s0.getTransceivers()[0].receiver.transport, link_frames.tap)
    conn.send(("connected", {pid: pc.connectionState for pid, pc in pcs.items()}))
    try:
        while True:
            msg = await inbox.get()
            if msg[0] == "measure":
                before = {s: {p: k.frames for p, k in d.items()} for s, d in sinks.items()}
                audio0 = [[a.frames for a in light.audio.values()] for light in lights]
                replay0 = [track.sent for track in replay_tracks]
                lost0, rembs0 = sum(x.lost() for x in lights), sum(x.rembs_sent for x in lights)
                t0 = time.monotonic()
                await asyncio.sleep(msg[1])
                t1 = time.monotonic()
                span = t1 - t0
                fps: dict[str, dict[str, Any]] = {s: {p: (k.frames - before[s][p]) / span for p, k in d.items()}
                                                  for s, d in sinks.items()}
                if lights:  # what the light subscribers got besides video frames, and what they sent back
                    audio = [(a.frames - n) / span for light, counts in zip(lights, audio0, strict=True)
                             for a, n in zip(light.audio.values(), counts, strict=True)]
                    sending = sum(1 for track, n in zip(replay_tracks, replay0, strict=True) if track.sent > n)
                    fps["light"] = {"subscribers": len(lights), "replayed_publishers": sending,
                                    "audio_streams": len(audio), "audio_pps_min": min(audio, default=0.0),
                                    "lost": sum(x.lost() for x in lights) - lost0,
                                    "rembs_per_second": (sum(x.rembs_sent for x in lights) - rembs0) / span}
                if policer is not None:
                    fps["link"] = {"dropped": policer.dropped, "passed": policer.passed}
                    fps["freezes"] = {p: a.freezes(t0, t1) for p, a in arrivals.items()}
                    fps["link_freezes"] = {p: _Arrivals(None, link_frames.times.get(ssrc, [])).freezes(t0, t1)
                                           for p, ssrc in link_ssrcs.items()}
                conn.send(("fps", fps))
            elif msg[0] == "stop":
                break
    finally:
        for task in background:
            task.cancel()
        for pc in pcs.values():
            with contextlib.suppress(Exception):
                await pc.close()


# ------------------------------------------------------------------------------------------------ signaling probe


class _SignalingProbe:
    """A WebSocket echo server and a client on this loop; RTT of a ping every 20 ms."""

    def __init__(self) -> None:
        self.rtts: list[float] = []
        self.recording = False
        self._task: asyncio.Task[None] | None = None
        self._runner: Any = None

    async def start(self) -> None:
        from aiohttp import WSMsgType, web

        async def echo(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
            return ws

        app = web.Application()
        app.router.add_get("/ws", echo)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._task = asyncio.ensure_future(self._ping(f"http://127.0.0.1:{port}/ws"))

    async def _ping(self, url: str) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            while True:
                t0 = time.perf_counter()
                await ws.send_str("ping")
                await ws.receive()
                if self.recording:
                    self.rtts.append(time.perf_counter() - t0)
                await asyncio.sleep(PING_INTERVAL)

    def take(self) -> dict[str, float]:
        rtts, self.rtts = self.rtts, []
        if not rtts:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "samples": 0}
        rtts.sort()
        return {
            "p50_ms": round(1000 * rtts[len(rtts) // 2], 2),
            "p99_ms": round(1000 * rtts[min(len(rtts) - 1, int(0.99 * len(rtts)))], 2),
            "max_ms": round(1000 * rtts[-1], 2),
            "samples": len(rtts),
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._runner is not None:
            await self._runner.cleanup()


# ------------------------------------------------------------------------------------------------ floor

FLOOR_AUDIO_BYTES = 100
"""An Opus packet at ~32 kbps with its RTP header, extensions and SRTP tag."""


def _floor_relay(conn: Connection, publishers: int) -> None:
    """The floor: a relay that does nothing but move the datagrams, on the SFU worker's own event loop
    (:func:`server.sfu.worker.run_loop`), one socket per connection as the worker has: every datagram that
    arrives on a publisher's socket is sent on, unchanged, from each subscriber's socket of its room to that
    subscriber."""
    from server.sfu.worker import event_loop_name, run_loop

    async def main() -> None:
        loop = asyncio.get_running_loop()

        class Relay(asyncio.DatagramProtocol):
            def __init__(self, outs: list[tuple[Any, Any]]) -> None:
                self.outs = outs

            def datagram_received(self, data: bytes, addr: Any) -> None:
                for transport, to in self.outs:
                    transport.sendto(data, to)

        ports = []
        for room in conn.recv():  # each room's subscribers' addresses
            outs: list[tuple[Any, Any]] = []
            for addr in room:
                transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                   local_addr=("127.0.0.1", 0))
                outs.append((transport, tuple(addr)))
            for _ in range(publishers):
                transport, _ = await loop.create_datagram_endpoint(functools.partial(Relay, outs),
                                                                   local_addr=("127.0.0.1", 0))
                ports.append(transport.get_extra_info("sockname"))
        stop: asyncio.Future[None] = loop.create_future()

        def told() -> None:
            if not stop.done():
                stop.set_result(None)

        loop.add_reader(conn.fileno(), told)
        conn.send((ports, event_loop_name()))
        await stop

    run_loop(main())


def _floor_traffic(conn: Connection, publishers: int, subscribers: int, video_pps: float, video_bytes: int,
                   rooms: int = 1) -> None:
    """The floor's publishers and subscribers (``rooms`` rooms of them), in one process as the bench's clients
    are: each publisher sends audio every 20 ms and ``video_pps`` video datagrams of ``video_bytes`` a second in 30
    frames; the subscribers count what reaches them."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        received = [0]

        class Sink(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                received[0] += 1

        sinks: list[list[Any]] = []
        for _ in range(rooms):
            sinks.append([])
            for _ in range(subscribers):
                transport, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
                sinks[-1].append(transport.get_extra_info("sockname"))
        conn.send(sinks)
        ports = await loop.run_in_executor(None, conn.recv)

        async def every(period: float, phase: float, send: Any) -> None:
            due = loop.time() + phase
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                send()
                due += period

        audio, video = b"\x80" * FLOOR_AUDIO_BYTES, b"\x80" * video_bytes
        tasks = []
        for i, port in enumerate(ports):
            transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=tuple(port))
            phase = i / len(ports)
            owed = [0.0]  # video datagrams per frame are video_pps / 30: the fraction is carried to the next frame

            def frame(t: Any = transport, owed: list[float] = owed) -> None:
                owed[0] += video_pps / 30
                while owed[0] >= 1:
                    owed[0] -= 1
                    t.sendto(video)

            tasks.append(asyncio.ensure_future(every(0.02, 0.02 * phase, lambda t=transport: t.sendto(audio))))
            tasks.append(asyncio.ensure_future(every(1 / 30, phase / 30, frame)))
        while True:
            message = await loop.run_in_executor(None, conn.recv)
            if message == "count":
                conn.send(received[0])
            else:
                break
        for task in tasks:
            task.cancel()

    asyncio.run(main())


def _us_per_packet(cpu_percent: float, packets_per_second: float) -> float | None:
    """CPU microseconds per packet sent, from a share of a core (%) and a packet rate."""
    return round(10_000 * cpu_percent / packets_per_second, 2) if packets_per_second else None


async def _floor(*, publishers: int, subscribers: int, seconds: float, windows: int, video_pps: float,
                 video_bytes: int, rooms: int = 1) -> dict[str, Any]:
    """CPU of the floor relay (:func:`_floor_relay`) moving the forward phase's datagrams, per packet sent."""
    ctx = multiprocessing.get_context("spawn")
    relay_end, relay_conn = ctx.Pipe()
    traffic_end, traffic_conn = ctx.Pipe()
    relay = ctx.Process(target=_floor_relay, args=(relay_conn, publishers), daemon=True)
    traffic = ctx.Process(target=_floor_traffic, args=(traffic_conn, publishers, subscribers, video_pps,
                                                       video_bytes, rooms), daemon=True)
    loop = asyncio.get_running_loop()

    async def recv(end: Connection) -> Any:
        if not await loop.run_in_executor(None, end.poll, 30):  # a child that died: end of file, at once
            raise RuntimeError("the floor's relay or traffic process did not answer")
        return end.recv()

    try:
        relay.start()
        traffic.start()
        relay_conn.close()  # the children's ends: theirs alone, so that a child's death reads as end of file here
        traffic_conn.close()
        relay_end.send(await recv(traffic_end))
        ports, event_loop = await recv(relay_end)
        traffic_end.send(ports)
        await asyncio.sleep(WARMUP)
        cpus: list[float] = []
        rates: list[float] = []
        for _ in range(windows):
            traffic_end.send("count")
            n0 = await recv(traffic_end)
            cpu0, t0 = _proc_cpu_seconds(relay.pid or 0), time.monotonic()
            await asyncio.sleep(seconds / windows)
            traffic_end.send("count")
            n1 = await recv(traffic_end)
            took = time.monotonic() - t0
            cpus.append(100 * (_proc_cpu_seconds(relay.pid or 0) - cpu0) / took)
            rates.append((n1 - n0) / took)
    finally:
        for end in (traffic_end, relay_end):
            with contextlib.suppress(BrokenPipeError, OSError):
                end.send("stop")
        for process in (traffic, relay):
            if process.pid is None:
                continue
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        for end in (traffic_end, relay_end, traffic_conn, relay_conn):
            end.close()
    cpu = statistics.median(cpus)
    pps = statistics.median(rates)
    streams = rooms * publishers * subscribers
    return {
        "cpu_percent": round(cpu, 2),
        "cpu_per_stream_percent": round(cpu / streams, 3),
        "cpu_percent_windows": [round(c, 2) for c in cpus],
        "packets_out_per_second": round(pps),
        "cpu_us_per_packet_out": _us_per_packet(cpu, pps),
        "streams_per_core_estimate": int(100 * streams / cpu) if cpu > 0 else None,
        "event_loop": event_loop,
    }


async def _floor_of(phase: dict[str, Any], *, publishers: int, subscribers: int, seconds: float, windows: int,
                    rooms: int = 1) -> dict[str, Any]:
    """The floor moving what a forward phase moved (per publisher, its audio and its video datagrams, at the rate
    and size its subscribers got them), or ``{"error": …}`` if it could not run: the phase's figures stand without
    it."""
    in_pps = phase["packets_out_per_second"] / phase["streams"]
    video_pps = max(30.0, in_pps - 50)
    video_bytes = max(200, min(1200, round(phase["video_kbps_per_stream"] * 125 / video_pps)))
    try:
        return await _floor(publishers=publishers, subscribers=subscribers, seconds=seconds, windows=windows,
                            video_pps=video_pps, video_bytes=video_bytes, rooms=rooms)
    except (RuntimeError, OSError, EOFError) as exc:
        return {"error": str(exc), "cpu_us_per_packet_out": None, "cpu_percent": None,
                "streams_per_core_estimate": None}


# ------------------------------------------------------------------------------------------------ phases


def _proc_cpu_seconds(pid: int) -> float:
    """CPU seconds process ``pid`` has used: the scheduler's nanosecond count summed over its threads
    (``/proc/PID/task/*/schedstat``); where the kernel does not keep it, utime + stime from ``/proc/PID/stat``
    (clock ticks: 10 ms steps, about 0.3 % of a core over a 3 s window)."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that just ended
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
        if total:
            return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


PHASES = ("forward", "pack", "transcode")
LOAD_STREAMS = 96
"""The loaded phase forwards about this many streams: as many rooms of the run's size as that takes."""
MAX_LOAD_STREAMS = 400
MAX_LOAD_ROOMS = 24
"""The loaded phase's rooms: their peer connections all live in one clients process..."""
MAX_LOAD_CONNECTIONS = 200
"""... as do at most this many peer connections."""
WINDOWS = 3
"""Measurement windows per phase (the median CPU is reported, every window's in ``cpu_percent_windows``)."""


async def _phase(*, mode: str, lossy: bool = False, publishers: int, subscribers: int, seconds: float, width: int,
                 height: int, probe: _SignalingProbe, windows: int = 1, rooms: int = 1,
                 replay: int = 0) -> dict[str, Any]:
    """One phase: ``rooms`` rooms of ``publishers`` x ``subscribers`` on one SFU worker, measured over ``windows``
    windows (``replay``: publishers loop that many seconds of pre-encoded media, :func:`_replay_media`, and the
    subscribers are light; 0: live encoders and aiortc's receivers)."""
    from server.sfu import SfuManager
    from signaling import messages as m
    from signaling.effects import MediaMembers, MediaSignal

    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    room_ids = [_room_of(_key(k, rooms, ""))[0] for k in range(rooms)]
    room_index = {room_id: k for k, room_id in enumerate(room_ids)}

    def send(room_id: str, pid: str, message: Any) -> None:
        key = _key(room_index[room_id], rooms, pid)
        with contextlib.suppress(BrokenPipeError, OSError):
            if isinstance(message, m.PeerAnswer):
                parent.send(("answer", key, message.sdp))
            elif isinstance(message, m.Tracks):
                parent.send(("tracks", key, {k: {"pid": v.pid, "kind": v.kind} for k, v in message.mids.items()}))

    manager = SfuManager(send, workers=1, loopback=True, transcode=mode == "transcode", pack=mode == "pack")
    await manager.start()
    pids = [f"p{i}" for i in range(publishers)] + [f"s{i}" for i in range(subscribers)]
    for room in room_ids:
        manager.handle(MediaMembers(room, frozenset(pids)))  # type: ignore[arg-type]
    events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def readable() -> None:
        try:
            while parent.poll():
                msg = parent.recv()
                if msg[0] == "offer":
                    room, pid = _room_of(msg[1])
                    manager.handle(MediaSignal(room, pid, m.Offer(to=m.SFU_PID, sdp=msg[2])))  # type: ignore[arg-type]
                else:
                    events.put_nowait(msg)
        except (EOFError, OSError):
            loop.remove_reader(parent.fileno())

    loop.add_reader(parent.fileno(), readable)
    clients = ctx.Process(target=_clients_main, args=(child, publishers, subscribers, width, height, lossy, rooms,
                                                      replay), daemon=True)
    clients.start()
    child.close()
    try:
        _, states = await asyncio.wait_for(events.get(), 60)
        if any(s != "connected" for s in states.values()):
            raise RuntimeError(f"not every bench peer connected: {states}")
        # replayed publishers send their key frame once per stretch: every subscriber has had one after this
        await asyncio.sleep(WARMUP + replay)
        worker_pid = manager.worker_of(room_ids[0])
        if worker_pid is None or any(manager.worker_of(room) != worker_pid for room in room_ids):
            raise RuntimeError("the bench's rooms are not all on one SFU worker")
        before = stats = await manager.stats()
        probe.take()
        probe.recording = True
        # ``windows`` measurements of seconds/windows each, the median taken: a burst of other work on the machine
        # spoils one window, not the figure
        span = seconds / windows
        cpus: list[float] = []
        clients_cpus: list[float] = []
        lights: list[dict[str, Any]] = []
        video_streams: list[int] = []
        rates: list[float] = []
        values: list[float] = []
        wall = 0.0
        timeline: list[dict[str, list[int | None]]] = []
        for _ in range(windows):
            start = stats
            cpu0, t0 = _proc_cpu_seconds(worker_pid), time.monotonic()
            clients_cpu0 = _proc_cpu_seconds(clients.pid or 0)
            parent.send(("measure", span))
            sampler = asyncio.ensure_future(_sample_layers(manager, timeline)) if lossy else None
            try:
                _, fps = await asyncio.wait_for(events.get(), span + 30)
            finally:
                if sampler is not None:
                    sampler.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sampler
            link = fps.pop("link", None)
            light = fps.pop("light", None)
            if light is not None:
                lights.append(light)
            freezes = fps.pop("freezes", {})
            link_freezes = fps.pop("link_freezes", {})
            video_streams.append(sum(len(per_sub) for per_sub in fps.values()))  # (subscriber, publisher) pairs
            took = time.monotonic() - t0
            cpus.append(100 * (_proc_cpu_seconds(worker_pid) - cpu0) / took)
            clients_cpus.append(100 * (_proc_cpu_seconds(clients.pid or 0) - clients_cpu0) / took)
            stats = await manager.stats()
            rates.append((_rtp_packets_out(stats) - _rtp_packets_out(start)) / took)
            values.extend(v for per_sub in fps.values() for v in per_sub.values())
            wall += took
        probe.recording = False
        latency = probe.take()
        cpu = statistics.median(cpus)
        decoded = sum(s.get("decoded_frames", 0) for s in stats.values())
        values.sort()
        streams = rooms * publishers * subscribers
        out_pps = statistics.median(rates)
        per_core = [r / (c / 100) for r, c in zip(rates, cpus, strict=True) if c > 0]
        video_bytes = _slot_sum(stats, "sent_bytes", "video") - _slot_sum(before, "sent_bytes", "video")
        result = {
            "cpu_percent": round(cpu, 2),
            "cpu_per_stream_percent": round(cpu / streams, 3) if streams else 0.0,
            "cpu_percent_windows": [round(c, 2) for c in cpus],
            "fps_min": round(values[0], 1) if values else 0.0,
            "fps_median": round(statistics.median(values), 1) if values else 0.0,
            "decoded_frames": decoded,
            "streams": streams,
            "signaling": latency,
            "clients_cpu_percent": round(statistics.median(clients_cpus), 1),
            "video_streams_counted": min(video_streams, default=0),
        }
        if lights:  # the light subscribers (replay): what they got besides video frames, and what they sent back
            result["light"] = {
                "subscribers": lights[0]["subscribers"],
                "replayed_publishers": lights[0]["replayed_publishers"],
                "audio_streams": min(x["audio_streams"] for x in lights),
                "audio_pps_min": round(min(x["audio_pps_min"] for x in lights), 1),
                "lost": sum(x["lost"] for x in lights),
                "rembs_per_second": round(statistics.median(x["rembs_per_second"] for x in lights), 1),
            }
        if lossy:
            result["lossy"] = _lossy_figures(before, stats, fps, link, wall, publishers, freezes, timeline,
                                             link_freezes)
        if mode == "forward":  # RTP packets out are counted by the RTP-level path only
            result["packets_out_per_second"] = round(out_pps)
            result["packets_per_second_per_core"] = round(statistics.median(per_core)) if per_core else None
            result["retransmitted"] = _slot_sum(stats, "retransmitted")
            result["pauses"] = _slot_sum(stats, "pauses") - _slot_sum(before, "pauses")
            rembs = [int(x["remb"]) for x in _slots(stats) if x["kind"] == "video" and x.get("remb")]
            result["subscriber_remb_kbps_median"] = round(statistics.median(rembs) / 1000) if rembs else None
            result["video_kbps_per_stream"] = round(8 * video_bytes / wall / 1000 / streams) if streams else 0
            # the subscribers' feedback as it reached the SFU: per stream and second
            result["feedback"] = {
                "receiver_reports_per_stream_per_second": round(
                    (_slot_sum(stats, "receiver_reports") - _slot_sum(before, "receiver_reports"))
                    / wall / (2 * streams), 2) if streams else 0.0,
                "rembs_per_video_stream_per_second": round(
                    (_slot_sum(stats, "remb_reports", "video") - _slot_sum(before, "remb_reports", "video"))
                    / wall / streams, 2) if streams else 0.0,
            }
        return result
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            parent.send(("stop",))
        await loop.run_in_executor(None, clients.join, 10)
        if clients.is_alive():
            clients.terminate()
            await loop.run_in_executor(None, clients.join, 5)
        with contextlib.suppress(Exception):
            loop.remove_reader(parent.fileno())
        parent.close()
        for room in room_ids:
            manager.handle(MediaMembers(room, frozenset()))  # type: ignore[arg-type]
        await manager.stop()


def _slots(stats: dict[int, Any]) -> list[dict[str, Any]]:
    return [slot for worker in stats.values() for room in worker.get("rooms", {}).values()
            for peer in room["peers"].values() for slot in peer["slots"].values()]


def _slot_sum(stats: dict[int, Any], key: str, kind: str | None = None) -> int:
    return sum(int(slot.get(key, 0)) for slot in _slots(stats) if kind in (None, slot["kind"]))


def _rtp_packets_out(stats: dict[int, Any]) -> int:
    return _slot_sum(stats, "forwarded") + _slot_sum(stats, "retransmitted")


def _peers(stats: dict[int, Any]) -> dict[str, Any]:
    return {pid: peer for worker in stats.values() for room in worker.get("rooms", {}).values()
            for pid, peer in room["peers"].items()}


def _video_layers(stats: dict[int, Any]) -> dict[str, list[int | None]]:
    """Each subscriber's video slots' current layers (-1: paused), in mid order."""
    layers: dict[str, list[Any]] = {
        pid: [slot.get("layer") if slot.get("max_layer") != -1 else -1
              for _, slot in sorted(peer.get("slots", {}).items()) if slot["kind"] == "video"]
        for pid, peer in _peers(stats).items() if pid.startswith("s")}
    return layers


async def _sample_layers(manager: Any, timeline: list[dict[str, list[int | None]]]) -> None:
    while True:
        await asyncio.sleep(LAYER_SAMPLE)
        timeline.append(_video_layers(await manager.stats()))


def _lossy_figures(before: dict[int, Any], after: dict[int, Any], fps: dict[str, dict[str, float]],
                   link: dict[str, int] | None, wall: float, publishers: int,
                   freezes: dict[str, dict[str, float]] | None = None,
                   timeline: list[dict[str, list[int | None]]] | None = None,
                   link_freezes: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the impaired subscriber s0 got, against the others, and what it cost the publishers."""
    peers = _peers

    def keyframes(stats: dict[int, Any]) -> int:
        return sum(p["published"].get("video", {}).get("keyframes_in", 0) for p in peers(stats).values())

    s0 = [slot for _, slot in sorted(peers(after).get("s0", {}).get("slots", {}).items()) if slot["kind"] == "video"]
    others = [v for sub, per in fps.items() if sub != "s0" for v in per.values()]
    impaired = list(fps.get("s0", {}).values())
    timeline = timeline or []
    others_layers = [layer for sample in timeline for sub, layers in sample.items() if sub != "s0" for layer in layers]
    return {
        "link": {"loss": LOSSY_LOSS, "rate_bps": LOSSY_RATE_BPS, **(link or {})},
        "impaired_fps": [round(v, 1) for v in impaired],
        "impaired_freezes": list((freezes or {}).values()),
        "impaired_link_frames": list((link_freezes or {}).values()),
        "others_fps_median": round(statistics.median(others), 1) if others else 0.0,
        "impaired_layers": [{"layer": x.get("layer"), "max_layer": x.get("max_layer"),
                             "switches": x.get("layer_switches"), "pauses": x.get("pauses"), "loss": x.get("loss"),
                             "retransmitted": x.get("retransmitted"), "nack_missed": x.get("nack_missed")}
                            for x in s0],
        "impaired_layer_timeline": [sample.get("s0", []) for sample in timeline],
        "others_on_top_layer": (round(sum(1 for layer in others_layers if layer == 2) / len(others_layers), 2)
                                if others_layers else None),
        "publisher_keyframes_per_second": round((keyframes(after) - keyframes(before)) / wall / publishers, 2),
    }


def _loopback_only() -> bool:
    import ifaddr

    return {a.nice_name for a in ifaddr.get_adapters()} == {"lo"}


class BenchRefused(ValueError):
    """``alcove bench sfu`` cannot run as asked (a size out of range, not in a loopback-only namespace): said, not
    a traceback."""


def check_request(*, publishers: int, subscribers: int, seconds: float, windows: int = WINDOWS,
                  load_streams: int = LOAD_STREAMS, require_loopback: bool = True) -> None:
    """Raise :class:`BenchRefused` if the benchmark cannot run as asked; nothing else happens."""
    if not 1 <= publishers <= MAX_PUBLISHERS or not 1 <= subscribers <= MAX_SUBSCRIBERS:
        raise BenchRefused(f"publishers 1..{MAX_PUBLISHERS}, subscribers 1..{MAX_SUBSCRIBERS}")
    if not 1 <= seconds <= MAX_SECONDS:
        raise BenchRefused(f"seconds 1..{MAX_SECONDS:g}")
    if not 1 <= windows <= 10:
        raise BenchRefused("windows 1..10")
    if not 0 <= load_streams <= MAX_LOAD_STREAMS:
        raise BenchRefused(f"load streams 0..{MAX_LOAD_STREAMS}")
    if require_loopback and not _loopback_only():
        raise BenchRefused("run the SFU benchmark in a loopback-only namespace: "
                           "unshare -n sh -c 'ip link set lo up && alcove bench sfu …'")


async def bench_sfu(*, publishers: int, subscribers: int, seconds: float, width: int = 640, height: int = 480,
                    require_loopback: bool = True, lossy: bool = False, windows: int = WINDOWS,
                    load_streams: int = LOAD_STREAMS) -> dict[str, Any]:
    """Run the three phases (forward, then the ``pack()`` and transcoding baselines), the floor, and the loaded
    phase (``load_streams``; 0: not run); the figures (module doc).

    Each phase measures ``windows`` windows of ``seconds / windows`` and reports the median CPU."""
    check_request(publishers=publishers, subscribers=subscribers, seconds=seconds, windows=windows,
                  load_streams=load_streams, require_loopback=require_loopback)
    from rtc import aiortc_hooks as hooks

    hooks.allow_loopback_candidates()
    probe = _SignalingProbe()
    await probe.start()
    if lossy:  # the forwarding path only, one subscriber behind a bad link
        try:
            result = await _phase(mode="forward", lossy=True, publishers=publishers, subscribers=subscribers,
                                  seconds=seconds, width=width, height=height, probe=probe)
        finally:
            await probe.stop()
        return {"publishers": publishers, "subscribers": subscribers, "seconds": seconds,
                "resolution": f"{width}x{height}", "forward": result, "lossy": result.pop("lossy")}
    try:
        kw = {"publishers": publishers, "subscribers": subscribers, "seconds": seconds, "width": width,
              "height": height, "probe": probe, "windows": windows}
        phases = {mode: await _phase(mode=mode, **kw) for mode in PHASES}  # type: ignore[arg-type]
        await asyncio.sleep(1.0)  # the same probe with no media at all, for comparison
        probe.take()
        probe.recording = True
        await asyncio.sleep(min(3.0, seconds))
        probe.recording = False
        idle = probe.take()
    finally:
        await probe.stop()
    forward, pack, transcode = phases["forward"], phases["pack"], phases["transcode"]
    floor = await _floor_of(forward, publishers=publishers, subscribers=subscribers, seconds=seconds,
                            windows=windows)
    forward["cpu_us_per_packet_out"] = _us_per_packet(forward["cpu_percent"], forward["packets_out_per_second"])
    loaded: dict[str, Any] | None = None
    if load_streams:
        try:
            loaded = await _loaded(publishers=publishers, subscribers=subscribers, seconds=seconds, width=width,
                                   height=height, windows=windows, streams=load_streams)
        except Exception as exc:  # whatever stopped it, the figures measured before it stand
            loaded = {"error": f"{type(exc).__name__}: {exc}", "streams_per_core": None}

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
        return round(a["cpu_percent"] / b["cpu_percent"], 3) if b["cpu_percent"] else 0.0

    def per_frame(a: dict[str, Any], b: dict[str, Any]) -> float:
        # CPU per delivered frame: fair when the baseline saturates and delivers fewer frames
        a_cost = a["cpu_percent"] / a["fps_median"] if a["fps_median"] else 0.0
        b_cost = b["cpu_percent"] / b["fps_median"] if b["fps_median"] else 0.0
        return round(a_cost / b_cost, 3) if b_cost else 0.0

    per_stream = forward["cpu_per_stream_percent"]
    pack_per_stream = pack["cpu_per_stream_percent"]
    return {
        "publishers": publishers,
        "subscribers": subscribers,
        "seconds": seconds,
        "resolution": f"{width}x{height}",
        "forward": forward,
        "pack": pack,
        "transcode": transcode,
        "floor": floor,
        "ratio": ratio(forward, transcode),
        "ratio_per_delivered_frame": per_frame(forward, transcode),
        "ratios": {
            "forward_to_transcode": ratio(forward, transcode),
            "forward_to_pack": ratio(forward, pack),
            "pack_to_transcode": ratio(pack, transcode),
            "forward_to_transcode_per_delivered_frame": per_frame(forward, transcode),
            "forward_to_pack_per_delivered_frame": per_frame(forward, pack),
            "forward_to_floor_per_packet": round(forward["cpu_us_per_packet_out"] / floor["cpu_us_per_packet_out"], 2)
            if forward.get("cpu_us_per_packet_out") and floor.get("cpu_us_per_packet_out") else None,
        },
        "packets_per_second_per_core": forward.get("packets_per_second_per_core"),
        "signaling_p99_ms": forward["signaling"]["p99_ms"],
        "signaling_idle_p99_ms": idle["p99_ms"],
        "streams_per_core_estimate": int(100 / per_stream) if per_stream > 0 else None,
        "pack_streams_per_core_estimate": int(100 / pack_per_stream) if pack_per_stream > 0 else None,
        "loaded": loaded,
        "loaded_streams_per_core": loaded.get("streams_per_core") if loaded else None,
        "cpu_count": os.cpu_count(),
    }


def _load_rooms(streams: int, publishers: int, subscribers: int) -> int:
    """Rooms of ``publishers`` x ``subscribers`` that make at least ``streams`` streams: at least one; at most
    :data:`MAX_LOAD_ROOMS`, and at most :data:`MAX_LOAD_CONNECTIONS` peer connections in all (small rooms, or
    large ones, make fewer streams)."""
    return max(1, min(MAX_LOAD_ROOMS, MAX_LOAD_CONNECTIONS // (publishers + subscribers),
                      -(-streams // (publishers * subscribers))))


COMPLETE_FPS = 27.0
"""The loaded phase counts only if every stream's video kept at least this frame rate (of 30)..."""
COMPLETE_AUDIO_PPS = 45.0
"""... and its audio at least this many packets a second (of 50)..."""
COMPLETE_LOSS = 0.005
"""... and the subscribers lost at most this share of the packets sent: a clients process that falls behind
(its sockets overflow) would make the SFU's work look cheaper than it is..."""
COMPLETE_FEEDBACK = (0.5, 1.5)
"""... and the SFU got at least this many receiver-report blocks per stream and REMBs per video stream a second
(aiortc's receivers send about 1 and 2): the feedback it handles in a real session."""


async def _loaded(*, publishers: int, subscribers: int, seconds: float, width: int, height: int, windows: int,
                  streams: int) -> dict[str, Any]:
    """The forwarding path with a busier worker: as many rooms of ``publishers`` x ``subscribers`` as make about
    ``streams`` streams, all on one worker, their publishers sending pre-encoded media (:func:`_replay_media`) and
    their subscribers light (:class:`_LightSubscriber`), so that one clients process can drive them; then the floor
    moving the same datagrams for the same rooms. ``streams_per_core`` is streams over the share of a core the
    worker used at that load (wake-ups and warm caches are shared by more packets than in one small room, as on a
    server carrying many sessions). It is given only when every stream was delivered and its feedback reached the
    SFU (``complete``; ``incomplete`` says what was not, and the figures per stream are withheld): a stream that
    carries nothing costs the worker nothing. Each window lasts a whole number of replayed stretches (each holds
    one key frame per publisher)."""
    replay = REPLAY_SECONDS
    rooms = _load_rooms(streams, publishers, subscribers)
    span = replay * max(1, math.ceil(seconds / windows / replay - 0.25))
    probe = _SignalingProbe()
    await probe.start()
    try:
        result = await _phase(mode="forward", publishers=publishers, subscribers=subscribers, seconds=span * windows,
                              width=width, height=height, probe=probe, windows=windows, rooms=rooms, replay=replay)
    finally:
        await probe.stop()
    count = result["streams"]
    light = result.get("light", {})
    feedback = result.get("feedback", {})
    pps = result["packets_out_per_second"]
    incomplete = []
    if result["video_streams_counted"] != count or light.get("audio_streams") != count:
        incomplete.append(f"{result['video_streams_counted']} video and {light.get('audio_streams')} audio streams "
                          f"counted of {count}")
    if light.get("replayed_publishers") != rooms * publishers:
        incomplete.append(f"{light.get('replayed_publishers')} of {rooms * publishers} publishers sending")
    if result["fps_min"] < COMPLETE_FPS:
        incomplete.append(f"a video stream at {result['fps_min']} fps")
    if light.get("audio_pps_min", 0.0) < COMPLETE_AUDIO_PPS:
        incomplete.append(f"an audio stream at {light.get('audio_pps_min')} packets/s")
    if light.get("lost", 0) > COMPLETE_LOSS * pps * span * windows:
        incomplete.append(f"{light.get('lost')} packets lost")
    rr, remb = feedback.get("receiver_reports_per_stream_per_second", 0.0), \
        feedback.get("rembs_per_video_stream_per_second", 0.0)
    if rr < COMPLETE_FEEDBACK[0] or remb < COMPLETE_FEEDBACK[1]:
        incomplete.append(f"feedback reaching the SFU: {rr} receiver reports, {remb} REMBs per stream and second")
    floor = await _floor_of(result, publishers=publishers, subscribers=subscribers, seconds=span * windows,
                            windows=windows, rooms=rooms)
    us = _us_per_packet(result["cpu_percent"], pps)
    whole = not incomplete
    return {
        "rooms": rooms,
        "streams": count,
        "seconds": span * windows,
        "complete": whole,
        "incomplete": incomplete,
        "cpu_percent": result["cpu_percent"],
        "cpu_percent_windows": result["cpu_percent_windows"],
        "cpu_per_stream_percent": result["cpu_per_stream_percent"] if whole else None,
        "streams_per_core": int(100 * count / result["cpu_percent"]) if result["cpu_percent"] > 0 and whole else None,
        "packets_out_per_second": pps,
        "packets_per_second_per_core": result["packets_per_second_per_core"],
        "cpu_us_per_packet_out": us,
        "fps_min": result["fps_min"],
        "fps_median": result["fps_median"],
        "video_kbps_per_stream": result["video_kbps_per_stream"],
        "retransmitted": result["retransmitted"],
        "pauses": result["pauses"],
        "subscriber_remb_kbps_median": result["subscriber_remb_kbps_median"],
        "feedback": feedback,
        "decoded_frames": result["decoded_frames"],
        "clients_cpu_percent": result["clients_cpu_percent"],
        "clients": light,
        "signaling": result["signaling"],
        "floor": floor,
        "forward_to_floor_per_packet": round(us / floor["cpu_us_per_packet_out"], 2)
        if us and floor.get("cpu_us_per_packet_out") else None,
    }


def main(argv: list[str] | None = None) -> int:
    """``alcove bench sfu --publishers P --subscribers S --seconds T [--json]``."""
    parser = argparse.ArgumentParser(prog="alcove bench sfu", description=__doc__.splitlines()[0])
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--lossy", action="store_true",
                        help="subscriber s0 behind a lossy, rate-limited link (forwarding path only)")
    parser.add_argument("--windows", type=int, default=WINDOWS,
                        help="measurement windows per phase (the median CPU is reported)")
    parser.add_argument("--load-streams", type=int, default=LOAD_STREAMS,
                        help="the loaded phase: as many rooms of this size as make about this many streams (0: skip)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(bench_sfu(publishers=args.publishers, subscribers=args.subscribers,
                                       seconds=args.seconds, width=args.width, height=args.height,
                                       lossy=args.lossy, windows=args.windows, load_streams=args.load_streams))
    except BenchRefused as exc:
        print(f"alcove bench sfu: {exc}", file=sys.stderr)
        return 2
    if args.json or args.lossy:
        print(json.dumps(result, indent=2))
    else:
        f, p, t = result["forward"], result["pack"], result["transcode"]
        print(f"{args.publishers} publishers x {args.subscribers} subscribers, {args.seconds:g} s, {result['resolution']}")
        print(f"forward:   CPU {f['cpu_percent']}% ({f['cpu_per_stream_percent']}%/stream), "
              f"fps min {f['fps_min']} median {f['fps_median']}, decoded {f['decoded_frames']}")
        print(f"pack():    CPU {p['cpu_percent']}% ({p['cpu_per_stream_percent']}%/stream), "
              f"fps min {p['fps_min']} median {p['fps_median']}, decoded {p['decoded_frames']}")
        print(f"transcode: CPU {t['cpu_percent']}% ({t['cpu_per_stream_percent']}%/stream), "
              f"fps min {t['fps_min']} median {t['fps_median']}, decoded {t['decoded_frames']}")
        print(f"forward/transcode {result['ratio']}, forward/pack() {result['ratios']['forward_to_pack']}; "
              f"{result['packets_per_second_per_core']} packets/s per core; signaling p99 {result['signaling_p99_ms']} ms "
              f"(idle {result['signaling_idle_p99_ms']} ms); ~{result['streams_per_core_estimate']} streams/core")
        fl = result["floor"]
        print(f"floor:     CPU {fl['cpu_percent']}% for the same datagrams on the same loop doing nothing else "
              f"(~{fl['streams_per_core_estimate']} streams/core); forward/floor per packet "
              f"{result['ratios']['forward_to_floor_per_packet']}")
        ld = result["loaded"]
        if ld and "error" in ld:
            print(f"loaded:    not measured: {ld['error']}")
        elif ld and not ld["complete"]:
            print(f"loaded:    {ld['rooms']} rooms, {ld['streams']} streams: CPU {ld['cpu_percent']}%, not every "
                  f"stream delivered ({'; '.join(ld['incomplete'])}): no figure per stream")
        elif ld:
            print(f"loaded:    {ld['rooms']} rooms, {ld['streams']} streams: CPU {ld['cpu_percent']}%, "
                  f"{ld['streams_per_core']} streams/core, {ld['cpu_us_per_packet_out']} µs per packet sent, "
                  f"fps min {ld['fps_min']}; floor {ld['floor']['cpu_us_per_packet_out']} µs, forward/floor "
                  f"{ld['forward_to_floor_per_packet']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
