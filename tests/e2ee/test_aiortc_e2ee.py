"""E2EE between aiortc participants through the real server: keys, SAS, SFrame media, rekeying.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/e2ee/test_aiortc_e2ee.py'
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.e2ee import ClientKeys, TherapistKeys, b64e, message_kind, pub_raw, tk_of
from peer.participant import Participant
from rtc import aiortc_hooks as hooks
from signaling import messages as m
from tools.wrong_key import keystate_factory

pytestmark = [pytest.mark.e2ee, pytest.mark.media, pytest.mark.integration,
              pytest.mark.usefixtures("media_namespace")]

# A VP8 keyframe-shaped frame (10 clear bytes, then payload) to encrypt by hand.
SAMPLE_VP8 = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + os.urandom(600)


def e2ee_links(room: dict[str, Any], ik: ec.EllipticCurvePrivateKey) -> tuple[str, list[str]]:
    """The invite links as the therapist UI makes them: ``s`` for everyone, ``tk`` for the clients."""
    s = b64e(os.urandom(32))
    tk = b64e(tk_of(pub_raw(ik)))
    return room["therapist_link"] + f"&s={s}", [link + f"&s={s}&tk={tk}" for link in room["client_links"]]


async def e2ee_room(alcove: Any, join: Any, clients: int = 1, wrong: tuple[int, ...] = ()
                    ) -> tuple[Participant, list[Participant]]:
    ik = ec.generate_private_key(ec.SECP256R1())
    room = await alcove.create_room(type="individual" if clients == 1 else "couple", clients=clients)
    t_link, c_links = e2ee_links(room, ik)
    t = await join(t_link, name="Dr. T", therapist_ik=ik)
    assert t.e2ee and isinstance(t.keys, TherapistKeys)
    cs = []
    for i, link in enumerate(c_links):
        c = await join(link, name=f"C{i}", **keystate_factory(i in wrong))
        assert c.e2ee and isinstance(c.keys, ClientKeys)
        cs.append(c)
    return t, cs


async def admit(t: Participant, c: Participant) -> None:
    await t.wait_until(lambda: c.pid in t.intros, 5, "intro verified")
    await t.admit(c.pid)
    await c.wait_until(lambda: c.status == "admitted", 5, "admitted")
    await t.wait_until(lambda: c.pid in t.sas_of, 5, "reveal")


async def switched(t: Participant, *cs: Participant, after: int = 0) -> int:
    """Wait until the therapist and ``cs`` all send with one epoch newer than ``after``; returns it."""
    keys = t.keys
    assert isinstance(keys, TherapistKeys)
    pids = {c.pid for c in cs}
    await t.wait_until(lambda: keys.current is not None and keys.current.epoch > after
                       and pids <= set(keys.current.roster), 5, "switched")
    assert keys.current is not None
    epoch = keys.current.epoch
    for c in cs:
        await c.wait_until(lambda c=c: c.keystate is not None and c.keystate.send_epoch == epoch, 5,  # type: ignore[misc]
                           "client switched")
    return epoch


async def test_e2ee_call_frames_both_ways_and_equal_sas(alcove: Any, join: Any) -> None:
    t, (c,) = await e2ee_room(alcove, join)
    await admit(t, c)
    await switched(t, c)
    await c.wait_frames(t.pid, video=11, audio=10, timeout=15)
    await t.wait_frames(c.pid, video=11, audio=10, timeout=15)
    assert c.sas is not None and t.sas_of[c.pid] == c.sas
    assert t.security_failures == [] and c.security_failures == [] and t.failures == [] and c.failures == []
    # the media really went through SFrame, both ways, and every sent frame was protected
    for p, peer in ((t, c), (c, t)):
        link = p.links[peer.pid]
        assert link.pc.connectionState == "connected"
        video_sender = next(s for s in link.pc.getSenders() if s.kind == "video")
        assert hooks.sender_stats(video_sender).frames_transformed > 10
        assert p.keystate is not None and p.keystate.counters["decrypted"] > 20
        assert p.keystate.counters["encrypted"] > 20


AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


class Seen(list[tuple[int, list[int]]]):
    """(payload type, header-extension ids) per packet, and ``sizes``: payload type -> packet lengths."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[int, list[int]] = {}


