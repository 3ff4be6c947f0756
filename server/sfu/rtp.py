"""RTP-level forwarding: one received packet, rewritten per subscriber, never re-packetized.

Pure byte work (no aiortc, no I/O): the worker wires it to :func:`rtc.aiortc_hooks.tap_rtp` (packets in,
after SRTP unprotect) and :class:`rtc.aiortc_hooks.RtpSink` (packets out, SRTP-protected per subscriber).

* :func:`parse` reads the fixed RTP header once per received packet and keeps the payload as it is (for an
  E2EE session the payload is the SFrame-protected frame behind its clear VP8 payload descriptor / header).
* :class:`Vp8Info` reads the VP8 payload descriptor (RFC 7741): frame start, key frame, temporal layer, layer
  sync, picture id. Everything it reads is outside the SFrame ciphertext (the descriptor is added by the
  packetizer after the sender's transform; the key-frame bit is in the clear VP8 header bytes).
* :class:`RetransmitBuffer` keeps a publisher's last packets (by its sequence number) to serve NACKs from
  subscribers without asking the publisher.
* :class:`Forwarder` is one subscriber's view of one publisher stream: it rewrites SSRC, payload type,
  sequence number and timestamp (offsets that change only when it switches source or drops a layer's packets),
  writes the header extensions the subscriber negotiated (``mid``, ``abs-send-time``), picks the temporal layer
  (switching up only at a key frame or a layer-sync frame, down at a frame start), and serves NACKs.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections.abc import Callable
from typing import Protocol

_HEAD = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_PT_SEQ_TS = struct.Struct("!BHI")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

HISTORY = 1024
"""Packets kept per publisher (retransmission) and per subscriber (sequence map); ~3 s of 500 kbps video."""

PAUSED = -1
"""``Forwarder.max_layer`` value: no video at all to this subscriber (audio goes on)."""


NTP_EPOCH = 2208988800
"""Seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)."""


def ntp_now() -> int:
    """The current time as a 64-bit NTP timestamp (RTCP sender reports, abs-send-time)."""
    return int((time.time() + NTP_EPOCH) * (1 << 32))


class Packet:
    """One received RTP packet, parsed once and shared by every subscriber (never mutated)."""

    __slots__ = (
        "key",
        "marker",
        "ntp",
        "padding",
        "payload",
        "pt",
        "seq",
        "ssrc",
        "start",
        "sync",
        "tid",
        "ts",
    )

    def __init__(self, seq: int, ts: int, marker: int, pt: int, ssrc: int, payload: bytes, padding: bool,
                 ntp: int) -> None:
        self.seq = seq
        self.ts = ts
        self.marker = marker
        self.pt = pt
        self.ssrc = ssrc
        self.payload = payload
        self.padding = padding
        self.ntp = ntp
        """When it arrived (64-bit NTP): its send time at every subscriber (the same loop iteration)."""
        self.start = True
        """First packet of a frame (VP8: S=1, partition 0; audio: always)."""
        self.key = False
        """First packet of a VP8 key frame."""
        self.tid = 0
        """Temporal layer (0 without a VP8 T bit)."""
        self.sync = False
        """A layer-sync frame (VP8 Y bit): a subscriber may switch up to this layer here."""


def parse(data: bytes, ntp: int = 0) -> Packet | None:
    """The RTP fields of ``data`` (after SRTP unprotect), or None if it is not a well-formed RTP packet."""
    n = len(data)
    if n < 12 or data[0] >> 6 != 2:
        return None
    b0 = data[0]
    b1 = data[1]
    seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
    off = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if off + 4 > n:
            return None
        off += 4 + 4 * _U16.unpack_from(data, off + 2)[0]
    end = n
    padding = bool(b0 & 0x20)
    if padding:
        end -= data[-1]
    if off > end:
        return None
    return Packet(seq, ts, b1 >> 7, b1 & 0x7F, ssrc, data[off:end], padding, ntp)


def read_vp8(packet: Packet) -> bool:
    """Fill ``start``/``key``/``tid``/``sync`` from the VP8 payload descriptor; False if it is malformed."""
    p = packet.payload
    n = len(p)
    if n < 1:
        return False
    b0 = p[0]
    i = 1
    tid = 0
    sync = False
    if b0 & 0x80:  # X
        if n < 2:
            return False
        x = p[1]
        i = 2
        if x & 0x80:  # I: picture id
            if i >= n:
                return False
            i += 2 if p[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K
            if i >= n:
                return False
            tid = p[i] >> 6
            sync = bool(p[i] & 0x20)
            i += 1
    start = bool(b0 & 0x10) and (b0 & 0x07) == 0
    packet.start = start
    packet.tid = tid if b0 & 0x80 and p[1] & 0x20 else 0
    packet.sync = sync
    packet.key = start and i < n and (p[i] & 0x01) == 0
    return i <= n


def picture_id(payload: bytes) -> int | None:
    """The VP8 picture id of ``payload`` (15 bits; a 7-bit id is widened), or None if it has none."""
    off, bits = picture_id_offset(payload)
    if not bits:
        return None
    if bits == 15:
        return ((payload[off] & 0x7F) << 8) | payload[off + 1]
    return payload[off] & 0x7F


def picture_id_offset(payload: bytes) -> tuple[int, int]:
    """(offset, width in bits) of the VP8 picture id in ``payload``, or (0, 0) if it has none."""
    if len(payload) < 3 or not payload[0] & 0x80 or not payload[1] & 0x80:
        return 0, 0
    return 2, 15 if payload[2] & 0x80 else 7


class RetransmitBuffer:
    """The last :data:`HISTORY` packets of one publisher stream, by sequence number."""

    __slots__ = ("_ring",)

    def __init__(self) -> None:
        self._ring: list[Packet | None] = [None] * HISTORY

    def add(self, packet: Packet) -> None:
        self._ring[packet.seq % HISTORY] = packet

    def get(self, seq: int) -> Packet | None:
        packet = self._ring[seq % HISTORY]
        return packet if packet is not None and packet.seq == seq else None


class Sink(Protocol):
    """What a :class:`Forwarder` sends through (``rtc.aiortc_hooks.RtpSink``)."""

    ready: bool
    ssrc: int
    payload_type: int
    mime_type: str
    clock_rate: int
    mid: str
    mid_id: int
    abs_send_time_id: int

    def send_rtp(self, header: bytearray, payload: bytes, rtp_timestamp: int, ntp_timestamp: int) -> bool:
        """Send the RTP packet ``header + payload`` (``header`` is reused: copy it before returning) and count it
        for the sender reports (``ntp_timestamp``: when it was sent, 64-bit NTP); False if it was not sent."""
        ...


def _newer(a: int, b: int) -> bool:
    """``a`` is after ``b`` in 16-bit sequence space."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


