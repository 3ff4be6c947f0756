"""The safety check and group manners between aiortc participants (peer/manners.py) through the real server,
behind a recording relay: the answers reach the therapist only and the relay never carries them in the clear; a
hand shows to everyone; mute, ask to unmute and spotlight count only from the therapist of the signed roster.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/e2ee/test_manners_peer.py'
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.media import SyntheticAudioTrack
from peer.participant import Participant
from tests.e2ee.test_aiortc_e2ee import admit, e2ee_links, switched
from tools.hostile import HostileProxy

pytestmark = [pytest.mark.e2ee, pytest.mark.integration]

PLANTED_WHERE = "Strada Planted-9c1e 14, Cluj"
PLANTED_CONTACT = "Planted-Contact-b7d2"


async def test_safety_answers_and_group_manners(alcove: Any) -> None:
    server = await HostileProxy(alcove.url, record=True).start()
    joined: list[Participant] = []
    try:
        ik = ec.generate_private_key(ec.SECP256R1())
        room = await alcove.create_room(type="group", clients=2, topology="mesh")
        t_link, c_links = e2ee_links(room, ik)
        t = await Participant.join(server.url, t_link, name="Dr. T", therapist_ik=ik, media=False)
        joined.append(t)
        c1 = await Participant.join(server.url, c_links[0], name="Ana Popescu", media=False)
        joined.append(c1)
        c2 = await Participant.join(server.url, c_links[1], name="Bogdan Ionescu", media=False)
        joined.append(c2)
        for c in (c1, c2):
            await admit(t, c)
        await switched(t, c1, c2)

        # the safety check: privately to the therapist, end to end encrypted
        assert c1.answer_safety(PLANTED_WHERE, PLANTED_CONTACT, "+40 700 000 001", wait_minutes=10)
        await t.wait_until(lambda: c1.pid in t.manners.safety_answers, 5, "the safety answers")
        answers = t.manners.safety_answers[c1.pid]
        assert answers["where"] == PLANTED_WHERE and answers["plan"] == {"kind": "wait", "minutes": 10}
        # a malformed one is ignored, and a client never takes another's answers
        assert c2.send_app({"k": "safety", "where": ""}, t.pid)
        assert c2.answer_safety("Somewhere", "X", "112", call_back="0700 000 002")
        await t.wait_until(lambda: c2.pid in t.manners.safety_answers, 5, "c2's answers")
        assert t.manners.safety_answers[c2.pid]["plan"] == {"kind": "call-back", "phone": "0700 000 002"}

        # raise and lower a hand: everyone sees it
        assert c1.raise_hand()
        await t.wait_until(lambda: c1.pid in t.manners.hands, 5, "hand at the therapist")
        await c2.wait_until(lambda: c1.pid in c2.manners.hands, 5, "hand at the other member")
        assert c1.raise_hand(False)
        await t.wait_until(lambda: c1.pid not in t.manners.hands, 5, "hand lowered")

        # a member cannot mute another (it is not the therapist of the signed roster)
        assert c2.send_app({"k": "mute"})
        await c1.wait_app(lambda a: a[0] == c2.pid and a[1].get("k") == "mute")
        assert not c1.manners.muted
        # the therapist mutes one member and asks it to unmute; the other member is untouched
        assert t.mute_member(c1.pid)
        await c1.wait_until(lambda: c1.manners.muted, 5, "muted by the therapist")
        assert t.ask_unmute(c1.pid)
        await c1.wait_until(lambda: c1.manners.unmute_asks == 1, 5, "asked to unmute")
        c1.unmute()
        assert not c1.manners.muted and not c2.manners.muted and c2.manners.unmute_asks == 0

        # spotlight: every page knows the one speaker
        assert t.set_spotlight(c2.pid)
        for c in (c1, c2):
            await c.wait_until(lambda c=c: c.manners.spotlight == c2.pid, 5, "spotlight")
        assert t.set_spotlight(None)
        await c1.wait_until(lambda: c1.manners.spotlight is None, 5, "spotlight off")

        await t.wait_until(lambda: len(server.apps_seen) >= 12, 5, "relayed")
        assert not any(c1.pid in a and a[1].get("k") == "safety" for a in c2.app_messages)
        assert not any(a[1].get("k") == "safety" for a in c2.app_messages)
        assert server.recorded and not any(s in frame for frame in server.recorded
                                           for s in (PLANTED_WHERE, PLANTED_CONTACT, "Planted"))
        assert [r for p in (t, c1, c2) for r in p.refusals] == []
    finally:
        for p in joined:
            await p.close()
        await server.stop()


async def test_a_muted_audio_track_sends_silence() -> None:
    track = SyntheticAudioTrack()
    loud = bytes((await track.recv()).planes[0])
    track.muted = True
    quiet = bytes((await track.recv()).planes[0])
    track.stop()
    assert any(loud) and not any(quiet)
