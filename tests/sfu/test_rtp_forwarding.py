"""The RTP-level forwarder (server.sfu.rtp) on synthetic packets: rewriting, continuity, layers, NACK buffer."""

from __future__ import annotations

import itertools
import struct

import pytest

from server.sfu.rtp import HISTORY, PAUSED, Forwarder, Packet, RetransmitBuffer, parse, picture_id, read_vp8

pytestmark = pytest.mark.sfu

PUB_SSRC = 0x1111
L1T3 = (0, 2, 1, 2)
"""The temporal layer of each frame in an L1T3 cycle (libvpx / libwebrtc pattern)."""


class FakeSink:
    ready = True
    ssrc = 0xABCD
    payload_type = 100
    mime_type = "video/vp8"
    clock_rate = 90000
    mid = "3"
    mid_id = 9
    abs_send_time_id = 0

    def __init__(self, kind: str = "video") -> None:
        if kind == "audio":
            self.mime_type = "audio/opus"
            self.clock_rate = 48000
        self.packets: list[bytes] = []
        self.sr: tuple[int, int] | None = None

    def send_rtp(self, header: bytearray, payload: bytes, rtp_timestamp: int, ntp_timestamp: int) -> bool:
        self.packets.append(bytes(header) + payload)  # the header is reused: a copy
        self.sr = (rtp_timestamp, ntp_timestamp)
        return True


def vp8(seq: int, ts: int, *, pid: int, tid: int, sync: bool = False, key: bool = False, start: bool = True,
        body: bytes = b"\x5a" * 40, ssrc: int = PUB_SSRC, marker: int = 1, ext: bytes = b"") -> bytes:
    """An RTP packet with a VP8 payload descriptor (X, I 15-bit, L, T) and a VP8 payload."""
    desc = bytes([0x80 | (0x10 if start else 0), 0x80 | 0x40 | 0x20, 0x80 | (pid >> 8), pid & 0xFF, 7,
                  (tid << 6) | (0x20 if sync else 0)])
    head = (0x90 if ext else 0x80, (marker << 7) | 96)
    vp8_header = bytes([0x00 if key else 0x01]) if start else b""
    return struct.pack("!BBHII", *head, seq, ts, ssrc) + ext + desc + vp8_header + body


def rewritten(raw: bytes) -> Packet:
    packet = parse(raw)
    assert packet is not None
    return packet


def feed(forwarder: Forwarder, buffer: RetransmitBuffer, raw: bytes) -> Packet:
    packet = parse(raw, 0x1234_5678_0000_0000)
    assert packet is not None and read_vp8(packet)
    buffer.add(packet)
    forwarder.forward(packet)
    return packet


def stream(frames: int, *, first_seq: int = 65530, first_pid: int = 32760, packets_per_frame: int = 2) -> list[bytes]:
    """``frames`` L1T3 frames (the first a key frame), sequence numbers and picture ids wrapping around."""
    out = []
    seq = first_seq
    for n in range(frames):
        tid = L1T3[n % 4]
        for i in range(packets_per_frame):
            out.append(vp8(seq & 0xFFFF, 1000 + 3000 * n, pid=(first_pid + n) & 0x7FFF, tid=tid,
                           sync=tid > 0 and n % 4 in (1, 2), key=n == 0, start=i == 0,
                           marker=int(i == packets_per_frame - 1)))
            seq += 1
    return out


def out_fields(sink: FakeSink) -> list[Packet]:
    return [rewritten(p) for p in sink.packets]


def test_parse_reads_the_descriptor_outside_the_payload_it_keeps_untouched() -> None:
    ext = b"\xbe\xde\x00\x01\x10\xff\x00\x00"
    raw = vp8(7, 90000, pid=300, tid=2, sync=True, key=False, ext=ext)
    packet = rewritten(raw)
    assert (packet.seq, packet.ts, packet.ssrc, packet.pt, packet.marker) == (7, 90000, PUB_SSRC, 96, 1)
    assert read_vp8(packet)
    assert (packet.start, packet.key, packet.tid, packet.sync) == (True, False, 2, True)
    assert picture_id(packet.payload) == 300
    assert raw.endswith(packet.payload)
    assert parse(b"\x80\x60") is None and parse(b"\x00" * 20) is None


def test_rewrites_only_the_header_and_keeps_the_payload_byte_for_byte() -> None:
    sink = FakeSink()
    forwarder, buffer = Forwarder("video", sink), RetransmitBuffer()
    sent = [feed(forwarder, buffer, raw) for raw in stream(8)]
    outs = out_fields(sink)
    assert len(outs) == len(sent)
    for packet, out in zip(sent, outs, strict=True):
        assert out.ssrc == FakeSink.ssrc and out.pt == FakeSink.payload_type
        assert out.payload == packet.payload  # E2EE: the SFrame ciphertext and its clear header are untouched
        assert out.marker == packet.marker
    seqs = [o.seq for o in outs]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    # the subscriber's negotiated mid extension, nothing of the publisher's
    assert sink.packets[0][12:16] == b"\xbe\xde\x00\x01" and sink.packets[0][16:18] == b"\x90" + b"3"


