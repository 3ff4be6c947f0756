"""The Python publisher's VP8 temporal layers (rtc.aiortc_hooks.TemporalVp8Encoder, L1T3 as browsers send).

The layers are real: a receiver that gets only the base layer (or layers 0-1), as the SFU forwards to a weak
subscriber, decodes every frame it gets to exactly the picture a receiver of all layers decodes."""

from __future__ import annotations

import fractions
import itertools
import os
import struct

import av
import pytest
from aiortc.codecs.vpx import vp8_depayload

from rtc.aiortc_hooks import L1T3_LAYERS, TemporalVp8Encoder
from server.sfu.rtp import parse, picture_id, read_vp8

pytestmark = pytest.mark.sfu

W, H = 320, 240


def frames(n: int) -> list[av.VideoFrame]:
    """A moving bar over a noisy half: every frame differs, so each one predicts from its references."""
    out = []
    for i in range(n):
        luma = bytearray([100]) * (W * H)
        for row in range(H // 2):
            start = row * W + (i * 8) % (W - 40)
            luma[start:start + 40] = b"\xc8" * 40
        luma[W * H // 2:] = bytes(100 + (b & 15) for b in os.urandom(W * H // 2))
        frame = av.VideoFrame(W, H, "yuv420p")
        frame.planes[0].update(bytes(luma))
        frame.planes[1].update(bytes([128]) * (W * H // 4))
        frame.planes[2].update(bytes([128]) * (W * H // 4))
        frame.pts = i * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        out.append(frame)
    return out


def encode(n: int, keyframes: frozenset[int] = frozenset()) -> list[list[bytes]]:
    encoder = TemporalVp8Encoder()
    return [encoder.encode(frame, force_keyframe=i in keyframes)[0] for i, frame in enumerate(frames(n))]


def as_read_by_the_sfu(payload: bytes, seq: int):
    packet = parse(struct.pack("!BBHII", 0x80, 96, seq, 0, 1) + payload)
    assert packet is not None and read_vp8(packet)
    return packet


def test_the_descriptor_carries_the_l1t3_layers_as_browsers_write_them() -> None:
    encoded = encode(12, keyframes=frozenset({6}))
    first = [as_read_by_the_sfu(payloads[0], i) for i, payloads in enumerate(encoded)]
    assert [p.key for p in first] == [i in (0, 6) for i in range(12)]
    # a forced key frame starts the cycle again, on layer 0
    assert [p.tid for p in first] == [0, 2, 1, 2, 0, 2, 0, 2, 1, 2, 0, 2]
    assert [p.sync for p in first] == [False, True, True, False, False, True,
                                       False, True, True, False, False, True]
    pids = [picture_id(payloads[0]) for payloads in encoded]
    assert all((b - a) & 0x7FFF == 1 for a, b in itertools.pairwise(pids))
    tl0 = [payloads[0][4] for payloads in encoded]  # X, I|L|T, 15-bit picture id, TL0PICIDX
    assert [(b - a) & 0xFF for a, b in itertools.pairwise(tl0)] == [
        1 if tid == 0 else 0 for tid in (p.tid for p in first[1:])]
    for payloads in encoded:  # every packet of a frame says the same layer; only the first starts it
        packets = [as_read_by_the_sfu(p, 0) for p in payloads]
        assert {p.tid for p in packets} == {packets[0].tid}
        assert [p.start for p in packets] == [True] + [False] * (len(packets) - 1)


@pytest.mark.parametrize("top", [0, 1])
def test_a_subscriber_given_the_lower_layers_decodes_the_same_pictures(top: int) -> None:
    encoded = encode(3 * len(L1T3_LAYERS) * 4, keyframes=frozenset({21}))
    layers = [as_read_by_the_sfu(payloads[0], 0).tid for payloads in encoded]
    whole = [b"".join(vp8_depayload(p) for p in payloads) for payloads in encoded]

    def decode(keep: list[bool]) -> dict[int, bytes]:
        decoder = av.CodecContext.create("libvpx", "r")
        pictures = {}
        for i, frame in enumerate(whole):
            if keep[i]:
                for picture in decoder.decode(av.Packet(frame)):
                    pictures[i] = bytes(picture.planes[0])
        return pictures

    everything = decode([True] * len(whole))
    lower = decode([tid <= top for tid in layers])
    assert len(everything) == len(whole)
    assert sorted(lower) == [i for i, tid in enumerate(layers) if tid <= top]
    assert len(lower) < len(whole)
    assert {i: everything[i] for i in lower} == lower