class Forwarder:
    """One subscriber's copy of one publisher stream (audio or video)."""

    def __init__(self, kind: str, sink: Sink, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self.video = kind == "video"
        self.mime = "video/vp8" if kind == "video" else "audio/opus"
        self.sink = sink
        self.clock = clock
        self.max_layer = 2
        """The highest temporal layer this subscriber should get (:data:`PAUSED`: no video)."""
        self.layer = 2
        """The highest temporal layer currently forwarded (follows ``max_layer`` at safe points)."""
        self.waiting_key = kind == "video"
        self.source_ssrc: int | None = None
        self.seq_off = 0
        self.ts_off = 0
        self.pid_off = 0
        self.last_in: int | None = None
        self.last_drop: int | None = None
        self.last_out_seq = secrets.randbelow(0x10000)
        self.last_out_ts = secrets.randbelow(0x100000000)
        self.last_out_at = 0.0
        self.last_pid: int | None = None
        self.dropping_frame = False
        self._head = bytearray()
        """The header (12 bytes and the negotiated extension block) of every packet to this subscriber, rewritten
        in place per packet (payload type and marker, sequence number, timestamp, abs-send-time)."""
        self._abs_at = 0
        """Offset in ``_head`` of the abs-send-time element (its id byte; 0: not negotiated)."""
        self._abs_id = 0
        self._head_built = False
        self._out = [-1] * HISTORY
        self._in = [0] * HISTORY
        self._tsoff = [0] * HISTORY
        self._pidoff = [0] * HISTORY
        self.forwarded = 0
        self.dropped = 0
        self.retransmitted = 0
        self.nack_missed = 0
        self.layer_switches = 0
        self.sent_bytes = 0

    # ---------------------------------------------------------------- switching

    def continue_from(self, previous: Forwarder) -> None:
        """Number on from ``previous`` (an earlier forwarder of the same sender, hence the same SSRC)."""
        self.last_out_seq = previous.last_out_seq
        self.last_out_ts = previous.last_out_ts
        self.last_out_at = previous.last_out_at
        self.last_pid = previous.last_pid

    def reset(self) -> None:
        """Start over on the next key frame (a new source, a resync): sequence numbers continue."""
        self.waiting_key = self.kind == "video"
        self.source_ssrc = None
        self.last_in = None

    def _begin(self, packet: Packet) -> None:
        """Map ``packet`` right after the last packet this subscriber got (continuity across a switch)."""
        self.seq_off = (self.last_out_seq + 1 - packet.seq) & 0xFFFF
        gap = max(1, int((self.clock() - self.last_out_at) * self.sink.clock_rate)) if self.last_out_at else 1
        self.ts_off = (self.last_out_ts + gap - packet.ts) & 0xFFFFFFFF
        self.source_ssrc = packet.ssrc
        self.last_in = None
        self.last_drop = (packet.seq - 1) & 0xFFFF  # older packets belong to what came before

    def _frame_start(self, packet: Packet) -> None:
        """A safe point: down at any frame start; up at a key frame, or stepwise at a layer-sync frame."""
        target = self.max_layer
        layer = self.layer
        if packet.key or target < layer:
            layer = target
        elif target > layer and packet.sync and layer < packet.tid <= target:
            layer = packet.tid
        if layer != self.layer:
            self.layer = layer
            self.layer_switches += 1
        self.dropping_frame = packet.tid > layer
        if self.dropping_frame:
            if picture_id(packet.payload) is not None:
                self.pid_off = (self.pid_off + 1) & 0x7FFF  # the subscriber's picture ids stay consecutive
        else:
            self._note_pid(packet)

    def _note_pid(self, packet: Packet) -> None:
        pid = picture_id(packet.payload)
        if pid is not None:
            self.last_pid = (pid - self.pid_off) & 0x7FFF

    def _drop(self, packet: Packet) -> None:
        """Drop ``packet`` and close its sequence-number gap (the subscriber must not NACK it)."""
        self.dropped += 1
        if self.last_in is None or _newer(packet.seq, self.last_in):
            self.last_in = packet.seq
            self.last_drop = packet.seq
            self.seq_off = (self.seq_off - 1) & 0xFFFF

    # ---------------------------------------------------------------- forwarding

    def forward(self, packet: Packet) -> None:
        # the hot path (once per packet per subscriber): locals instead of repeated attribute lookups, no calls
        # on the way of a packet that is simply forwarded but the send itself
        sink = self.sink
        if not sink.ready:
            return
        if sink.mime_type != self.mime:  # the subscriber did not negotiate the codec the publisher sends
            self.dropped += 1
            return
        if self.video:
            if self.max_layer == PAUSED:
                self.waiting_key = True
                if self.source_ssrc is not None:
                    self._drop(packet)
                return
            if self.waiting_key or packet.ssrc != self.source_ssrc:
                if not packet.key:
                    self.dropped += 1
                    return
                self.waiting_key = False
                self._begin(packet)
                self.layer = self.max_layer
                self.dropping_frame = False
                pid = picture_id(packet.payload)
                if pid is not None and self.last_pid is not None:
                    self.pid_off = (pid - self.last_pid - 1) & 0x7FFF
                self._note_pid(packet)
            elif packet.start:
                self._frame_start(packet)
            if self.dropping_frame or not packet.payload:
                self._drop(packet)
                return
        elif packet.ssrc != self.source_ssrc:
            self._begin(packet)
        elif not packet.payload:
            self._drop(packet)
            return
        seq = packet.seq
        last_in = self.last_in
        if last_in is not None and (seq == last_in or ((seq - last_in) & 0xFFFF) >= 0x8000):
            # a late (reordered) packet keeps the current offset only if nothing was dropped after it
            if self.last_drop is not None and not _newer(seq, self.last_drop):
                self.dropped += 1
                return
        else:
            self.last_in = seq
        out_seq = (seq + self.seq_off) & 0xFFFF
        ts_off = self.ts_off
        pid_off = self.pid_off
        out_ts = (packet.ts + ts_off) & 0xFFFFFFFF
        self._send(packet, out_seq, out_ts, pid_off)
        idx = out_seq % HISTORY
        self._out[idx] = out_seq
        self._in[idx] = seq
        self._tsoff[idx] = ts_off
        self._pidoff[idx] = pid_off
        last_out = self.last_out_seq
        if out_seq != last_out and ((out_seq - last_out) & 0xFFFF) < 0x8000:
            self.last_out_seq = out_seq
            self.last_out_ts = out_ts
            self.last_out_at = self.clock()
        self.forwarded += 1

    def _header(self) -> bytearray:
        """The header template: the fixed header with the sink's SSRC and the extension block the subscriber
        negotiated (``mid``, ``abs-send-time``), built on the first packet sent (a sink's negotiated fields are
        set once, before it is ready); :meth:`_send` rewrites the per-packet fields in place. Its bytes are those
        the former per-packet concatenation built (tested)."""
        sink = self.sink
        mid_body = b""
        if 0 < sink.mid_id < 15 and sink.mid:
            mid = sink.mid.encode()[:16]
            mid_body = bytes([(sink.mid_id << 4) | (len(mid) - 1)]) + mid
        abs_id = sink.abs_send_time_id
        if 0 < abs_id < 15:
            body = b"\x00" * 4 + mid_body  # the abs-send-time element first: its id byte and 3 bytes of time
            self._abs_at = 16
            self._abs_id = ((abs_id << 4) | 2) << 24
        else:
            body = mid_body
            self._abs_at = 0
        body += b"\x00" * (-len(body) % 4)
        ext = b"\xbe\xde" + _U16.pack(len(body) // 4) + body if body else b""
        self._head = bytearray(_HEAD.pack(0x90 if ext else 0x80, 0, 0, 0, sink.ssrc & 0xFFFFFFFF) + ext)
        self._head_built = True
        return self._head

    def _send(self, packet: Packet, out_seq: int, out_ts: int, pid_off: int) -> None:
        sink = self.sink
        head = self._head if self._head_built else self._header()
        payload = packet.payload
        if pid_off and self.video and payload and payload[0] & 0x80:
            payload = self._rewrite_picture_id(payload, pid_off)
        _PT_SEQ_TS.pack_into(head, 1, (packet.marker << 7) | sink.payload_type, out_seq, out_ts)
        if self._abs_at:
            _U32.pack_into(head, self._abs_at, self._abs_id | ((packet.ntp >> 14) & 0x00FFFFFF))
        if sink.send_rtp(head, payload, out_ts, packet.ntp):
            self.sent_bytes += len(head) + len(payload)

    @staticmethod
    def _rewrite_picture_id(payload: bytes, pid_off: int) -> bytes:
        off, bits = picture_id_offset(payload)
        if not bits:
            return payload
        if bits == 15:
            pid = ((payload[off] & 0x7F) << 8) | payload[off + 1]
            pid = (pid - pid_off) & 0x7FFF
            return payload[:off] + bytes([0x80 | (pid >> 8), pid & 0xFF]) + payload[off + 2:]
        pid = (payload[off] - pid_off) & 0x7F
        return payload[:off] + bytes([pid]) + payload[off + 1:]

    # ---------------------------------------------------------------- feedback

    def sent(self, out_seq: int) -> bool:
        """This subscriber was sent ``out_seq`` (one of the last :data:`HISTORY` sequence numbers it was sent)."""
        return self._out[out_seq % HISTORY] == out_seq

    def nack(self, lost: list[int], buffer: RetransmitBuffer) -> int:
        """Resend what the subscriber lost from the publisher's buffer; returns how many were not there."""
        missed = 0
        for out_seq in lost:
            idx = out_seq % HISTORY
            packet = buffer.get(self._in[idx]) if self.sent(out_seq) else None
            if packet is None:
                missed += 1
                continue
            self._send(packet, out_seq, (packet.ts + self._tsoff[idx]) & 0xFFFFFFFF, self._pidoff[idx])
            self.retransmitted += 1
        self.nack_missed += missed
        return missed
