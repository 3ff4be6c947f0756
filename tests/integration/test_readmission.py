"""Only the therapist's admit lets a client in: a client that left the session in any way and comes back with a
new ticket of its link and the resume credential it held while admitted waits (or is refused), in the running
server and after a restart (the seat's admission generation is persisted next to the revocation list)."""

from __future__ import annotations

from typing import Any

import pytest

from peer.participant import Participant
from peer.signaling_client import JoinRefused, SignalingClient

pytestmark = [pytest.mark.integration]

WAYS_OUT = ["sent-back", "left", "grace-expired", "therapist-left", "removed", "declined", "removed-blocked",
            "declined-blocked"]
BLOCKED = ("removed-blocked", "declined-blocked")


async def admitted_client(alcove: Any, join: Any) -> tuple[dict[str, Any], Participant, Participant, str]:
    """A room, its therapist, an admitted client and the resume credential it got while admitted."""
    room = await alcove.create_room(type="individual")
    t: Participant = await join(room["therapist_link"], name="Dr. T", media=False)
    c: Participant = await join(room["client_links"][0], name="Alex", media=False)
    await t.wait_until(lambda: any(q.pid == c.pid for q in t.queue), 5, "queued")
    waiting_credential = c.resume_credential
    await t.admit(c.pid)
    await c.wait_until(lambda: c.status == "admitted" and c.resume_credential != waiting_credential, 5, "admitted")
    assert c.resume_credential is not None
    return room, t, c, c.resume_credential


async def leave_the_session(alcove: Any, way_out: str, t: Participant, c: Participant) -> None:
    if way_out == "sent-back":
        await t.send_to_waiting(c.pid)
        await c.wait_until(lambda: c.status == "waiting", 5, "sent back")
        await c.leave()
    elif way_out == "left":
        await c.leave()
    elif way_out == "grace-expired":
        await c.drop_signaling()
        await t.wait_until(lambda: c.pid in t.roster and not t.roster[c.pid].connected, 5, "dropped")
        await alcove.advance(alcove.config.timing.grace + 1)
        await t.wait_until(lambda: c.pid not in t.roster, 5, "grace expired")
    elif way_out == "therapist-left":
        await t.leave()  # steps out: the clients stay in the session for the grace, then wait
        await c.wait_until(lambda: c.therapist == "stepped-out", 5, "stepped out")
        assert c.status == "admitted"
        await alcove.advance(alcove.config.timing.grace + 1)
        await c.wait_until(lambda: c.status == "waiting", 5, "back in the waiting room")
        await c.leave()
    elif way_out.startswith("removed"):
        await t.remove(c.pid, block=way_out in BLOCKED)
        assert c.sc is not None and await c.sc.wait_closed() == 4011
    else:  # declined: admitted, sent back, then declined from the waiting room
        await t.send_to_waiting(c.pid)
        await c.wait_until(lambda: c.status == "waiting", 5, "sent back")
        await t.decline(c.pid, block=way_out in BLOCKED)
        assert c.sc is not None and await c.sc.wait_closed() == 4010


@pytest.mark.parametrize("restart", [False, True], ids=["running", "after-restart"])
@pytest.mark.parametrize("way_out", WAYS_OUT)
async def test_an_old_credential_never_readmits(alcove: Any, join: Any, way_out: str, restart: bool) -> None:
    room, t, c, credential = await admitted_client(alcove, join)
    await leave_the_session(alcove, way_out, t, c)
    if restart:
        await t.drop_signaling()
        await alcove.restart()
    try:
        replay = await SignalingClient.open(alcove.url, room["client_links"][0], resume=credential)
    except JoinRefused as err:
        # blocked links are revoked for good (persisted): refused, which is stronger than waiting
        assert way_out in BLOCKED and err.code == "token-revoked"
        return
    try:
        assert way_out not in BLOCKED
        assert replay.welcome is not None and replay.welcome.status == "waiting"
        assert replay.welcome.pid == c.pid  # the same seat, back in the waiting room
        await replay.next("waiting", timeout=5)  # the queue position, sent with the welcome
        got = {type(x).__name__ for x in replay.pending()}
        assert not {"Roster", "IceServers", "Admitted"} & got, got
        if not restart and way_out != "therapist-left":
            await t.wait_until(lambda: any(q.pid == replay.pid for q in t.queue), 5, "the replayer in the queue")
            assert replay.pid not in t.roster
    finally:
        await replay.close()


async def test_after_a_new_admit_the_new_credential_resumes_across_a_restart(alcove: Any, join: Any) -> None:
    """The fix does not break resuming: a credential of the current admission still brings the client back."""
    room, t, c, old = await admitted_client(alcove, join)
    await t.send_to_waiting(c.pid)
    await c.wait_until(lambda: c.status == "waiting", 5, "sent back")
    await t.admit(c.pid)
    await c.wait_until(lambda: c.status == "admitted" and c.resume_credential not in (old, None), 5, "readmitted")
    await c.drop_signaling()
    await t.drop_signaling()
    await alcove.restart()
    welcome = await c.reconnect()
    assert (welcome.pid, welcome.status) == (c.pid, "admitted")
    await c.leave()
    replay = await SignalingClient.open(alcove.url, room["client_links"][0], resume=old)
    try:
        assert replay.welcome is not None and replay.welcome.status == "waiting"
    finally:
        await replay.close()