@pytest.mark.parametrize(("mid", "elements"), [
    ("3", b"\x32\x12\x34\x56\x90\x33\x00\x00"),  # abs-send-time (id 3, 3 bytes), mid (id 9, 1 byte), padding
    ("", b"\x32\x12\x34\x56"),  # abs-send-time alone: one word
    ("video", b"\x32\x12\x34\x56\x94video\x00\x00"),
])
def test_abs_send_time_is_written_per_packet_with_the_negotiated_mid(mid: str, elements: bytes) -> None:
    sink = FakeSink()
    sink.abs_send_time_id, sink.mid = 3, mid  # type: ignore[misc]
    forwarder, buffer = Forwarder("video", sink), RetransmitBuffer()
    for n, raw in enumerate(stream(3)):
        packet = parse(raw, (0x123456 + n) << 14)  # abs-send-time: bits 14..37 of the 64-bit NTP time
        assert packet is not None and read_vp8(packet)
        buffer.add(packet)
        forwarder.forward(packet)
    words = len(elements) // 4
    for n, out in enumerate(sink.packets):
        assert out[0] == 0x90 and out[12:16] == b"\xbe\xde" + words.to_bytes(2, "big")
        assert out[16:16 + len(elements)] == elements[:1] + (0x123456 + n).to_bytes(3, "big") + elements[4:]
        assert out[16 + len(elements):] == parse(stream(3)[n]).payload  # type: ignore[union-attr]


def test_waits_for_a_key_frame_then_numbers_on_across_a_layer_switch() -> None:
    sink = FakeSink()
    forwarder, buffer = Forwarder("video", sink), RetransmitBuffer()
    raws = stream(40)
    for raw in raws[2:8]:  # joined mid-frame: nothing until a key frame
        feed(forwarder, buffer, raw)
    assert sink.packets == [] and forwarder.dropped == 6
    forwarder.reset()
    for raw in raws[:16]:  # 8 frames, all layers
        feed(forwarder, buffer, raw)
    forwarder.max_layer = 0  # down: at the next frame start
    for raw in raws[16:48]:
        feed(forwarder, buffer, raw)
    forwarder.max_layer = 2  # up: only at a layer-sync frame (then stepwise) or a key frame
    for raw in raws[48:]:
        feed(forwarder, buffer, raw)
    outs = out_fields(sink)
    seqs = [o.seq for o in outs]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), seqs  # no gap to NACK
    pids = [picture_id(o.payload) for o in outs if o.payload[0] & 0x10]
    assert all((b - a) & 0x7FFF == 1 for a, b in itertools.pairwise(pids)), pids  # no missing picture
    tids = []
    for o in outs:
        assert read_vp8(o)
        if o.start:
            tids.append(o.tid)
    assert tids[:8] == [0, 2, 1, 2] * 2
    assert tids[8:12] == [0] * 4  # 16 frames at the base layer only (one in four)
    assert set(tids[12:]) == {0, 1, 2}
    assert forwarder.layer == 2 and forwarder.layer_switches >= 2
    starts = [o.ts for o in outs if o.start]
    assert all(0 < (b - a) & 0xFFFFFFFF <= 4 * 3000 and (b - a) % 3000 == 0
               for a, b in itertools.pairwise(starts))  # the publisher's timing, one offset


