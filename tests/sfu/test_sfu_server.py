"""SFU rooms end to end: aiortc participants (E2EE on) through the real server and its forwarding SFU.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/sfu/test_sfu_server.py'
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.participant import Participant
from tests.conftest import AlcoveServer
from tests.e2ee.test_aiortc_e2ee import admit, e2ee_links, switched
from tools.probe import run_probe
from tools.wrong_key import keystate_factory

pytestmark = [pytest.mark.sfu, pytest.mark.media, pytest.mark.integration]


@pytest.fixture
def sfu_server(sfu_alcove: AlcoveServer) -> AlcoveServer:
    return sfu_alcove


@pytest.fixture
async def family(sfu_server: AlcoveServer) -> AsyncIterator[Any]:
    """``await family(clients, wrong=())``: an E2EE family room (SFU), everyone admitted."""
    joined: list[Participant] = []

    async def make(clients: int = 3, wrong: tuple[int, ...] = ()) -> tuple[Participant, list[Participant]]:
        ik = ec.generate_private_key(ec.SECP256R1())
        room = await sfu_server.create_room(type="family", clients=clients)
        t_link, c_links = e2ee_links(room, ik)
        t = await Participant.join(sfu_server.url, t_link, name="Dr. T", therapist_ik=ik)
        joined.append(t)
        cs = []
        for i, link in enumerate(c_links):
            c = await Participant.join(sfu_server.url, link, name=f"C{i}", **keystate_factory(i in wrong))
            joined.append(c)
            cs.append(c)
        assert t.sfu_room and all(c.sfu_room for c in cs)
        for c in cs:
            await admit(t, c)
        await switched(t, *cs)
        return t, cs

    yield make
    for p in joined:
        await p.close()


async def everyone_decodes(ps: list[Participant], video: int = 11, audio: int = 10) -> None:
    for x in ps:
        for y in ps:
            if x is not y:
                await x.wait_frames(y.pid, video=video, audio=audio, timeout=25)


async def test_family_room_everyone_decodes_everyone_and_send_back_stops_media(family: Any,
                                                                                sfu_server: AlcoveServer) -> None:
    t, cs = await family(3)
    everyone = [t, *cs]
    await everyone_decodes(everyone)
    for p in everyone:
        assert p.links == {} and p.sfu is not None and p.sfu.pc.connectionState == "connected"
        assert p.security_failures == [] and p.failures == []
        assert p.keystate is not None and p.keystate.counters["decrypted"] > 50
    # the Python participants publish VP8 in three temporal layers (L1T3), readable by the SFU under SFrame
    stats = await sfu_server.hub.media.stats()
    published = {pid: peer["published"]["video"] for worker in stats.values() for room in worker["rooms"].values()
                 for pid, peer in room["peers"].items()}
    assert set(published) == {p.pid for p in everyone}
    assert all(all(size > 0 for size in v["layer_bytes"]) for v in published.values()), published
    gone, rest = cs[0], [t, *cs[1:]]
    await t.send_to_waiting(gone.pid)
    await gone.wait_until(lambda: gone.status == "waiting" and gone.sfu is None, 5, "back in the waiting room")
    await asyncio.sleep(1.0)
    frozen_in = {p.pid: gone.frames_from(p.pid) for p in rest}
    frozen_out = {p.pid: p.frames_from(gone.pid) for p in rest}
    before = {(x.pid, y.pid): x.frames_from(y.pid)["video"] for x in rest for y in rest if x is not y}
    await asyncio.sleep(1.5)
    assert {p.pid: gone.frames_from(p.pid) for p in rest} == frozen_in
    assert {p.pid: p.frames_from(gone.pid) for p in rest} == frozen_out
    for (a, b), n in before.items():
        x = next(p for p in rest if p.pid == a)
        assert x.frames_from(b)["video"] > n + 5, (a, b)


async def test_family_room_wrong_key_client_decodes_nothing(family: Any) -> None:
    t, cs = await family(3, wrong=(2,))
    bad, good = cs[2], [t, *cs[:2]]
    await everyone_decodes(good)
    await bad.wait_until(lambda: bad.decrypt_failures() > 50, 10, "failing to decrypt")
    for p in good:
        assert bad.frames_from(p.pid) == {"video": 0, "audio": 0}
        assert p.frames_from(bad.pid) == {"video": 0, "audio": 0}
    assert bad.sfu is not None and bad.sfu.pc.connectionState == "connected"


async def test_probe_group(sfu_server: AlcoveServer) -> None:
    # 3 s: the probe calls a pair stalled below 5 frames in its window, and twelve pairs in a 1 s window on a CI
    # machine busy with the browser suite once saw 2 frames on one pair (not a stall: the next second caught up)
    result = await run_probe(sfu_server.url, "group", duration=3.0, clients=3, admin_key=sfu_server.admin_key)
    assert result["ok"], result
    figures = result["figures"]
    assert figures["server_decoded_frames"] == 0
    for receiver, senders in figures["frames_by_peer"].items():
        assert len(senders) == 3 and all(n > 10 for n in senders.values()), (receiver, senders)


