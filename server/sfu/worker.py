"""The SFU worker process: forwards RTP packets between the admitted members of its rooms.

One process runs many rooms on its own asyncio loop. Per participant there is one ``RTCPeerConnection``
whose offer comes from the client (the client always offers, the SFU always answers):

* the client's ``sendonly``/``sendrecv`` audio and video m-lines (the first of each kind) are its *publish*
  streams (:class:`RtpStream`): every packet its connection receives is taken once after SRTP unprotect
  (:func:`rtc.aiortc_hooks.tap_rtp`), parsed, kept in a retransmission buffer and handed to each subscriber's
  :class:`server.sfu.rtp.Forwarder`; aiortc's receivers never see a packet, nothing is ever decoded;
* its ``recvonly`` m-lines are *slots* (:class:`RtpSlot`): the SFU answers them ``sendonly``; the slot's
  forwarder rewrites each packet of the member it carries and sends it through the sender's
  :class:`rtc.aiortc_hooks.RtpSink` (SRTP protect, UDP send), below aiortc's send path. NACKs are served
  from the publisher's buffer; REMB and receiver reports choose the slot's temporal layer
  (:mod:`server.sfu.layers`), down to a pause that the client is told about (``tracks`` ``paused``).

Benchmark baselines only (``WorkerConfig.pack`` / ``transcode``, never a default install): :class:`Stream`
pumps a pass-through (or decoding) receiver's track and fans out to :class:`Slot` tracks whose senders
``pack()`` (or re-encode) them. Key-frame requests
(PLI/FIR) from subscribers go upstream through a per-publisher :class:`KeyframeLimiter` (at most one PLI
per ``pli_interval``; a suppressed request is coalesced into one deferred PLI, so a new subscriber still
gets its key frame within one interval).

The worker outlives the signaling process that started it (docs/sfu.md §4): it runs in its own session
(process group) and listens on a unix socket (mode 0600, in the server's runtime directory). A manager
connects there; when that connection ends without ``stop`` (the signaling process was killed or restarted for
a deploy) the worker keeps forwarding and waits ``WorkerConfig.adopt_within`` seconds for a new manager to
connect and adopt it, then exits on its own.

Protocol with the manager (pickled tuples over the unix socket, ``multiprocessing.connection`` framing):

manager → worker: ``("members", room, [pids])`` (empty = the room ended), ``("offer", room, pid, sdp)``,
``("candidate", room, pid, candidate|None, sdp_mid, sdp_mline_index)``, ``("stats", req)``, ``("stop",)``.

worker → manager: ``("ready", os_pid, {room: [pids]}, WORKER_PROTOCOL)`` (on every new connection: the rooms
it forwards), ``("answer", room, pid, sdp)``, ``("tracks", room, pid, {mid: {"pid",
"kind"[, "paused": True]}})``, ``("error", room, pid, code, message, ref)``, ``("stats", req, dict)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import pickle
import resource
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import av
from aiortc import (
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription, candidate_from_sdp

from rtc import aiortc_hooks as hooks
from rtc.ice import aiortc_configuration

from .addressing import UNREACHABLE_MESSAGE, announce, has_candidates
from .layers import LayerChooser, LayerMeter
from .rtp import PAUSED, Forwarder, Packet, RetransmitBuffer, ntp_now, parse, read_vp8

log = logging.getLogger("alcove.sfu.worker")

WORKER_PROTOCOL = 1
"""The manager ↔ worker protocol's version (in ``ready``): a manager adopts only workers that speak its own."""

SLOT_QUEUE_LIMIT = 120
"""Packets a slot may hold for a sender that does not keep up; beyond it the slot resyncs on a key frame."""

KINDS = ("audio", "video")
SHARE_KEYS = {"video": "screen", "audio": "screen-audio"}
"""A member's second ``sendonly`` m-line of a kind is its screen share (docs/sfu.md §1): one more publish stream,
forwarded like the camera's into the subscribers' spare slots of that kind."""

DECIDE_EVERY = 0.5
"""Seconds between two layer decisions of a slot driven by REMB alone (every receiver report decides)."""


@dataclass(frozen=True)
class WorkerConfig:
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    """``[{"urls": ..., "username": ..., "credential": ...}]``; empty = host candidates only (no STUN)."""
    loopback: bool = False
    """Also gather 127.0.0.1 candidates (a server reachable only on loopback; tests and benchmarks)."""
    announced: str | None = None
    """Advertise this address in the host candidates (1:1 NAT, ``ALCOVE_MEDIA_ANNOUNCED_ADDRESS``)."""
    ports: tuple[int, int] | None = None
    """Bind the UDP sockets in this inclusive port range (``ALCOVE_MEDIA_PORTS``)."""
    pli_interval: float = 0.5
    """Minimum seconds between two PLIs sent upstream to one publisher."""
    transcode: bool = False
    """Benchmark baseline only: decode every publish stream and re-encode it per subscriber."""
    pack: bool = False
    """Benchmark baseline only: the former path, packets re-packetized by aiortc's sender (``encoder.pack()``)
    instead of forwarded at the RTP level."""
    adopt_within: float = 30.0
    """Seconds a worker without a manager (the signaling process died or restarts) keeps forwarding while it
    waits to be adopted by a new one; then it exits. Also the manager's bound for members to resume."""