def test_a_new_source_continues_the_numbering_on_its_key_frame() -> None:
    sink = FakeSink()
    forwarder, buffer = Forwarder("video", sink), RetransmitBuffer()
    for raw in stream(4):
        feed(forwarder, buffer, raw)
    last = out_fields(sink)[-1]
    forwarder.reset()  # the slot now carries another member
    other = [vp8(500 + i, 77_000 + 3000 * (i // 2), pid=9 + i // 2, tid=0, key=i == 0, start=i % 2 == 0,
                 ssrc=0x2222) for i in range(4)]
    for raw in other:
        feed(forwarder, buffer, raw)
    outs = out_fields(sink)[8:]
    assert [o.seq for o in outs] == [(last.seq + 1 + i) & 0xFFFF for i in range(4)]
    assert all(o.ssrc == FakeSink.ssrc for o in outs)
    assert ((outs[0].ts - last.ts) & 0xFFFFFFFF) < 0x80000000  # time goes on
    assert picture_id(outs[0].payload) == (picture_id(last.payload) + 1) & 0x7FFF


def test_nack_is_served_from_the_buffer_and_never_reaches_the_publisher() -> None:
    sink = FakeSink()
    forwarder, buffer = Forwarder("video", sink), RetransmitBuffer()
    for raw in stream(20):
        feed(forwarder, buffer, raw)
    first = list(sink.packets)
    lost = [rewritten(first[5]).seq, rewritten(first[17]).seq]
    missed = forwarder.nack([*lost, (rewritten(first[0]).seq - 50) & 0xFFFF], buffer)
    assert missed == 1 and forwarder.retransmitted == 2 and forwarder.nack_missed == 1
    assert sink.packets[-2:] == [first[5], first[17]]  # the very same packets again


def test_only_numbers_sent_to_the_subscriber_count_as_lost() -> None:
    """aiortc's receiver, given a new slot's packets before it applied the answer naming them, NACKs the gap between
    two streams' numbers: 128 numbers this subscriber was never sent. They are no loss on its link (counted as loss,
    they paused the new publisher's video to it)."""
    from server.sfu.worker import RtpSlot

    sink = FakeSink()
    forwarder, buffer = Forwarder("video", sink), RetransmitBuffer()
    for raw in stream(30):
        feed(forwarder, buffer, raw)
    sent = [rewritten(raw).seq for raw in sink.packets]
    assert all(forwarder.sent(seq) for seq in sent)
    never = [(sent[0] - i) & 0xFFFF for i in range(1, 129)]  # the 128 numbers before the slot's first packet
    assert not any(forwarder.sent(seq) for seq in never)
    slot = RtpSlot("video", "3", 0, forwarder)
    slot.on_feedback("nack", [*never, sent[10], sent[40]])
    assert slot.nacks == 130  # every NACKed number is feedback received...
    assert slot.chooser.nacked == 2  # ... only the two it was sent are losses


def test_nack_after_a_layer_switch_maps_back_to_the_right_packet() -> None:
    sink = FakeSink()
    forwarder, buffer = Forwarder("video", sink), RetransmitBuffer()
    raws = stream(24)
    for raw in raws[:8]:
        feed(forwarder, buffer, raw)
    forwarder.max_layer = 0
    for raw in raws[8:]:
        feed(forwarder, buffer, raw)
    first = list(sink.packets)
    target = rewritten(first[-1])
    assert forwarder.nack([target.seq], buffer) == 0
    assert sink.packets[-1] == first[-1]
    # older than the history: not served (the subscriber asks for a key frame instead)
    for i in range(HISTORY):
        buffer.add(Packet(20000 + i, 0, 0, 96, PUB_SSRC, b"", False, 0))
    assert forwarder.nack([target.seq], buffer) == 1


def test_paused_video_sends_nothing_and_resumes_on_a_key_frame() -> None:
    sink = FakeSink()
    forwarder, buffer = Forwarder("video", sink), RetransmitBuffer()
    raws = stream(16)
    for raw in raws[:8]:
        feed(forwarder, buffer, raw)
    forwarder.max_layer = PAUSED
    for raw in raws[8:]:
        feed(forwarder, buffer, raw)
    assert len(sink.packets) == 8
    forwarder.max_layer = 2
    key = vp8(102, 1_006_000, pid=7, tid=0, key=True)
    feed(forwarder, buffer, vp8(101, 1_003_000, pid=6, tid=2))
    assert len(sink.packets) == 8
    feed(forwarder, buffer, key)
    outs = out_fields(sink)
    assert len(outs) == 9 and (outs[8].seq - outs[7].seq) & 0xFFFF == 1


def test_audio_is_forwarded_whatever_the_video_layer() -> None:
    sink = FakeSink("audio")
    forwarder = Forwarder("audio", sink)
    forwarder.max_layer = PAUSED  # pausing concerns video only
    for i in range(5):
        raw = struct.pack("!BBHII", 0x80, 111, 10 + i, 960 * i, 0x3333) + b"\x78" + b"\x01" * 60
        packet = parse(raw)
        assert packet is not None
        forwarder.forward(packet)
    assert len(sink.packets) == 5 and all(p.endswith(b"\x78" + b"\x01" * 60) for p in sink.packets)


def test_a_subscriber_that_negotiated_another_codec_gets_nothing() -> None:
    sink = FakeSink()
    sink.mime_type = "video/h264"
    forwarder, buffer = Forwarder("video", sink), RetransmitBuffer()
    for raw in stream(4):
        feed(forwarder, buffer, raw)
    assert sink.packets == [] and forwarder.dropped == 8


class FormerForwarder(Forwarder):
    """The former per-packet output path, kept as the reference: a new header and extension block joined to the
    payload for every packet (``_HEAD.pack`` + ``b"".join``), handed to ``sink.send`` whole."""

    def _former_ext(self) -> tuple[bytes, bytes, bool]:
        sink = self.sink
        mid_body = b""
        if 0 < sink.mid_id < 15 and sink.mid:
            mid = sink.mid.encode()[:16]
            mid_body = bytes([(sink.mid_id << 4) | (len(mid) - 1)]) + mid
        abs_id = sink.abs_send_time_id
        if 0 < abs_id < 15:
            tail = mid_body + b"\x00" * (-(4 + len(mid_body)) % 4)
            return b"\xbe\xde" + struct.pack("!H", (4 + len(tail)) // 4) + bytes([(abs_id << 4) | 2]), tail, True
        body = mid_body + b"\x00" * (-len(mid_body) % 4)
        return (b"\xbe\xde" + struct.pack("!H", len(body) // 4) + body if body else b""), b"", False

    def _send(self, packet: Packet, out_seq: int, out_ts: int, pid_off: int) -> None:
        sink = self.sink
        head_ext, tail_ext, abs_time = self._former_ext()
        payload = packet.payload
        if pid_off and self.kind == "video" and payload and payload[0] & 0x80:
            payload = self._rewrite_picture_id(payload, pid_off)
        head = struct.pack("!BBHII", 0x90 if head_ext else 0x80, (packet.marker << 7) | sink.payload_type, out_seq,
                           out_ts, sink.ssrc)
        if abs_time:
            data = b"".join((head, head_ext, ((packet.ntp >> 14) & 0x00FFFFFF).to_bytes(3, "big"), tail_ext,
                             payload))
        else:
            data = head + head_ext + payload
        sink.packets.append(data)  # type: ignore[attr-defined]
        self.sent_bytes += len(data)


@pytest.mark.parametrize(("mid", "mid_id", "abs_id"), [
    ("3", 9, 0), ("3", 9, 3), ("", 0, 3), ("video", 9, 3), ("a-sixteen-chars!-and-more", 1, 14), ("", 0, 0),
])
@pytest.mark.parametrize("kind", ["video", "audio"])
def test_in_place_header_is_byte_identical_to_the_former_path(kind: str, mid: str, mid_id: int, abs_id: int) -> None:
    """The header template rewritten in place gives, packet for packet, the bytes the former path built: across a
    layer switch (picture ids rewritten), a source switch, marker bits, sequence and timestamp wrap-around,
    every abs-send-time value and NACK retransmissions."""
    sinks = (FakeSink(kind), FakeSink(kind))
    for sink in sinks:
        sink.mid, sink.mid_id, sink.abs_send_time_id = mid, mid_id, abs_id  # type: ignore[misc]
    now = [100.0]  # one clock for both: a source switch's timestamp gap comes from the time between packets
    new, former = Forwarder(kind, sinks[0], clock=lambda: now[0]), FormerForwarder(kind, sinks[1], clock=lambda: now[0])
    for forwarder in (new, former):
        forwarder.last_out_seq, forwarder.last_out_ts = 0xFFF0, 0xFFFF_F000  # both wrap around
    buffer = RetransmitBuffer()
    if kind == "video":
        raws = stream(30, packets_per_frame=3)
        raws += [vp8(900 + i, 5_000_000 + 3000 * (i // 2), pid=0x7FFE + i // 2, tid=0, key=i == 0, start=i % 2 == 0,
                     ssrc=0x2222, marker=i % 2) for i in range(8)]
    else:
        raws = [struct.pack("!BBHII", 0x80, (i % 2) << 7 | 111, (65530 + i) & 0xFFFF, (0xFFFFF000 + 960 * i)
                            & 0xFFFFFFFF, 0x3333) + bytes([i]) * (20 + i) for i in range(24)]
    for n, raw in enumerate(raws):
        if n == 30:
            for forwarder in (new, former):
                forwarder.max_layer = 0  # drop layers 1 and 2: picture ids rewritten from here
        if n == 90:
            for forwarder in (new, former):
                forwarder.reset()  # another source, on its key frame
        packet = parse(raw, (0x0123_4567_89AB_CDEF * (n + 1)) & 0xFFFF_FFFF_FFFF_FFFF)
        assert packet is not None and (kind == "audio" or read_vp8(packet))
        buffer.add(packet)
        now[0] += 0.011
        for forwarder in (new, former):
            forwarder.forward(packet)
    lost = [rewritten(p).seq for p in sinks[1].packets[::7]]
    assert new.nack(lost, buffer) == former.nack(lost, buffer)
    assert len(sinks[0].packets) > (50 if kind == "video" else 20)
    assert sinks[0].packets == sinks[1].packets
    assert new.sent_bytes == former.sent_bytes == sum(map(len, sinks[0].packets))
    if kind == "video":
        assert new.pid_off != 0  # the picture-id rewrite was exercised
    if abs_id:
        assert len({p[17:20] for p in sinks[0].packets}) > 10  # so was abs-send-time
