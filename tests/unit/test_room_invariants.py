"""Hypothesis state machine over the room core: whatever the order of inputs, the invariants hold.

- the seat cap is never exceeded; there is never more than one therapist;
- nothing reaches a waiting client except the server's own messages (no relayed media signaling, no roster,
  no TURN credentials), and nothing a waiting client sends reaches anybody;
- after the end nothing is left: no member, no socket, no effect on later input;
- a client is admitted only by an admit since its last return to the waiting room: replaying any resume
  credential it was ever given, in the same room or after a server restart, never admits it by itself.
"""

from __future__ import annotations

import dataclasses

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from signaling import messages as m
from signaling.effects import Close, ConnId, Effect, RevokeToken, SeatGeneration, Send
from signaling.policy import Timing
from signaling.room import Admission, ResumeClaims, Room

from .core_fixtures import T0, FakeServices, admission, hello, spec

ALLOWED_TO_WAITING = (m.Welcome, m.Waiting, m.Therapist, m.Warning, m.Time, m.Resume, m.Admitted, m.Declined,
                      m.Removed, m.Error, m.SessionEnded)
TOKENS = ["t1", "t2", "t3", "t4", "t5"]


class SigningServices(FakeServices):
    """Keeps every resume credential the room signed (a client keeps them; a hostile one replays them)."""

    def __init__(self) -> None:
        super().__init__()
        self.signed: list[ResumeClaims] = []

    def sign_resume(self, claims: ResumeClaims, now: float) -> str:
        self.signed.append(claims)
        return super().sign_resume(claims, now)


