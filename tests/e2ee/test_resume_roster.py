"""The Python therapist's membership across a restart of the server: the roster is a hint (peer/e2ee_glue.py).

No network: an :class:`E2eeGlue` therapist with real keys, clients with real :class:`ClientKeys`, rosters fed by
hand and the clock passed in. A restarted server lists only those who resumed: a client the therapist admitted
stays in the signed membership within the resume grace, and is forgotten once the server lists it and then no
more (left, removed, grace over) or the grace passes without it. A server that lies can neither keep a client the
therapist removed in, nor get a key for someone the therapist never admitted.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.e2ee import ClientKeys, LinkInfo, TherapistKeys
from peer.e2ee_glue import RESUME_GRACE_S, E2eeGlue
from peer.state import RoomState, Tasks
from signaling import messages as m

pytestmark = [pytest.mark.e2ee]

ROOM = "r_resume"


class SentTasks(Tasks):
    """Records what the glue sends instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[m.ClientMessage] = []

    def send_soon(self, msg: m.ClientMessage) -> None:
        self.sent.append(msg)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Therapist:
    def __init__(self) -> None:
        self.state = RoomState()
        self.state.pid, self.state.role, self.state.status = "p_t", "therapist", "admitted"
        self.tasks = SentTasks()
        self.clock = Clock()
        self.glue = E2eeGlue(self.state, self.tasks, enabled=True, link_info=LinkInfo("tok"),
                             therapist_ik=ec.generate_private_key(ec.SECP256R1()), clock=self.clock)
        self.keys = TherapistKeys(ROOM, "p_t", self.glue.therapist_ik)
        self.glue.keys = self.keys
        self.clients: dict[str, ClientKeys] = {}

    def roster(self, *clients: str, offline: tuple[str, ...] = ()) -> None:
        """The server's roster (therapist included) arrives."""
        self.state.roster = {"p_t": m.RosterEntry("p_t", "therapist", "Dr. T", True)}
        for pid in clients:
            self.state.roster[pid] = m.RosterEntry(pid, "client", pid, pid not in offline)
        self.glue.maybe_rekey()

    def admit(self, pid: str) -> None:
        """Intro, the therapist's Admit (grant), the client's reveal; then the server lists it."""
        c = ClientKeys(ROOM, LinkInfo("tok"), pid=pid)
        self.keys.check_intro(pid, c.make_intro())
        c.check_grant(self.glue.grant_for(pid), pid)
        self.keys.handle_key(pid, c.make_reveal())
        self.clients[pid] = c
        self.roster(*self.listed(), pid)

    def listed(self) -> list[str]:
        return [p for p, e in self.state.roster.items() if e.role == "client"]

    def epochs(self) -> list[dict[str, Any]]:
        """The payloads of every epoch the therapist sent, oldest first."""
        out = []
        for msg in self.tasks.sent:
            if isinstance(msg, m.Key):
                payload = json.loads(json.loads(msg.data)["p"])
                if payload["t"] == "epoch":
                    out.append(payload)
        return out

    def members_of_last_epoch(self) -> set[str]:
        return {e["pid"] for e in self.epochs()[-1]["roster"]} - {"p_t"}


async def test_a_fresh_server_that_does_not_list_the_clients_yet_does_not_take_them_out() -> None:
    t = Therapist()
    t.admit("p_a")
    t.admit("p_b")
    assert t.members_of_last_epoch() == {"p_a", "p_b"}
    made = len(t.epochs())
    # the server restarts; the therapist resumes first and the fresh server lists it alone
    t.glue.reconnected()
    t.roster()
    assert len(t.epochs()) == made  # no epoch without them: they still hold the current one
    assert t.keys.keyable("p_a") and t.keys.keyable("p_b")
    assert set(t.glue.unconfirmed) == {"p_a", "p_b"}
    # one comes back: a new epoch (it may have reloaded) that still has the other, who is within its grace
    t.clock.now += 5
    t.roster("p_a")
    assert len(t.epochs()) == made + 1 and t.members_of_last_epoch() == {"p_a", "p_b"}
    t.roster("p_a", "p_b")
    assert t.members_of_last_epoch() == {"p_a", "p_b"} and t.glue.unconfirmed == {}
    assert t.glue.refusals == []


async def test_a_client_who_does_not_come_back_within_the_grace_is_taken_out() -> None:
    t = Therapist()
    t.admit("p_a")
    t.admit("p_b")
    t.glue.reconnected()
    t.roster("p_a")
    t.clock.now += RESUME_GRACE_S - 1
    t.roster("p_a")
    assert t.members_of_last_epoch() == {"p_a", "p_b"}
    t.clock.now += 1
    t.glue.maybe_rekey()  # what the grace timer does
    assert t.members_of_last_epoch() == {"p_a"} and not t.keys.keyable("p_b")
    # back after the grace, and the server lets it in without a new Admit: no key, and it is shown
    t.roster("p_a", "p_b")
    assert t.members_of_last_epoch() == {"p_a"}
    assert [r["pid"] for r in t.glue.refused("unkeyed")] == ["p_b"]


async def test_a_client_the_server_listed_and_then_no_more_left_for_good() -> None:
    t = Therapist()
    t.admit("p_a")
    t.admit("p_b")
    t.glue.reconnected()
    t.roster("p_a", "p_b", offline=("p_b",))  # within its grace the server still lists it
    assert t.members_of_last_epoch() == {"p_a", "p_b"}
    t.roster("p_a")  # left, removed or its grace ran out on the server
    assert t.members_of_last_epoch() == {"p_a"} and not t.keys.keyable("p_b")


async def test_a_lying_server_keeps_no_removed_client_in_and_gets_no_key_for_a_stranger() -> None:
    t = Therapist()
    t.admit("p_a")
    t.admit("p_b")
    t.glue.removed_by_me("p_b")  # the therapist's own Remove
    assert t.members_of_last_epoch() == {"p_a"} and not t.keys.keyable("p_b")
    made = len(t.epochs())
    t.roster("p_a", "p_b", "p_ghost")  # the server still lists the removed client, and someone never admitted
    t.glue.reconnected()
    t.roster("p_a", "p_b", "p_ghost")
    assert all({e["pid"] for e in ep["roster"]} <= {"p_t", "p_a"} for ep in t.epochs()[made:])
    assert not t.keys.keyable("p_b") and not t.keys.keyable("p_ghost")
    assert [r["pid"] for r in t.glue.refused("unkeyed")] == ["p_ghost"]
    # a restart right after the removal: a fresh server does not bring it back either
    t.glue.reconnected()
    t.roster()
    t.roster("p_a", "p_b")
    assert t.members_of_last_epoch() == {"p_a"}
