"""Real aiortc peers through the real server: waiting room, admission, media both ways, send back, resume.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/integration -k participant'
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from peer.participant import Participant
from signaling import messages as m

pytestmark = [pytest.mark.media, pytest.mark.integration, pytest.mark.usefixtures("media_namespace")]


async def test_waiting_admit_frames_both_ways(alcove: Any, join: Any) -> None:
    room = await alcove.create_room(type="individual")
    therapist = await join(room["therapist_link"], name="Dr. T")
    client = await join(room["client_links"][0], name="Alex")
    assert therapist.role == "therapist" and client.role == "client"
    assert client.status == "waiting" and client.position == 1
    await therapist.wait_until(lambda: [q.name for q in therapist.queue] == ["Alex"], 5, "queue")
    await asyncio.sleep(0.3)
    # the waiting client has no peer connection and receives no media
    assert client.links == {} and therapist.links == {}
    assert not any(type(msg).__name__ == "Roster" for msg in client.log)

    await therapist.admit("Alex")
    await client.wait_until(lambda: client.status == "admitted", 5, "admitted")
    await client.wait_frames(therapist.pid, video=11, audio=10)
    await therapist.wait_frames(client.pid, video=11, audio=10)
    assert client.pid in therapist.roster and therapist.pid in client.roster
    link = therapist.links[client.pid]
    assert link.pc.connectionState == "connected"
    # the smaller pid offered
    assert link.offerer == (therapist.pid < client.pid)
    assert therapist.failures == [] and client.failures == []



async def admitted(alcove: Any, join: Any, type: str = "individual", clients: int = 1
                   ) -> tuple[dict[str, Any], Participant, list[Participant]]:
    room = await alcove.create_room(type=type, clients=clients)
    t = await join(room["therapist_link"], name="Dr. T")
    cs = []
    for i, link in enumerate(room["client_links"]):
        c = await join(link, name=f"C{i}")
        await t.wait_until(lambda c=c: any(q.pid == c.pid for q in t.queue), 5, "queued")
        await t.admit(c.pid)
        await c.wait_until(lambda c=c: c.status == "admitted", 5, "admitted")
        cs.append(c)
    return room, t, cs


async def test_send_back_to_waiting_stops_media_then_readmit(alcove: Any, join: Any) -> None:
    _, t, (c,) = await admitted(alcove, join)
    await c.wait_frames(t.pid, video=11)
    await t.wait_frames(c.pid, video=11)
    old_client_link, old_therapist_link = c.links[t.pid], t.links[c.pid]

    mark = c.mark()
    await t.send_to_waiting(c.pid)
    msg = await c.expect("waiting", after=mark)
    assert msg.reason == "sent-back"
    await c.wait_until(lambda: c.status == "waiting" and c.links == {}, 5, "back in the waiting room")
    await t.wait_until(lambda: c.pid not in t.links and [q.pid for q in t.queue] == [c.pid], 5, "queue")
    for link in (old_client_link, old_therapist_link):
        await c.wait_until(lambda link=link: link.pc.connectionState == "closed", 5, "pc closed")
    frozen = (old_client_link.frames(), old_therapist_link.frames())
    await asyncio.sleep(0.5)
    assert (old_client_link.frames(), old_therapist_link.frames()) == frozen

    await t.admit(c.pid)
    await c.wait_until(lambda: c.status == "admitted", 5)
    await c.wait_frames(t.pid, video=11)
    await t.wait_frames(c.pid, video=11)
    assert c.links[t.pid] is not old_client_link


async def test_therapist_drop_keeps_client_mesh_and_returns(alcove: Any, join: Any) -> None:
    _, t, (a, b) = await admitted(alcove, join, "couple", clients=2)
    for x, y in ((a, b), (b, a), (a, t), (t, a), (b, t), (t, b)):
        await x.wait_frames(y.pid, video=11)
    ab = a.links[b.pid]
    await t.drop_signaling()
    await a.wait_until(lambda: a.therapist == "reconnecting", 5)
    before = ab.frames()["video"]
    await a.wait_frames(b.pid, video=before + 15)
    assert a.links[b.pid] is ab and ab.pc.connectionState == "connected"
    welcome = await t.reconnect()
    assert welcome.status == "admitted" and welcome.role == "therapist"
    await a.wait_until(lambda: a.therapist == "present", 5)
    before = t.frames_from(a.pid)["video"]
    await t.wait_frames(a.pid, video=before + 15)
    assert a.links[b.pid] is ab


async def test_client_resumes_after_server_restart(alcove: Any, join: Any) -> None:
    _, t, (c,) = await admitted(alcove, join)
    await c.wait_frames(t.pid, video=11)
    link = c.links[t.pid]
    await c.drop_signaling()
    await t.drop_signaling()
    await alcove.restart()
    # the client comes back first: admitted, with "your therapist is reconnecting" until the therapist is back
    mark = c.mark()
    cw = await c.reconnect()
    assert (cw.pid, cw.status, cw.position, cw.therapist) == (c.pid, "admitted", None, "reconnecting")
    tw = await t.reconnect()
    assert (tw.pid, tw.status) == (t.pid, "admitted")
    await c.wait_until(lambda: set(c.roster) == {t.pid, c.pid}, 5, "roster")
    assert not any(isinstance(x, m.Admitted) for x in c.log[mark:])
    # the media never depended on the server
    assert c.links[t.pid] is link
    before = link.frames()["video"]
    await c.wait_frames(t.pid, video=before + 15)


async def test_restart_with_open_sockets_is_prompt(alcove: Any, join: Any) -> None:
    room = await alcove.create_room(type="individual")
    t = await join(room["therapist_link"], name="Dr. T", media=False)
    started = time.monotonic()
    await alcove.restart()
    elapsed = time.monotonic() - started
    assert t.sc is not None
    assert (elapsed < 5, t.sc.close_code) == (True, 1001)


async def test_trickled_browser_candidates_are_accepted(alcove: Any, join: Any) -> None:
    _, t, (c,) = await admitted(alcove, join)
    await c.wait_frames(t.pid, video=11)
    await t.wait_frames(c.pid, video=11)
    # whichever side answered receives trickled candidates as a browser would send them
    receiver, sender = (c, t) if t.pid < c.pid else (t, c)
    link = receiver.links[sender.pid]
    await sender.send(m.Candidate(to=receiver.pid, candidate="candidate:842163049 1 udp 1677729535 127.0.0.1 "
                                  "50001 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag abcd network-cost 999",
                                  sdp_mid="0", sdp_mline_index=0))
    await sender.send(m.Candidate(to=receiver.pid, candidate="", sdp_mid="0", sdp_mline_index=0))
    await sender.send(m.Candidate(to=receiver.pid, candidate=None))
    # aiortc's own SDP already ended its candidates, so aioice ignores late ones; the parsed candidate shows in
    # the remote description (a browser's SDP has no end-of-candidates, and there it reaches ICE too)
    await receiver.wait_until(lambda: "127.0.0.1 50001 typ srflx" in link.pc.remoteDescription.sdp, 5,
                              "candidate added")
    await asyncio.sleep(0.2)
    assert receiver.failures == [] and receiver.errors == [] and sender.errors == []
    assert link.pc.connectionState == "connected"