# ------------------------------------------------------------------------------------------------ media


class KeyframeLimiter:
    """At most one upstream PLI per ``interval`` for one publisher's video; extra requests coalesce."""

    def __init__(self, receiver: RTCRtpReceiver, interval: float,
                 ssrc: Callable[[], int | None] = lambda: None) -> None:
        self.receiver = receiver
        self.ssrc = ssrc
        """The publisher's media SSRC if known (RTP-level forwarding: aiortc's receiver never sees a packet)."""
        self.interval = interval
        self.last = float("-inf")
        self.requests = 0
        self.sent = 0
        self._handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    def request(self) -> None:
        self.requests += 1
        now = time.monotonic()
        if now - self.last >= self.interval:
            self._send(now)
        elif self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.last + self.interval - now, self._deferred)

    def _deferred(self) -> None:
        self._handle = None
        self._send(time.monotonic())

    def _send(self, now: float) -> None:
        self.last = now
        self.sent += 1
        task = asyncio.ensure_future(self._pli())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pli(self) -> None:
        try:
            await hooks.request_keyframe(self.receiver, self.ssrc())
        except Exception:  # the transport may be closing
            log.debug("upstream PLI failed", exc_info=True)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Slot(MediaStreamTrack):
    """Benchmark baseline: the track behind one subscriber ``sendonly`` transceiver, fed by one :class:`Stream`."""

    def __init__(self, kind: str, mid: str, order: int) -> None:
        super().__init__()
        self.kind = kind
        self.mid = mid
        self.order = order
        self.publisher: str | None = None
        """The pid this slot is assigned to (also while that member has not published yet)."""
        self.source_key = kind
        """Which of the publisher's streams: its camera/microphone (the kind) or its share (``SHARE_KEYS``)."""
        self.source: Stream | None = None
        self.started = False
        self.waiting_key = True
        self.forwarded = 0
        self.dropped = 0
        self.keyframe_requests = 0
        self._queue: deque[Any] = deque()
        self._event = asyncio.Event()
        self.unsubscribe: Callable[[], None] | None = None

    def attach(self, stream: Stream | None) -> None:
        if stream is self.source:
            return
        self.detach()
        if stream is None:
            return
        self.source = stream
        self.waiting_key = True
        stream.slots.add(self)
        if self.started:
            stream.request_keyframe()

    def detach(self) -> None:
        if self.source is not None:
            self.source.slots.discard(self)
            self.source = None
        self._queue.clear()

    def on_keyframe_request(self) -> None:
        """A PLI/FIR from the subscriber for this slot."""
        self.keyframe_requests += 1
        if self.source is not None:
            self.source.request_keyframe()

    def push(self, item: Any) -> None:
        if not self.started or self.readyState != "live":
            return  # the sender is not running yet: it starts on a key frame anyway
        if self.kind == "video" and isinstance(item, av.Packet) and self.waiting_key:
            if not item.is_keyframe:
                self.dropped += 1
                return
            self.waiting_key = False
        if len(self._queue) >= SLOT_QUEUE_LIMIT:
            self.dropped += len(self._queue) + 1
            self._queue.clear()
            if self.kind == "video" and self.source is not None:
                self.waiting_key = True
                self.source.request_keyframe()
            return
        self._queue.append(item)
        self._event.set()

    async def recv(self) -> Any:
        if not self.started:
            self.started = True
            if self.source is not None and self.kind == "video":
                self.source.request_keyframe()
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._event.clear()
            await self._event.wait()
        self.forwarded += 1
        return self._queue.popleft()

    def stop(self) -> None:
        self.detach()
        super().stop()
        self._event.set()


class Stream:
    """Benchmark baseline: one publisher's audio or video read from its (pass-through or decoding) track once,
    fanned out to attached :class:`Slot` tracks."""

    def __init__(self, pid: str, kind: str, receiver: RTCRtpReceiver, *, passthrough: bool, pli_interval: float):
        self.pid = pid
        self.kind = kind
        self.receiver = receiver
        self.stats = hooks.make_passthrough(receiver) if passthrough else hooks.receiver_stats(receiver)
        self.slots: set[Slot] = set()
        self.packets_in = 0
        self.limiter = KeyframeLimiter(receiver, pli_interval) if kind == "video" else None
        assert receiver.track is not None
        self.track: MediaStreamTrack = receiver.track
        self.task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                item = await self.track.recv()
                self.packets_in += 1
                for slot in tuple(self.slots):
                    slot.push(item)
        except MediaStreamError:
            pass

    def request_keyframe(self) -> None:
        if self.limiter is not None:
            self.limiter.request()

    @property
    def decoded(self) -> int:
        return self.stats.frames_decoded + self.stats.frames_to_decoder

    def close(self) -> None:
        self.task.cancel()
        for slot in tuple(self.slots):
            slot.detach()
        if self.limiter is not None:
            self.limiter.close()