def watch_rtp(pc: Any) -> Seen:
    """Every RTP packet ``pc`` receives after now, as (payload type, header-extension ids), read from the
    packet's clear header as a relay on the path sees it, and the packets' sizes."""
    from aiortc.rtp import unpack_header_extensions

    seen = Seen()
    transport = next(t.receiver.transport for t in pc.getTransceivers())
    original = transport._handle_rtp_data

    async def observe(data: bytes, arrival_time_ms: int) -> None:
        ids: list[int] = []
        if data[0] & 0x10:  # X bit
            at = 12 + 4 * (data[0] & 0x0F)
            profile = int.from_bytes(data[at:at + 2], "big")
            length = int.from_bytes(data[at + 2:at + 4], "big") * 4
            ids = [x_id for x_id, _ in unpack_header_extensions(profile, data[at + 4:at + 4 + length])]
        seen.append((data[1] & 0x7F, ids))
        seen.sizes.setdefault(data[1] & 0x7F, []).append(len(data))
        await original(data, arrival_time_ms)

    transport._handle_rtp_data = observe
    return seen


async def test_e2ee_negotiates_no_audio_level_and_opus_cbr_and_packets_carry_none(alcove: Any, join: Any) -> None:
    from rtc.codecs import TRANSPORT_HEADER_EXTENSIONS

    t, (c,) = await e2ee_room(alcove, join)
    await admit(t, c)
    await switched(t, c)
    await t.wait_until(lambda: c.pid in t.links and t.links[c.pid].pc.remoteDescription is not None, 10, "link")
    pc = t.links[c.pid].pc
    packets = watch_rtp(pc)
    await t.wait_frames(c.pid, video=11, audio=10, timeout=15)
    for sdp in (pc.localDescription.sdp, pc.remoteDescription.sdp):
        extmaps = {int(line[9:].split(" ")[0].split("/")[0]): line.split(" ", 1)[1]
                   for line in sdp.splitlines() if line.startswith("a=extmap:")}
        assert AUDIO_LEVEL not in extmaps.values() and set(extmaps.values()) <= TRANSPORT_HEADER_EXTENSIONS
        opus = [line.split(":", 1)[1].split(" ")[0] for line in sdp.splitlines() if "opus/48000" in line.lower()]
        assert opus and all(f"a=fmtp:{pt} cbr=1" in sdp for pt in opus), sdp
    opus_pts = {int(pt) for pt in opus}
    audio = [ids for pt, ids in packets if pt in opus_pts]
    assert len(audio) >= 10
    allowed = {i for i, uri in extmaps.items() if uri in TRANSPORT_HEADER_EXTENSIONS}
    assert all(set(ids) <= allowed for ids in audio), audio[:5]


async def test_wrong_key_decodes_nothing_while_the_others_go_on(alcove: Any, join: Any) -> None:
    t, (a, b) = await e2ee_room(alcove, join, clients=2, wrong=(1,))
    await admit(t, a)
    await admit(t, b)
    await switched(t, a, b)
    for x, y in ((a, t), (t, a)):
        await x.wait_frames(y.pid, video=11, audio=10, timeout=15)
    await b.wait_until(lambda: b.decrypt_failures() > 30, 10, "failing to decrypt")
    await asyncio.sleep(1.0)
    assert b.frames_from(t.pid) == {"video": 0, "audio": 0}
    assert b.frames_from(a.pid) == {"video": 0, "audio": 0}
    assert t.frames_from(b.pid) == {"video": 0, "audio": 0}  # its frames are garbage to everyone else too
    assert b.links[t.pid].pc.connectionState == "connected"  # DTLS is fine; only the SFrame key is wrong
    before = t.frames_from(a.pid)["video"], a.frames_from(t.pid)["video"]
    await asyncio.sleep(1.0)
    assert t.frames_from(a.pid)["video"] > before[0] + 5 and a.frames_from(t.pid)["video"] > before[1] + 5


