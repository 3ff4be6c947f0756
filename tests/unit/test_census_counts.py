"""The census the gauges show is kept as rooms change (no walk over every room per join or leave), and the tick
skips a room until its next deadline: whatever the order of joins, drops, resumes, admissions, returns to the
waiting room, leaves, ends, evictions and ticks, the census equals a full count over every room and member, and
every input and tick has the same effects as on a registry that ticks every room every time."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from signaling import messages as m
from signaling.effects import ConnId, RoomEnded, Send
from signaling.policy import Timing
from signaling.room import ResumeClaims
from signaling.rooms import Census, Rooms

from .core_fixtures import T0, FakeServices, admission, hello, spec

SPECS = [spec("individual", seats=1, room_id="r1"), spec("couple", seats=2, room_id="r2"),
         spec("group", seats=3, minutes=4, topology="sfu", room_id="r3")]
CLIENT_TOKENS = ["t1", "t2", "t3", "t4"]


class TurnServices(FakeServices):
    """TURN credentials that run out (so that their refresh is a deadline too)."""

    def ice_servers(self, pid: str, now: float, ends_at: float) -> tuple[list[dict[str, object]], float | None]:
        return [{"urls": "turn:turn.invalid"}], now + 610  # refreshed 10 s from now: before any re-signing


class Forgetful(dict):  # type: ignore[type-arg]
    """A deadline table that keeps nothing: every room is ticked every time."""

    def __setitem__(self, key: object, value: object) -> None:
        pass


def ticking_every_room() -> Rooms:
    rooms = Rooms(Timing(), TurnServices())
    rooms._due = Forgetful()
    return rooms


def full_count(rooms: Rooms, now: float) -> Census:
    """The census by definition: a walk over every live room and every member."""
    states = {"scheduled": 0, "open": 0, "in-session": 0, "ended": len(rooms.ended)}
    participants: dict[m.Role, int] = {"therapist": 0, "client": 0}
    waiting = 0
    for room in rooms.rooms.values():
        if now < room.opens_at:
            states["scheduled"] += 1
        elif room.clients("admitted"):
            states["in-session"] += 1
        else:
            states["open"] += 1
        for p in room.members.values():
            if p.conn is None:
                continue
            if p.role == "client" and p.status == "waiting":
                waiting += 1
            else:
                participants[p.role] += 1
    return Census(states, participants, waiting)


class CensusMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.rooms = Rooms(Timing(), TurnServices())
        self.twin = ticking_every_room()  # the reference: the same inputs, every room ticked every time
        self.now = T0
        self.n = 0

    def both(self, act: str, *args: object) -> object:
        """The same input to the registry and to its twin: the same effects."""
        ours, theirs = getattr(self.rooms, act)(*args), getattr(self.twin, act)(*args)
        assert ours == theirs, (act, args)
        return ours

    def conn(self) -> ConnId:
        self.n += 1
        return ConnId(f"c{self.n}")

    def connected(self, data: st.DataObject, role: m.Role | None = None) -> ConnId | None:
        conns = sorted(c for c, rid in self.rooms.conn_room.items()
                       if role is None or self.rooms.rooms[rid].members[self.rooms.rooms[rid].by_conn[c]].role == role)
        return data.draw(st.sampled_from(conns)) if conns else None

    def member_pids(self, room_id: str) -> list[str]:
        room = self.rooms.get(room_id)
        return sorted(room.members) if room is not None else []

    @rule(which=st.integers(0, len(SPECS) - 1), token=st.sampled_from(["tt", *CLIENT_TOKENS]))
    def joins(self, which: int, token: str) -> None:
        s = SPECS[which]
        role: m.Role = "therapist" if token == "tt" else "client"
        self.both("connect", self.conn(), admission(s, role, token), hello("A"), self.now)

    @rule(which=st.integers(0, len(SPECS) - 1), data=st.data(), admitted=st.booleans())
    def resumes(self, which: int, data: st.DataObject, admitted: bool) -> None:
        """A member (connected or dropped) comes back with its credential, or one rebuilds a room nobody holds."""
        s = SPECS[which]
        room = self.rooms.get(s.room_id)
        if room is not None and room.members:
            p = room.members[data.draw(st.sampled_from(sorted(room.members)))]
            claims = ResumeClaims(room_id=s.room_id, pid=p.pid, token_id=p.token_id, role=p.role,
                                  admitted=admitted, name=p.name)
        else:
            token = data.draw(st.sampled_from(["tt", *CLIENT_TOKENS]))
            role: m.Role = "therapist" if token == "tt" else "client"
            claims = ResumeClaims(room_id=s.room_id, pid=f"q{token}", token_id=token, role=role, admitted=admitted,
                                  name="A")
        self.both("connect", self.conn(), admission(s, claims.role, claims.token_id, claims),
                  m.Hello(v=1, ticket="t"), self.now)

    @rule(data=st.data())
    def drops(self, data: st.DataObject) -> None:
        conn = self.connected(data)
        if conn is not None:
            self.both("disconnect", conn, self.now)

    @rule(data=st.data(), action=st.sampled_from(["admit", "admit-all", "decline", "send-to-waiting", "remove",
                                                  "block", "end", "extend", "note"]))
    def therapist_acts(self, data: st.DataObject, action: str) -> None:
        conn = self.connected(data, "therapist")
        if conn is None:
            return
        room = self.rooms.rooms[self.rooms.conn_room[conn]]
        wanted: m.Status = "waiting" if action in ("admit", "decline") else "admitted"
        fitting = [p.pid for p in room.clients(wanted)] or sorted(room.members)
        target = data.draw(st.sampled_from(fitting))
        msg: m.ClientMessage = {
            "admit": m.Admit(pid=target), "admit-all": m.AdmitAll(), "decline": m.Decline(pid=target),
            "send-to-waiting": m.SendToWaiting(pid=target), "remove": m.Remove(pid=target),
            "block": m.Remove(pid=target, block=True), "end": m.End(), "extend": m.Extend(minutes=5),
            "note": m.Note(preset="late-5"),
        }[action]  # type: ignore[assignment]
        self.both("receive", conn, msg, self.now)

    @rule(data=st.data())
    def therapist_admits_someone_waiting(self, data: st.DataObject) -> None:
        conn = self.connected(data, "therapist")
        if conn is None:
            return
        room = self.rooms.rooms[self.rooms.conn_room[conn]]
        waiting = [p.pid for p in room.clients("waiting") if p.conn is not None]
        if waiting:
            self.both("receive", conn, m.Admit(pid=data.draw(st.sampled_from(waiting))), self.now)

    @rule(data=st.data(), kind=st.sampled_from(["candidate", "key", "app", "leave"]))
    def anyone_sends(self, data: st.DataObject, kind: str) -> None:
        conn = self.connected(data)
        if conn is None:
            return
        to = data.draw(st.sampled_from(self.member_pids(self.rooms.conn_room[conn]) or ["p999"]))
        msg: m.ClientMessage = {"candidate": m.Candidate(to=to, candidate="c"), "key": m.Key(to=None, data="k"),
                                "app": m.App(to=None, data="a"), "leave": m.Leave()}[kind]  # type: ignore[assignment]
        self.both("receive", conn, msg, self.now)

    @rule(which=st.integers(0, len(SPECS) - 1), how=st.sampled_from(["end", "evict"]))
    def admin(self, which: int, how: str) -> None:
        if how == "end":
            self.both("end", SPECS[which].room_id, "admin", self.now)
        else:
            self.both("evict", SPECS[which].room_id)

    @rule(seconds=st.sampled_from([0.5, 1, 5, 5, 29.5, 61, 121, 600, 1500]), rare=st.integers(0, 4))
    def time_passes(self, seconds: float, rare: int) -> None:
        if seconds >= 600 and rare:
            seconds = 30  # mostly short steps: a long one ends the sessions
        self.now += seconds
        self.both("tick", self.now)

    @invariant()
    def counts_equal_a_full_walk(self) -> None:
        assert self.rooms.census(self.now) == full_count(self.rooms, self.now)
        assert self.twin.census(self.now) == full_count(self.twin, self.now)


CensusMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestCensusCounts = CensusMachine.TestCase


def test_a_full_session_is_counted_in_and_out() -> None:
    rooms = Rooms(Timing(), FakeServices())
    s = SPECS[1]
    now = T0 + 60
    rooms.connect(ConnId("ct"), admission(s, "therapist", "tt"), hello(), now)
    rooms.connect(ConnId("c1"), admission(s, "client", "t1"), hello("A"), now)
    assert rooms.census(now) == Census({"scheduled": 0, "open": 1, "in-session": 0, "ended": 0},
                                       {"therapist": 1, "client": 0}, 1)
    rooms.receive(ConnId("ct"), m.Admit(pid="p2"), now)
    assert rooms.census(now) == Census({"scheduled": 0, "open": 0, "in-session": 1, "ended": 0},
                                       {"therapist": 1, "client": 1}, 0)
    rooms.disconnect(ConnId("c1"), now)  # an admitted client who may come back: still in session
    assert rooms.census(now) == Census({"scheduled": 0, "open": 0, "in-session": 1, "ended": 0},
                                       {"therapist": 1, "client": 0}, 0)
    rooms.receive(ConnId("ct"), m.End(), now)
    assert rooms.census(now) == Census({"scheduled": 0, "open": 0, "in-session": 0, "ended": 1},
                                       {"therapist": 0, "client": 0}, 0)


def test_a_quiet_room_still_ends_and_warns_on_the_tick_its_deadline_passes() -> None:
    rooms = Rooms(Timing(), FakeServices())  # no TURN credentials to refresh: only the re-signing ticks it
    s = spec(minutes=12)
    rooms.connect(ConnId("ct"), admission(s, "therapist", "tt"), hello(), T0)
    said: dict[str, float] = {}
    now = T0
    while now <= s.ends_at + 1:
        now += 0.5  # the server's tick
        for e in rooms.tick(now):
            if isinstance(e, RoomEnded):
                said.setdefault("ended", now)
            elif isinstance(e, Send) and isinstance(e.message, m.Warning):
                said.setdefault(f"warning-{e.message.minutes}", now)
    assert said == {"warning-10": s.ends_at - 600, "warning-5": s.ends_at - 300, "warning-1": s.ends_at - 60,
                    "ended": s.ends_at}
