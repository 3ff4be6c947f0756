"""App messages under an epoch the receiver does not hold yet (peer/e2ee.py AppHold, peer/e2ee_glue.py on_app).

No network: real keys, a client's :class:`E2eeGlue` fed by hand, the clock passed in (nothing sleeps). A message
under an epoch newer than the receiver's waits for it (at most 32, at most 5 s) and is delivered once it comes, or
refused when it does not; one sent under an epoch older than the receiver's membership is ignored.
"""

from __future__ import annotations

import os

import pytest

from peer.e2ee import APP_HOLD_MAX, APP_HOLD_SECONDS, AppHold, ClientKeys, TherapistKeys
from peer.e2ee_glue import E2eeGlue
from peer.state import RoomState
from signaling import messages as m
from tests.e2ee.test_resume_roster import Clock, SentTasks
from tests.unit.test_e2ee import ROOM, _admit, _epoch

pytestmark = [pytest.mark.e2ee]


class Receiver:
    """A client's glue with its keys, fed the therapist's key messages and the others' app messages by hand."""

    def __init__(self, keys: ClientKeys) -> None:
        self.clock = Clock()
        self.state = RoomState()
        self.state.pid, self.state.role, self.state.status = keys.pid or "", "client", "admitted"
        self.glue = E2eeGlue(self.state, SentTasks(), enabled=True, link_info=keys.link or ClientKeys(ROOM).link,  # type: ignore[arg-type]
                             clock=self.clock)
        self.glue.keys = keys

    def key(self, data: str) -> None:
        self.glue.on_key(m.PeerKey(from_="p_t", data=data))

    def app(self, from_pid: str, data: str) -> None:
        self.glue.on_app(m.PeerApp(from_=from_pid, data=data))

    @property
    def bodies(self) -> list[str]:
        return [b["text"] for _, b, _ in self.glue.app_messages]


def room() -> tuple[TherapistKeys, ClientKeys, ClientKeys, Receiver]:
    """A therapist and a member (epoch 1); a second client just admitted, with no epoch yet."""
    t = TherapistKeys(ROOM, "p_t", s_link=os.urandom(32), first_epoch=1)
    a = _admit(t, "p_a")
    _epoch(t, {"p_a": a})
    b = _admit(t, "p_b")
    return t, a, b, Receiver(b)


def say(who: TherapistKeys | ClientKeys, text: str) -> str:
    data = who.make_app({"k": "chat", "text": text})
    assert data is not None
    return data


async def test_a_message_under_the_epoch_still_on_its_way_is_delivered_once_it_comes() -> None:
    t, a, _b, rx = room()
    res = t.make_epoch(["p_a", "p_b"])  # epoch 2: b's first
    t.handle_key("p_a", a.handle_key(res.message))  # type: ignore[arg-type]
    # a switches to 2 (the therapist's switch reached it first) and tells everyone; b has not got epoch 2 yet
    t.pending.waiting_acks.discard("p_b")  # type: ignore[union-attr]
    sw = t.make_switch()
    assert a.handle_key(sw) is True
    rx.app("p_a", say(a, "under 2"))
    rx.app("p_t", say(t, "also under 2"))
    assert rx.bodies == [] and len(rx.glue.app_held) == 2 and rx.glue.refusals == []
    rx.key(res.message)  # epoch 2 arrives: both delivered, in their order
    assert rx.bodies == ["under 2", "also under 2"] and len(rx.glue.app_held) == 0
    rx.key(sw)
    rx.app("p_a", say(a, "after"))
    assert rx.bodies[-1] == "after" and rx.glue.refusals == []


async def test_a_message_sent_before_one_was_a_member_is_ignored() -> None:
    t, a, b, rx = room()
    early = say(a, "under 1, before b was let in")  # a still sends with epoch 1
    rx.app("p_a", early)  # b holds no epoch yet: it waits
    assert len(rx.glue.app_held) == 1
    _epoch(t, {"p_a": a, "p_b": b})  # b's first epoch is 2: the message is older than b's membership
    rx.glue.release_held_apps()
    assert rx.bodies == [] and rx.glue.ignored_apps == 1 and rx.glue.refusals == []
    rx.app("p_a", early)  # and so is the same message arriving now
    assert rx.glue.ignored_apps == 2 and rx.glue.refusals == []