async def test_removed_client_stops_decoding_remaining_goes_on_and_replay_ignored(alcove: Any, join: Any) -> None:
    t, (a, b) = await e2ee_room(alcove, join, clients=2)
    await admit(t, a)
    first = await switched(t, a)
    await admit(t, b)
    second = await switched(t, a, b, after=first)
    for x in (a, b):
        await x.wait_frames(t.pid, video=11, audio=5, timeout=15)
        await t.wait_frames(x.pid, video=11, audio=5, timeout=15)
    await a.wait_frames(b.pid, video=11, timeout=15)
    assert a.sas_of == {} and a.sas != b.sas

    # a replayed old epoch message is ignored (the server may replay anything)
    old = next(msg.data for msg in a.log if isinstance(msg, m.PeerKey) and message_kind(msg.data) == "epoch")
    assert a.keystate is not None
    a._on_message(m.PeerKey(from_=t.pid, data=old))
    assert a.ignored_epochs == 1 and a.keystate.send_epoch == second and a.security_failures == []

    # removal: a new epoch without b; b keeps every key it had, yet cannot read the new epoch
    assert b.keystate is not None
    b_keys = b.keystate
    await t.remove(b.pid)
    third = await switched(t, a, after=second)
    removed_at = asyncio.get_running_loop().time()
    frame = t.keystate.encrypt("video", SAMPLE_VP8) if t.keystate is not None else None
    assert frame is not None
    assert b_keys.decrypt_from("video", frame, t.pid) is None
    assert a.keystate.decrypt_from("video", frame, t.pid) == SAMPLE_VP8
    assert third in a.keystate.epochs() and third not in b_keys.epochs()
    frozen = b.frames_from(t.pid), b.frames_from(a.pid)
    await asyncio.sleep(max(0.0, 3.0 - (asyncio.get_running_loop().time() - removed_at)))
    assert (b.frames_from(t.pid), b.frames_from(a.pid)) == frozen
    going = a.frames_from(t.pid)["video"]
    await asyncio.sleep(1.0)
    assert a.frames_from(t.pid)["video"] > going + 5
    assert t.security_failures == [] and a.security_failures == []


async def test_late_joiner_cannot_decrypt_earlier_frames(alcove: Any, join: Any) -> None:
    t, (a, b) = await e2ee_room(alcove, join, clients=2)
    await admit(t, a)
    first = await switched(t, a)
    await a.wait_frames(t.pid, video=5, timeout=15)
    # capture a real protected frame off the wire path (the therapist's send transform) and one made by hand
    captured: list[bytes] = []
    sender = next(s for s in t.links[a.pid].pc.getSenders() if s.kind == "video")

    def tap(kind: str, data: bytes) -> bytes | None:
        out = t.e2ee_glue.encrypt(kind, data)
        if out is not None and len(captured) < 3:
            captured.append(out)
        return out

    hooks.set_sender_transform(sender, tap)
    await t.wait_until(lambda: len(captured) >= 3, 5, "captured frames")
    captured.append(t.keystate.encrypt("video", SAMPLE_VP8) if t.keystate is not None else b"")
    await admit(t, b)
    await switched(t, a, b, after=first)
    await b.wait_frames(t.pid, video=5, timeout=15)
    assert b.keystate is not None and first not in b.keystate.epochs()
    failed = b.keystate.counters["failed"]
    for frame in captured:
        assert b.keystate.decrypt_from("video", frame, t.pid) is None
    assert b.keystate.counters["failed"] == failed + len(captured)