class RtpStream:
    """One publisher's audio or video at the RTP level: each packet parsed once, buffered, fanned out.

    Fed by the member's :func:`rtc.aiortc_hooks.tap_rtp` (after SRTP unprotect); aiortc's receiver never sees
    a packet (it still negotiates, sends receiver reports from :class:`~rtc.aiortc_hooks.ReceiveReports` and the
    PLIs of the limiter)."""

    def __init__(self, pid: str, kind: str, receiver: RTCRtpReceiver, payload_types: set[int], clock_rate: int,
                 *, pli_interval: float) -> None:
        self.pid = pid
        self.kind = kind
        self.video = kind == "video"
        self.receiver = receiver
        self.payload_types = payload_types
        self.clock_rate = clock_rate
        self.stats = hooks.make_passthrough(receiver)  # belt and braces: nothing is ever decoded
        self.slots: set[RtpSlot] = set()
        self.forwarders: list[Forwarder] = []
        self.buffer = RetransmitBuffer()
        self.ssrc: int | None = None
        self.reports: hooks.ReceiveReports | None = None
        self.packets_in = 0
        self.forward_errors = 0
        self.keyframes_in = 0
        self.meter = LayerMeter()
        self.limiter = KeyframeLimiter(receiver, pli_interval, lambda: self.ssrc) if kind == "video" else None

    def learn(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.reports = hooks.ReceiveReports(self.receiver, ssrc, self.clock_rate)

    def on_packet(self, packet: Packet) -> None:
        """One received packet of this stream (parsed once, by :meth:`MemberConnection.on_rtp`)."""
        if packet.pt not in self.payload_types:
            return
        if packet.ssrc != self.ssrc:
            self.learn(packet.ssrc)
        self.packets_in += 1
        assert self.reports is not None
        self.reports.add(packet.seq, packet.ts)
        if self.video:
            if not read_vp8(packet):
                return
            if packet.key:
                self.keyframes_in += 1
            self.meter.add(packet.tid, len(packet.payload))
        self.buffer.add(packet)
        for forwarder in self.forwarders:
            try:
                forwarder.forward(packet)
            except Exception:  # one subscriber's failed send must not cost the others this packet
                self.forward_errors += 1
                if self.forward_errors == 1:
                    log.warning("forwarding to a subscriber failed", exc_info=True)

    def request_keyframe(self) -> None:
        if self.limiter is not None:
            self.limiter.request()

    @property
    def decoded(self) -> int:
        return self.stats.frames_decoded + self.stats.frames_to_decoder

    def close(self) -> None:
        for slot in tuple(self.slots):
            slot.detach()
        if self.limiter is not None:
            self.limiter.close()


class RtpSlot(MediaStreamTrack):
    """One subscriber ``sendonly`` transceiver at the RTP level: a :class:`Forwarder` writing to its sender.

    As a track it only tells when the sender started (its ``recv()`` never yields: aiortc's send loop idles
    while the forwarder sends below it)."""

    def __init__(self, kind: str, mid: str, order: int, forwarder: Forwarder) -> None:
        super().__init__()
        self.kind = kind
        self.mid = mid
        self.order = order
        self.forwarder = forwarder
        self.publisher: str | None = None
        self.source_key = kind
        """Which of the publisher's streams: its camera/microphone (the kind) or its share (``SHARE_KEYS``)."""
        self.source: RtpStream | None = None
        self.started = False
        self.keyframe_requests = 0
        self.nacks = 0
        self.receiver_reports = 0
        """Report blocks about this slot's stream in the subscriber's receiver reports (its feedback arrives)."""
        self.remb_reports = 0
        """REMB messages from the subscriber naming this slot's stream."""
        self.unsubscribe: Callable[[], None] | None = None
        self.chooser = LayerChooser()
        self.on_pause: Callable[[], None] | None = None
        """Called when video to this subscriber pauses or resumes (the worker tells the client)."""
        self._forwarded_at_decision = 0
        self._decided_at = float("-inf")
        self.pauses = 0
        self._stopped = asyncio.Event()

    @property
    def paused(self) -> bool:
        return self.forwarder.max_layer == PAUSED

    @property
    def forwarded(self) -> int:
        return self.forwarder.forwarded

    @property
    def dropped(self) -> int:
        return self.forwarder.dropped

    def attach(self, stream: RtpStream | None) -> None:
        if stream is self.source:
            return
        self.detach()
        if stream is None:
            return
        self.source = stream
        self.forwarder.reset()
        stream.slots.add(self)
        stream.forwarders.append(self.forwarder)
        if self.started:
            stream.request_keyframe()

    def detach(self) -> None:
        source = self.source
        if source is not None:
            source.slots.discard(self)
            with contextlib.suppress(ValueError):
                source.forwarders.remove(self.forwarder)
            self.source = None

    def on_keyframe_request(self) -> None:
        """A PLI/FIR from the subscriber for this slot."""
        self.keyframe_requests += 1
        if self.source is not None:
            self.source.request_keyframe()

    def on_feedback(self, kind: str, value: Any) -> None:
        """RTCP feedback from the subscriber for this slot (NACK; REMB and receiver reports)."""
        if kind == "nack":
            self.nacks += len(value)
            # a number never sent to this subscriber is no loss on its link: aiortc's receiver, given a new slot's
            # packets before it applied the answer that names them, NACKs the gap between two streams' numbers
            self.chooser.on_nack([seq for seq in value if self.forwarder.sent(seq)], time.monotonic())
            if self.source is not None:
                self.forwarder.nack(value, self.source.buffer)
            return
        if kind == "rr":
            self.receiver_reports += 1
        elif kind == "remb":
            self.remb_reports += 1
        if self.kind != "video":
            return  # audio is never dropped for video
        now = time.monotonic()
        if kind == "remb":
            self.chooser.on_remb(float(value), now)
        elif kind == "rr":
            self.chooser.on_loss(int(value[0]), now)
        if kind == "rr" or now - self._decided_at >= DECIDE_EVERY:  # receivers may send REMB every few packets
            self._decided_at = now
            self.choose_layer(now)

    def choose_layer(self, now: float) -> None:
        """Per feedback report: the layer this subscriber's link carries (applied at a safe point)."""
        source = self.source
        if source is None:
            return
        source.meter.tick(now)
        sent = self.forwarder.forwarded - self._forwarded_at_decision
        self._forwarded_at_decision = self.forwarder.forwarded
        was_paused = self.paused
        self.forwarder.max_layer = self.chooser.decide(source.meter, now, sent)
        if self.paused != was_paused:
            self.pauses += self.paused
            if not self.paused:
                source.request_keyframe()  # resume on a key frame
            if self.on_pause is not None:
                self.on_pause()

    async def recv(self) -> Any:
        if not self.started:
            self.started = True
            if self.source is not None and self.kind == "video":
                self.source.request_keyframe()
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        self.detach()
        super().stop()
        self._stopped.set()


class MemberConnection:
    """One member's peer connection to this worker: what it publishes (streams) and its receive slots."""

    def __init__(self, pid: str, pc: RTCPeerConnection) -> None:
        self.pid = pid
        self.pc = pc
        self.streams: dict[str, Any] = {}
        """kind -> :class:`RtpStream` (or the baseline's :class:`Stream`)."""
        self.slots: dict[str, Any] = {}
        """mid -> :class:`RtpSlot` (or the baseline's :class:`Slot`)."""
        self.forwarders: dict[str, Forwarder] = {}
        """mid -> the latest forwarder of that sender (a new slot's forwarder continues its numbering)."""
        self.mapping: dict[str, dict[str, Any]] | None = None
        self.lock = asyncio.Lock()
        self.closed = False
        self.untap: Callable[[], None] | None = None
        self.by_ssrc: dict[int, RtpStream] = {}
        self.by_pt: dict[int, RtpStream] = {}
        self.ssrcs: dict[str, set[int]] = {}
        """stream key -> the media SSRCs its m-line declares (a share and the camera share payload types)."""

    def dtls(self) -> Any:
        """The connection's DTLS transport (BUNDLE: one for every m-line), or None before negotiation."""
        return next((t.receiver.transport for t in self.pc.getTransceivers() if t.receiver.transport is not None),
                    None)

    def on_rtp(self, data: bytes, arrival_ms: int) -> bool:
        """Every RTP packet of this member's connection (the tap): publish streams are forwarded, the rest
        (RTX, padding, unknown) dropped; aiortc's receivers never get a packet."""
        packet = parse(data, ntp_now())
        if packet is None:
            return True
        stream = self.by_ssrc.get(packet.ssrc)
        if stream is None:
            stream = self.by_pt.get(packet.pt)
            if stream is None:
                return True
            self.by_ssrc[packet.ssrc] = stream
        stream.on_packet(packet)
        return True

    def index_streams(self) -> None:
        self.by_ssrc = {}
        self.by_pt = {}
        for key, stream in self.streams.items():
            if isinstance(stream, RtpStream):
                for ssrc in self.ssrcs.get(key, ()):
                    self.by_ssrc[ssrc] = stream
                if key in KINDS:  # an undeclared SSRC is the camera's or the microphone's, never a share's
                    for pt in stream.payload_types:
                        self.by_pt[pt] = stream


def _media_ssrcs(media: Any) -> set[int]:
    """The media SSRCs an m-line declares (not its RTX/FEC repair SSRCs)."""
    repair = {item for group in media.ssrc_group if group.semantic in ("FID", "FEC-FR") for item in group.items[1:]}
    return {int(info.ssrc) for info in media.ssrc if int(info.ssrc) not in repair}


def _sdp_identity(sdp: str) -> tuple[str, str]:
    """The DTLS fingerprint and ICE ufrag of an SDP: a change means a new connection, not a renegotiation."""
    fingerprint = ufrag = ""
    for line in sdp.splitlines():
        if line.startswith("a=fingerprint:") and not fingerprint:
            fingerprint = line.split(":", 1)[1].strip()
        elif line.startswith("a=ice-ufrag:") and not ufrag:
            ufrag = line.split(":", 1)[1].strip()
    return fingerprint, ufrag


def _transport_identity(pc: RTCPeerConnection) -> tuple[str, str] | None:
    remote = pc.remoteDescription
    return _sdp_identity(remote.sdp) if remote is not None else None


class ForwardingRoom:
    """A room as this worker forwards it (not the core's ``signaling.room.Room``)."""

    def __init__(self, room_id: str) -> None:
        self.id = room_id
        self.members: frozenset[str] = frozenset()
        """A copy of the admitted pids, as last sent by the manager; the core's ``Room`` is the authority."""
        self.peers: dict[str, MemberConnection] = {}


# ------------------------------------------------------------------------------------------------ worker


class Worker:
    def __init__(self, listener: socket.socket, config: WorkerConfig) -> None:
        self.listener = listener
        self.conn: Connection | None = None
        """The manager's connection; None while orphaned (waiting to be adopted)."""
        self.config = config
        self._orphan_timer: asyncio.TimerHandle | None = None
        self.adoptions = 0
        self.rooms: dict[str, ForwardingRoom] = {}
        self.decoded_closed = 0
        """Decoded frames of streams already closed (the live ones are summed on demand)."""
        self.forwarded_closed = 0
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()

    # -------------------------------------------------------------- plumbing

    def out(self, *msg: Any) -> None:
        """To the manager; dropped while orphaned (the client re-offers if an answer is lost)."""
        if self.conn is None:
            return
        try:
            self.conn.send(msg)
        except (BrokenPipeError, OSError):
            self._orphan()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SFU worker task failed", exc_info=task.exception())

    def _on_readable(self) -> None:
        conn = self.conn
        try:
            while conn is not None and conn is self.conn and conn.poll():
                self.dispatch(conn.recv())
        except (EOFError, OSError):  # the manager is gone: keep forwarding, wait to be adopted
            self._orphan()

    def _on_accept(self) -> None:
        """A manager connects (the first one, or a new signaling process adopting this worker)."""
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            log.warning("SFU worker control socket accept failed")
            return
        sock.setblocking(True)
        if self.conn is not None:  # the previous manager is gone (its end may not have been read yet)
            self._orphan()
        conn = Connection(sock.detach())
        self.conn = conn
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
            self._orphan_timer = None
        self.adoptions += 1
        asyncio.get_running_loop().add_reader(conn.fileno(), self._on_readable)
        self.out("ready", os.getpid(), {room.id: sorted(room.members) for room in self.rooms.values()},
                 WORKER_PROTOCOL)

    def _orphan(self) -> None:
        """The manager's connection ended without ``stop``: media goes on for ``adopt_within`` seconds."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            with contextlib.suppress(Exception):
                conn.close()
        if self._orphan_timer is None and not self._done.is_set():
            self._orphan_timer = asyncio.get_running_loop().call_later(self.config.adopt_within, self._abandoned)

    def _abandoned(self) -> None:
        self._orphan_timer = None
        if self.conn is None:
            log.warning("SFU worker not adopted within %.0f s: ending the media of %d room(s)",
                        self.config.adopt_within, len(self.rooms))
            self._done.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.config.ports is not None:
            hooks.bind_host_candidates_in(loop, *self.config.ports)
        hooks.small_datagram_reads(loop)  # a 256 KiB buffer per received packet costs three syscalls
        self.listener.setblocking(False)
        loop.add_reader(self.listener.fileno(), self._on_accept)
        self._orphan()  # until the manager that started it connects
        try:
            await self._done.wait()
        finally:
            loop.remove_reader(self.listener.fileno())
            self.listener.close()
            if self._orphan_timer is not None:
                self._orphan_timer.cancel()
            for room_id in list(self.rooms):
                self.set_members(room_id, [])
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 2)

    def dispatch(self, msg: tuple[Any, ...]) -> None:
        op = msg[0]
        if op == "members":
            self.set_members(msg[1], msg[2])
        elif op == "offer":
            self.spawn(self.offer(msg[1], msg[2], msg[3]))
        elif op == "candidate":
            self.spawn(self.candidate(*msg[1:]))
        elif op == "stats":
            self.out("stats", msg[1], self.stats())
        elif op == "ice":
            self.config = dataclasses.replace(self.config, ice_servers=list(msg[1]))  # fresh TURN credentials
        elif op == "stop":
            self._done.set()

    # -------------------------------------------------------------- membership

    def set_members(self, room_id: str, pids: list[str] | frozenset[str]) -> None:
        """Apply the admitted set at once: a member who left stops sending and receiving before we return."""
        room = self.rooms.get(room_id)
        if room is None:
            if not pids:
                return
            room = self.rooms[room_id] = ForwardingRoom(room_id)
        room.members = frozenset(pids)
        for pid in [p for p in room.peers if p not in room.members]:
            self.drop_member(room, pid)
        if not room.members:
            del self.rooms[room_id]
            return
        for pid in self.assign(room):
            self.send_tracks(room, pid)

    def drop_member(self, room: ForwardingRoom, pid: str) -> None:
        member = room.peers.pop(pid, None)
        if member is None:
            return
        member.closed = True
        for stream in member.streams.values():  # nobody receives this member's packets any more
            self.decoded_closed += stream.decoded
            stream.close()
        for slot in member.slots.values():  # this member receives nothing any more
            self.forwarded_closed += slot.forwarded
            slot.stop()
        self.spawn(member.pc.close())

    def assign(self, room: ForwardingRoom) -> list[str]:
        """Give every slot a publisher (stable; free slots take unassigned members in pid order).

        Returns the pids whose mapping changed."""
        changed = []
        for sub in room.peers.values():
            others = sorted(room.members - {sub.pid})
            for kind in KINDS:
                # every other member's camera (or microphone) first, then the shares being published
                share = SHARE_KEYS[kind]
                sources = [(p, kind) for p in others]
                sources += [(p, share) for p in others if p in room.peers and share in room.peers[p].streams]
                slots = sorted((s for s in sub.slots.values() if s.kind == kind), key=lambda s: s.order)
                taken: set[tuple[str, str]] = set()
                for slot in slots:
                    source = (slot.publisher, slot.source_key)
                    if slot.publisher is not None and source in sources and source not in taken:
                        taken.add(source)
                    else:
                        slot.publisher = None
                free = [src for src in sources if src not in taken]
                for slot in slots:
                    if slot.publisher is None and free:
                        slot.publisher, slot.source_key = free.pop(0)
                    publisher = room.peers.get(slot.publisher) if slot.publisher else None
                    slot.attach(publisher.streams.get(slot.source_key) if publisher else None)
            mapping = self.mapping_of(sub)
            if mapping != sub.mapping:
                sub.mapping = mapping
                changed.append(sub.pid)
        return changed

    @staticmethod
    def mapping_of(member: MemberConnection) -> dict[str, dict[str, Any]]:
        mapping: dict[str, dict[str, Any]] = {}
        for slot in member.slots.values():
            if slot.publisher is not None:
                mapping[slot.mid] = {"pid": slot.publisher, "kind": slot.kind}
                if slot.source_key != slot.kind:
                    mapping[slot.mid]["share"] = True  # a hint: with E2EE the receiver reads the frames' KID
                if isinstance(slot, RtpSlot) and slot.paused:
                    mapping[slot.mid]["paused"] = True  # "video paused to keep the sound clear"
        return mapping

    def remap(self, room_id: str, pid: str) -> None:
        """A slot of ``pid`` paused or resumed: send its mapping again."""
        room = self.rooms.get(room_id)
        member = room.peers.get(pid) if room is not None else None
        if room is None or member is None or member.closed:
            return
        mapping = self.mapping_of(member)
        if mapping != member.mapping:
            member.mapping = mapping
            self.send_tracks(room, pid)

    def send_tracks(self, room: ForwardingRoom, pid: str) -> None:
        member = room.peers.get(pid)
        if member is not None and member.mapping is not None:
            self.out("tracks", room.id, pid, dict(member.mapping))

    # -------------------------------------------------------------- negotiation

    @property
    def rtp_level(self) -> bool:
        """Forward at the RTP level (the default); the other paths are benchmark baselines only."""
        return not (self.config.transcode or self.config.pack)

    def new_pc(self) -> RTCPeerConnection:
        # MAX_BUNDLE (see rtc.ice.aiortc_configuration): clients must offer BUNDLE (browsers always do).
        pc = RTCPeerConnection(aiortc_configuration(self.config.ice_servers, relay_only=False, bundle=True))
        # The SFU needs no audio level (nor any header extension but the transport's): none is negotiated, so
        # no client sends who speaks when in clear; its SDP asks for Opus at constant bitrate.
        hooks.limit_metadata(pc)
        return pc

    async def offer(self, room_id: str, pid: str, sdp: str) -> None:
        room = self.rooms.get(room_id)
        if room is None or pid not in room.members:
            self.out("error", room_id, pid, "not-allowed", "only admitted members of the room can send media", "offer")
            return
        member = room.peers.get(pid)
        if member is not None and _transport_identity(member.pc) not in (None, _sdp_identity(sdp)):
            # A new DTLS fingerprint or ICE ufrag: the client built a new connection (after an ICE failure,
            # a reload). Replace ours; the membership does not change.
            self.drop_member(room, pid)
            member = None
        if member is None:
            member = room.peers[pid] = MemberConnection(pid, self.new_pc())
        async with member.lock:
            try:
                await self._negotiate(room, member, sdp)
            except Exception as exc:  # a bad or unsupported offer
                log.info("SFU offer from %s in %s failed: %s", pid, room_id, type(exc).__name__)
                if not member.closed:
                    self.out("error", room_id, pid, "invalid-message", f"the SFU cannot answer this offer: {exc}",
                             "offer")

    async def _negotiate(self, room: ForwardingRoom, member: MemberConnection, sdp: str) -> None:
        parsed = SessionDescription.parse(sdp)
        pc = member.pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if member.closed:
            return
        by_mid = {t.mid: t for t in pc.getTransceivers()}
        published: dict[str, tuple[Any, Any]] = {}
        slot_mids: set[str] = set()
        for order, media in enumerate(parsed.media):
            mid = media.rtp.muxId
            if media.kind not in KINDS or mid not in by_mid:
                continue
            transceiver = by_mid[mid]
            if media.direction in ("sendonly", "sendrecv") and media.kind not in published:
                published[media.kind] = (transceiver, media)
            elif media.direction in ("sendonly", "sendrecv") and SHARE_KEYS[media.kind] not in published:
                published[SHARE_KEYS[media.kind]] = (transceiver, media)  # the second one: a screen share
            elif media.direction == "recvonly":
                slot_mids.add(mid)
                slot = member.slots.get(mid)
                if slot is None or slot.readyState != "live":
                    if self.rtp_level:
                        sink = hooks.rtp_sink(transceiver.sender)
                        forwarder = Forwarder(media.kind, sink)
                        previous = member.forwarders.get(mid)
                        if previous is not None:  # same sender, same SSRC: its numbering goes on
                            forwarder.continue_from(previous)
                        member.forwarders[mid] = forwarder
                        slot = RtpSlot(media.kind, mid, order, forwarder)
                        slot.on_pause = functools.partial(self.remap, room.id, member.pid)
                        sink.feedback = slot.on_feedback
                    else:
                        slot = Slot(media.kind, mid, order)
                    member.slots[mid] = slot
                    transceiver.sender.replaceTrack(slot)
                    slot.unsubscribe = hooks.on_keyframe_request(transceiver.sender, slot.on_keyframe_request)
                transceiver.direction = "sendonly"
        # publish streams (a new transceiver for a kind replaces the old stream)
        member.ssrcs = {key: _media_ssrcs(media) for key, (_t, media) in published.items()}
        for key, (transceiver, media) in published.items():
            kind = media.kind
            stream = member.streams.get(key)
            if stream is None or stream.receiver is not transceiver.receiver:
                if stream is not None:
                    self.decoded_closed += stream.decoded
                    stream.close()
                if self.rtp_level:
                    codec = "vp8" if kind == "video" else "opus"
                    codecs = [c for c in media.rtp.codecs if c.mimeType.lower() == f"{kind}/{codec}"]
                    member.streams[key] = RtpStream(member.pid, kind, transceiver.receiver,
                                                     {c.payloadType for c in codecs},
                                                     codecs[0].clockRate if codecs else 90000,
                                                     pli_interval=self.config.pli_interval)
                else:
                    member.streams[key] = Stream(member.pid, kind, transceiver.receiver,
                                                  passthrough=not self.config.transcode,
                                                  pli_interval=self.config.pli_interval)
        for kind in [k for k in member.streams if k not in published]:
            stream = member.streams.pop(kind)
            self.decoded_closed += stream.decoded
            stream.close()
        if self.rtp_level:
            member.index_streams()
            # every connection is tapped, also one that only subscribes: its RTCP (NACK, PLI, REMB, receiver
            # reports) then takes the direct path as soon as its RtpSinks find SRTP up and a nominated pair
            dtls = member.dtls()
            if member.untap is None and dtls is not None:
                member.untap = hooks.tap_rtp(dtls, member.on_rtp)
        # slots the client no longer offers as recvonly
        for mid in [m for m in member.slots if m not in slot_mids]:
            slot = member.slots.pop(mid)
            self.forwarded_closed += slot.forwarded
            slot.stop()
        changed = self.assign(room)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        if member.closed:
            return
        sdp = pc.localDescription.sdp
        if self.config.announced:
            sdp = announce(sdp, self.config.announced)
        if not has_candidates(sdp):
            # An answer without candidates would leave the client waiting for media that cannot come.
            log.warning("SFU has no candidate to offer (no usable address)")
            self.out("error", room.id, member.pid, "media-unreachable", UNREACHABLE_MESSAGE, "offer")
            return
        self.send_tracks(room, member.pid)  # the mapping precedes the answer it belongs to
        self.out("answer", room.id, member.pid, sdp)
        for pid in changed:
            if pid != member.pid:
                self.send_tracks(room, pid)

    async def candidate(self, room_id: str, pid: str, candidate: str | None, sdp_mid: str | None,
                        sdp_mline_index: int | None) -> None:
        room = self.rooms.get(room_id)
        member = room.peers.get(pid) if room else None
        if member is None or member.closed:
            return
        async with member.lock:  # after the offer that this candidate belongs to has been applied
            try:
                if candidate and not member.closed:
                    text = candidate.removeprefix("candidate:")
                    cand = candidate_from_sdp(text)
                    cand.sdpMid = sdp_mid
                    cand.sdpMLineIndex = sdp_mline_index
                    await member.pc.addIceCandidate(cand)
            except Exception as exc:
                log.info("ICE input from %s refused: %s", pid, type(exc).__name__)

    # -------------------------------------------------------------- counters

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        decoded = self.decoded_closed
        forwarded = self.forwarded_closed
        rooms: dict[str, Any] = {}
        for room in self.rooms.values():
            peers: dict[str, Any] = {}
            for member in room.peers.values():
                published = {}
                for kind, stream in member.streams.items():
                    decoded += stream.decoded
                    published[kind] = {
                        "packets_in": stream.packets_in,
                        "decoded_frames": stream.decoded,
                        "subscribers": len(stream.slots),
                        "pli_requests": stream.limiter.requests if stream.limiter else 0,
                        "plis_sent": stream.stats.plis_sent,
                    }
                    if isinstance(stream, RtpStream):
                        published[kind]["keyframes_in"] = stream.keyframes_in
                        published[kind]["layer_bytes"] = stream.meter.bytes[:3]  # payload bytes per temporal layer
                slots = {}
                for mid, slot in member.slots.items():
                    forwarded += slot.forwarded
                    slots[mid] = {"pid": slot.publisher, "kind": slot.kind, "forwarded": slot.forwarded,
                                  "dropped": slot.dropped, "started": slot.started,
                                  "keyframe_requests": slot.keyframe_requests}
                    if isinstance(slot, RtpSlot):
                        f = slot.forwarder
                        slots[mid].update(nacks=slot.nacks, receiver_reports=slot.receiver_reports,
                                          remb_reports=slot.remb_reports,
                                          retransmitted=f.retransmitted, nack_missed=f.nack_missed,
                                          layer=f.layer, max_layer=f.max_layer, layer_switches=f.layer_switches,
                                          pauses=slot.pauses, remb=slot.chooser.remb, loss=round(slot.chooser.loss, 3),
                                          sent_bytes=f.sent_bytes)
                dtls = member.dtls()
                peers[member.pid] = {"state": member.pc.connectionState, "published": published, "slots": slots,
                                     "direct": dtls is not None and hooks.is_direct(dtls)}
            rooms[room.id] = {"members": sorted(room.members), "peers": peers}
        return {
            "os_pid": os.getpid(),
            "event_loop": event_loop_name(),
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "decoded_frames": decoded,
            "forwarded_packets": forwarded,
            "rooms": rooms,
        }


def listen(path: str) -> socket.socket:
    """The worker's control socket: a unix socket only its owner can connect to (mode 0600)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(mask)
    os.chmod(path, 0o600)
    sock.listen(4)
    return sock


def event_loop_name() -> str:
    """The running loop's kind: "uvloop" or "asyncio" (what :func:`run_loop` chose)."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the worker's loop: uvloop's (libuv) where it is installed (a default install on Linux), else asyncio's.

    A forwarding worker wakes up for every datagram; uvloop's loop, datagram transport and send are compiled,
    where asyncio's selector loop runs each wake-up, read and send through Python (``alcove bench sfu``:
    docs/sfu.md §5). Everything the worker does through asyncio's API works on both; the hooks that reach into
    asyncio's datagram transport (:func:`rtc.aiortc_hooks.small_datagram_reads`, ``RtpSink``'s direct send)
    apply only where it is asyncio's."""
    try:
        import uvloop
    except ImportError:  # a platform without a uvloop wheel
        asyncio.run(main)
        return
    uvloop.run(main)


def worker_main(path: str, config: WorkerConfig) -> None:
    """Entry point of a worker process: serve the control socket at ``path`` until stopped or abandoned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the manager decides when workers stop
    from ..logs import configure

    configure("WARNING")  # the same allowlist as the server: aiortc/aioice lines keep code locations only
    if config.loopback:
        hooks.allow_loopback_candidates()
    listener = listen(path)
    identity = os.stat(path).st_ino
    try:
        run_loop(Worker(listener, config).run())
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == identity:  # still ours (not a newer worker's)
                os.unlink(path)


def main() -> None:
    """``python -c "from server.sfu.worker import main; main()" SOCKET``: the configuration comes pickled on
    stdin (it holds TURN credentials, so never on the command line), from the manager that starts the process."""
    config = pickle.load(sys.stdin.buffer)
    if not isinstance(config, WorkerConfig):
        raise SystemExit("expected a WorkerConfig on stdin")
    sys.stdin.close()
    worker_main(sys.argv[1], config)