async def test_an_epoch_that_never_comes_is_refused_visibly_after_five_seconds() -> None:
    t, a, b, rx = room()
    _epoch(t, {"p_a": a, "p_b": b})
    res = t.make_epoch(["p_a"])  # epoch 3 leaves b out; the therapist switches to it, b never gets it
    t.handle_key("p_a", a.handle_key(res.message))  # type: ignore[arg-type]
    assert a.handle_key(t.make_switch()) is True
    rx.app("p_a", say(a, "under 3"))
    assert rx.glue.refusals == [] and len(rx.glue.app_held) == 1
    rx.clock.now += APP_HOLD_SECONDS - 0.1
    rx.glue.expire_held_apps()
    assert rx.glue.refusals == []
    rx.clock.now += 0.1
    rx.glue.expire_held_apps()
    assert [(r["what"], r["pid"]) for r in rx.glue.refusals] == [("app", "p_a")]
    assert "did not come" in str(rx.glue.refusals[0]["detail"]) and rx.bodies == []


async def test_at_most_32_wait_and_the_next_one_is_refused() -> None:
    t, a, b, rx = room()
    _epoch(t, {"p_a": a, "p_b": b})
    res = t.make_epoch(["p_a", "p_b"])
    t.handle_key("p_a", a.handle_key(res.message))  # type: ignore[arg-type]
    t.pending.waiting_acks.discard("p_b")  # type: ignore[union-attr]
    assert a.handle_key(t.make_switch()) is True
    for i in range(APP_HOLD_MAX + 1):
        rx.app("p_a", say(a, f"n{i}"))
    assert len(rx.glue.app_held) == APP_HOLD_MAX
    assert [r["detail"] for r in rx.glue.refusals] == ["app from p_a: too many app messages waiting for their epoch"]
    rx.key(res.message)
    assert rx.bodies == [f"n{i}" for i in range(APP_HOLD_MAX)]


def test_the_hold_alone_bounds_count_and_time_on_the_callers_clock() -> None:
    hold = AppHold(limit=2, seconds=5.0)
    assert hold.hold("p_a", "x", 10.0) and hold.hold("p_a", "y", 12.0) and not hold.hold("p_a", "z", 12.0)
    assert hold.next_deadline() == 15.0
    assert hold.expired(14.9) == [] and hold.expired(15.0) == [("p_a", "x")]
    assert hold.release(lambda d: d == "y") == [] and hold.release(lambda d: False) == [("p_a", "y")]
    assert len(hold) == 0 and hold.next_deadline() is None


async def test_the_therapist_refuses_visibly_a_message_under_an_epoch_whose_key_it_lost() -> None:
    """Every epoch is the therapist's own: one older than its keys is a key it lost (a restart with fresh keys),
    not a message from before its membership: refused and said, never dropped in silence."""
    _t, a, _b, _rx = room()
    lost = say(a, "a safety answer under epoch 1")
    t2 = TherapistKeys(ROOM, "p_t", s_link=os.urandom(32), first_epoch=5)  # the therapist back, its old keys gone
    _epoch(t2, {"p_a": _admit(t2, "p_a")})
    state = RoomState()
    state.pid, state.role, state.status = "p_t", "therapist", "admitted"
    glue = E2eeGlue(state, SentTasks(), enabled=True, link_info=ClientKeys(ROOM).link, clock=Clock())  # type: ignore[arg-type]
    glue.keys = t2
    glue.on_app(m.PeerApp(from_="p_a", data=lost))
    assert glue.ignored_apps == 0 and [r for r in glue.refusals if "p_a" in str(r)], glue.refusals