class RoomMachine(RuleBasedStateMachine):
    @initialize(kind=st.sampled_from([("individual", 1), ("couple", 2), ("family", 4)]))
    def setup(self, kind: tuple[str, int]) -> None:
        self.spec = spec(kind[0], seats=kind[1])  # type: ignore[arg-type]
        self.services = SigningServices()
        self.room = Room(self.spec, Timing(), self.services)
        self.now = T0
        self.n = 0
        self.persisted: dict[str, int] = {}  # what the edge keeps across a restart: generations, revocations
        self.revoked: set[str] = set()
        self.let_in: set[str] = set()  # tokens admitted by an admit since their last return to the waiting room
        self.room.connect(self.conn(), self.adm("therapist", "tt"), hello(), self.now)

    # -------------------------------------------------------------- helpers

    def conn(self) -> ConnId:
        self.n += 1
        return ConnId(f"c{self.n}")

    def adm(self, role: str, token: str, resume: ResumeClaims | None = None) -> Admission:
        """A ticket as the edge hands it in: with the seat's persisted admission generation."""
        return dataclasses.replace(admission(self.spec, role, token, resume),  # type: ignore[arg-type]
                                   generation=self.persisted.get(token, 0))

    def connect(self, adm: Admission, hello_msg: m.Hello) -> None:
        if adm.token_id in self.revoked:
            return  # the edge refuses a revoked token before the core sees it (also after a restart)
        self.apply(self.room.connect(self.conn(), adm, hello_msg, self.now))

    def apply(self, effects: list[Effect]) -> None:
        """Whoever is waiting *after* an input got only the server's own messages from it."""
        waiting_conns = {p.conn for p in self.room.clients("waiting") if p.conn is not None}
        token_of = {p.conn: p.token_id for p in self.room.members.values() if p.conn is not None}
        for e in effects:
            if isinstance(e, Send) and e.conn in waiting_conns:
                assert isinstance(e.message, ALLOWED_TO_WAITING), e.message
            if isinstance(e, Send) and isinstance(e.message, m.Admitted):
                self.let_in.add(token_of[e.conn])  # the therapist's admit
            elif isinstance(e, SeatGeneration):  # the seat stopped being admitted: sent back, left, removed…
                self.persisted[e.token_id] = max(e.generation, self.persisted.get(e.token_id, 0))
                self.let_in.discard(e.token_id)
            elif isinstance(e, RevokeToken):
                self.revoked.add(e.token_id)
        # A return to the waiting room is what the core announces as a new seat generation (above): a seat merely
        # absent (a restart emptied the room), or waiting because it chose to replay an older waiting credential,
        # has not been sent back, and its current credential may bring it back.

    def members(self) -> list[str]:
        return list(self.room.members)

    def pick(self, data: st.DataObject, status: str | None = None, role: str | None = "client") -> str | None:
        pids = [p.pid for p in self.room.members.values()
                if (status is None or p.status == status) and (role is None or p.role == role)]
        return data.draw(st.sampled_from(pids)) if pids else None

    # -------------------------------------------------------------- rules

    @rule()
    def therapist_connects(self) -> None:
        self.connect(self.adm("therapist", "tt"), hello())

    @rule(token=st.sampled_from(TOKENS),
          name=st.one_of(st.sampled_from(["Ana", "Radu", "Ioana"]), st.text(min_size=0, max_size=70)))
    def client_connects(self, token: str, name: str) -> None:
        self.connect(self.adm("client", token), hello(name))

    @rule(data=st.data())
    def client_replays_a_credential(self, data: st.DataObject) -> None:
        """Any resume credential the room ever signed for a client, replayed with a new ticket of its link."""
        signed = [c for c in self.services.signed if c.role == "client"]
        if signed:
            claims = data.draw(st.sampled_from(signed))
            self.connect(self.adm("client", claims.token_id, claims), m.Hello(v=1, ticket="t"))

    @rule()
    def server_restarts(self) -> None:
        """The process restarts: the room is gone, only the persisted generations and revocations remain."""
        if self.room.ended:
            return
        self.room = Room(self.spec, Timing(), self.services)
        self.apply([])

    @rule(data=st.data())
    def someone_resumes(self, data: st.DataObject) -> None:
        pid = self.pick(data, role=None)
        if pid is None:
            return
        p = self.room.members[pid]  # type: ignore[index]
        claims = ResumeClaims(room_id="r1", pid=p.pid, token_id=p.token_id, role=p.role,
                              admitted=data.draw(st.booleans()), name=p.name)
        self.connect(self.adm(p.role, p.token_id, claims), m.Hello(v=1, ticket="t"))

    @rule(data=st.data())
    def someone_drops(self, data: st.DataObject) -> None:
        conns = list(self.room.by_conn)
        if conns:
            self.apply(self.room.disconnect(data.draw(st.sampled_from(conns)), self.now))

    @rule(data=st.data(), action=st.sampled_from(["admit", "decline", "send-to-waiting", "remove", "admit-all",
                                                  "extend", "end"]), rare=st.integers(0, 9))
    def therapist_acts(self, data: st.DataObject, action: str, rare: int) -> None:
        t = self.room.therapist
        if t is None or t.conn is None or (action == "end" and rare):
            return
        status = "waiting" if action in ("admit", "decline") else "admitted"
        target = self.pick(data, status=data.draw(st.sampled_from([status, None]))) or "p999"
        msg: m.ClientMessage = {
            "admit": m.Admit(pid=target), "decline": m.Decline(pid=target),
            "send-to-waiting": m.SendToWaiting(pid=target), "remove": m.Remove(pid=target),
            "admit-all": m.AdmitAll(), "extend": m.Extend(minutes=data.draw(st.sampled_from([5, 10]))),
            "end": m.End(),
        }[action]  # type: ignore[assignment]
        self.apply(self.room.receive(t.conn, msg, self.now))

    @rule(data=st.data())
    def therapist_admits_someone_waiting(self, data: st.DataObject) -> None:
        t = self.room.therapist
        target = self.pick(data, status="waiting")
        if t is not None and t.conn is not None and target is not None:
            self.apply(self.room.receive(t.conn, m.Admit(pid=target), self.now))

    @rule(data=st.data(), kind=st.sampled_from(["offer", "candidate", "key", "admit", "leave"]))
    def anyone_sends(self, data: st.DataObject, kind: str) -> None:
        conns = list(self.room.by_conn)
        if not conns:
            return
        conn = data.draw(st.sampled_from(conns))
        sender = self.room.members[self.room.by_conn[conn]]
        to = self.pick(data, role=None) or "p999"
        msg: m.ClientMessage = {
            "offer": m.Offer(to=to, sdp="v=0"), "candidate": m.Candidate(to=to, candidate="c"),
            "key": m.Key(to=data.draw(st.sampled_from([None, to])), data="k"), "admit": m.Admit(pid=to),
            "leave": m.Leave(),
        }[kind]  # type: ignore[assignment]
        was_waiting = sender.status == "waiting"
        effects = self.room.receive(conn, msg, self.now)
        if was_waiting and kind != "leave":
            # a waiting client reaches nobody: at most an error back to itself
            assert all(isinstance(e, Send) and e.conn == conn and isinstance(e.message, m.Error)
                       for e in effects), effects
        self.apply(effects)

    @rule(seconds=st.sampled_from([1, 30, 61, 121, 300]))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds
        self.apply(self.room.tick(self.now))

    # -------------------------------------------------------------- invariants

    @invariant()
    def cap_never_exceeded(self) -> None:
        assert len(self.room.clients("admitted")) <= self.spec.seats

    @invariant()
    def one_therapist_at_most(self) -> None:
        assert sum(1 for p in self.room.members.values() if p.role == "therapist") <= 1

    @invariant()
    def sockets_are_consistent(self) -> None:
        for conn, pid in self.room.by_conn.items():
            assert self.room.members[pid].conn == conn
        for p in self.room.members.values():
            if p.conn is not None:
                assert self.room.by_conn[p.conn] == p.pid

    @invariant()
    def one_device_per_token(self) -> None:
        tokens = [p.token_id for p in self.room.members.values()]
        assert len(tokens) == len(set(tokens))

    @invariant()
    def admitted_only_by_an_admit_since_the_last_return_to_waiting(self) -> None:
        for p in self.room.clients("admitted"):
            assert p.token_id in self.let_in, (p.token_id, self.let_in)

    @invariant()
    def nothing_is_left_after_the_end(self) -> None:
        if self.room.ended:
            assert not self.room.members and not self.room.by_conn
            assert self.room.tick(self.now + 10_000) == []
            assert all(isinstance(e, Send | Close) for e in self.room.connect(
                ConnId("late"), admission(self.spec, "client", "t9"), hello("x"), self.now))
            assert not self.room.members


TestRoomInvariants = RoomMachine.TestCase
TestRoomInvariants.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
