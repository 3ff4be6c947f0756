"""One therapy room: roles, waiting room, admission, relay rules and the time-box.

Sans-I/O: every method takes ``now`` (epoch seconds) and returns the effects to perform; nothing awaits, so
each input is applied atomically. A refused input returns an ``error`` for its sender and changes nothing.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal, Protocol

from . import messages as m
from .effects import (
    Close,
    ConnId,
    Effect,
    MediaMembers,
    MediaSignal,
    Pid,
    RevokeToken,
    RoomEnded,
    RoomId,
    SeatGeneration,
    Send,
)
from .errors import SignalingError
from .names import clean_name, first_name
from .policy import Timing
from .safety import SafetySettings

ICE_REFRESH = 600.0  # seconds before TURN credentials expire that fresh ones are sent
DUE_EARLY = 1e-3  # seconds: ``next_due`` answers this much early, whatever the rounding of a deadline


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@lru_cache(maxsize=1 << 14)  # asked for every connected participant at every tick
def resign_offset(pid: str, grace: float) -> float:
    """How much earlier than half the grace this participant's resume credential is signed again: a fixed share
    of a quarter of the grace per participant, so that participants who joined together (a restart, a takeover)
    are not all signed again in the same tick."""
    return (zlib.crc32(pid.encode()) % 1024) / 1024 * grace / 4


@dataclass(frozen=True)
class RoomSpec:
    """What a room token says about its room (signed, so a restarted server can rebuild the room)."""

    room_id: RoomId
    type: m.SessionType
    starts_at: float
    ends_at: float
    seats: int
    topology: m.Topology = "mesh"
    host: str = ""
    safety: SafetySettings = field(default_factory=SafetySettings)

    def opens_at(self, timing: Timing) -> float:
        return self.starts_at - timing.early_join


@dataclass(frozen=True)
class ResumeClaims:
    """A verified resume credential: who this participant was, held by the client and signed by the server."""

    room_id: str
    pid: str
    token_id: str
    role: m.Role
    admitted: bool
    name: str
    generation: int = 0  # the seat's admission generation when this was signed (see ``Room.generation``)


@dataclass(frozen=True)
class Admission:
    """What the edge verified about a connecting socket (its ticket, from a valid room token)."""

    spec: RoomSpec
    role: m.Role
    token_id: str
    token_expires: float
    resume: ResumeClaims | None = None
    generation: int = 0  # the seat's admission generation the edge persisted (survives a restart)


class Services(Protocol):
    """Pure helpers the edge lends the core (no I/O)."""

    def new_pid(self) -> str: ...

    def sign_resume(self, claims: ResumeClaims, now: float) -> str: ...

    def ice_servers(self, pid: str, now: float, ends_at: float) -> tuple[list[dict[str, object]], float | None]: ...


@dataclass
class Member:
    pid: Pid
    role: m.Role
    token_id: str
    token_expires: float
    name: str
    status: m.Status
    since: float
    conn: ConnId | None
    dropped_at: float | None = None
    intro: str | None = None
    check: m.CheckResult | None = None
    resume_at: float = 0.0
    ice_expires: float | None = None


@dataclass
class _Out:
    effects: list[Effect] = field(default_factory=list)

    def send(self, conn: ConnId | None, msg: m.ServerMessage) -> None:
        if conn is not None:
            self.effects.append(Send(conn, msg))


class Room:
    def __init__(self, spec: RoomSpec, timing: Timing, services: Services) -> None:
        self.spec = spec
        self.timing = timing
        self.services = services
        self.ends_at = spec.ends_at
        self.extended = 0.0
        self.members: dict[Pid, Member] = {}
        self.by_conn: dict[ConnId, Pid] = {}
        self.warned: set[int] = set()
        self.ended: str | None = None
        self.revoked: set[str] = set()
        self.generations: dict[str, int] = {}  # token id -> admission generation, bumped on every way out
        self.away_since: float | None = None  # rebuilt after a restart by a resume, therapist not back yet
        self.stepped_out = False  # the therapist left on purpose (``leave``): away_since runs, the room waits
        self._dispatch: dict[type, Callable[[Member, m.ClientMessage, float, _Out], None]] = {
            m.Admit: self._admit,
            m.AdmitAll: self._admit_all,
            m.Decline: self._decline,
            m.SendToWaiting: self._send_to_waiting,
            m.Remove: self._remove,
            m.Extend: self._extend,
            m.End: self._end_msg,
            m.Leave: self._leave,
            m.Offer: self._relay,
            m.Answer: self._relay,
            m.Candidate: self._relay,
            m.Key: self._key,
            m.App: self._app,
            m.MediaState: self._media_state,
            m.Note: self._note,
        }
        self._therapist_only = {m.Admit, m.AdmitAll, m.Decline, m.SendToWaiting, m.Remove, m.Extend, m.End,
                                m.Note}
        self.note: m.WaitingNote | None = None  # the newest word to everyone waiting, until the next admission

    # ------------------------------------------------------------------ queries

    @property
    def room_id(self) -> RoomId:
        return self.spec.room_id

    @property
    def opens_at(self) -> float:
        return self.spec.opens_at(self.timing)

    @property
    def therapist(self) -> Member | None:
        return next((p for p in self.members.values() if p.role == "therapist"), None)

    def therapist_status(self) -> m.TherapistStatus:
        t = self.therapist
        if t is None:
            if self.away_since is None:
                return "absent"
            return "stepped-out" if self.stepped_out else "reconnecting"
        return "present" if t.conn is not None else "reconnecting"

    @property
    def locked(self) -> bool:
        """No admissions while the therapist is not present."""
        return self.therapist_status() != "present"

    def clients(self, status: m.Status | None = None) -> list[Member]:
        found = [p for p in self.members.values() if p.role == "client" and (status is None or p.status == status)]
        return sorted(found, key=lambda p: (p.since, p.pid))

    def admitted(self) -> list[Member]:
        """Therapist first, then admitted clients."""
        t = self.therapist
        return ([t] if t else []) + self.clients("admitted")

    def is_over(self, now: float) -> bool:
        """Is this session over (ended, or past its end, extensions included)? The one place that decides."""
        return self.ended is not None or now >= self.ends_at

    def member(self, pid: str) -> Member | None:
        return self.members.get(Pid(pid))

    def is_admitted(self, token_id: str) -> bool:
        """True while the holder of this link is admitted (the pre-join test is not for them then)."""
        return any(p.token_id == token_id and p.status == "admitted" for p in self.members.values())

    def generation(self, token_id: str, persisted: int = 0) -> int:
        """The seat's admission generation: how many times the holder of this token stopped being admitted."""
        return max(self.generations.get(token_id, 0), persisted)

    def is_empty(self) -> bool:
        return not self.members

    def info(self) -> m.RoomInfo:
        s = self.spec
        return m.RoomInfo(id=s.room_id, type=s.type, opens_at=iso(self.opens_at), starts_at=iso(s.starts_at),
                          ends_at=iso(self.ends_at), seats=s.seats, topology=s.topology)

    # ------------------------------------------------------------------ inputs

    def connect(self, conn: ConnId, adm: Admission, hello: m.Hello, now: float) -> list[Effect]:
        """A socket presented a valid ticket for this room. Refusals come back as error + close."""
        out = _Out()
        try:
            self._connect(conn, adm, hello, now, out)
        except SignalingError as err:
            return [Send(conn, m.error_message(err)), Close(conn, err.close_code or 4000, err.code)]
        return out.effects

    def receive(self, conn: ConnId, msg: m.ClientMessage, now: float) -> list[Effect]:
        pid = self.by_conn.get(conn)
        if pid is None or self.ended:
            return []
        member = self.members[pid]
        out = _Out()
        handler = self._dispatch.get(type(msg))
        try:
            if handler is None:
                raise SignalingError("not-allowed", "this message is not allowed now", ref=m.tag_of(msg))
            if type(msg) in self._therapist_only and member.role != "therapist":
                raise SignalingError("not-allowed", "only the therapist can do this", ref=m.tag_of(msg))
            handler(member, msg, now, out)
        except SignalingError as err:
            if err.ref is None:
                err = SignalingError(err.code, err.message, ref=m.tag_of(msg))
            return [Send(conn, m.error_message(err))]
        return out.effects

    def disconnect(self, conn: ConnId, now: float) -> list[Effect]:
        """The socket closed without ``leave``: keep the seat for the grace period."""
        pid = self.by_conn.pop(conn, None)
        if pid is None or self.ended:
            return []
        member = self.members[pid]
        member.conn = None
        member.dropped_at = now
        out = _Out()
        if member.role == "therapist":
            self._broadcast_therapist(out)
            self._send_roster(out)
        elif member.status == "admitted":
            self._send_roster(out)
        else:
            self._send_queue(out)
        self._media_members(out)
        return out.effects

    def next_due(self) -> float:
        """The earliest time a ``tick`` may change something (every deadline ``tick`` checks, a hair early): a tick
        before it does nothing. Only an input or a tick moves a deadline earlier, so it is asked again after
        each of them; an input that moves one later (``extend``) leaves an early answer, which is harmless."""
        if self.ended:
            return float("inf")
        grace = self.timing.grace
        due = [self.ends_at]
        due.extend(self.ends_at - w * 60 for w in self.timing.warnings_minutes if w not in self.warned)
        if self.away_since is not None:
            due.append(self.away_since + grace)
        for p in self.members.values():
            if p.dropped_at is not None:
                due.append(p.dropped_at + grace)
            if p.conn is not None:
                due.append(p.resume_at + grace / 2 - resign_offset(p.pid, grace))
                if p.status == "admitted" and p.ice_expires is not None:
                    due.append(p.ice_expires - ICE_REFRESH)
        return min(due) - DUE_EARLY

    def tick(self, now: float) -> list[Effect]:
        if self.ended:
            return []
        out = _Out()
        if self.is_over(now):
            return self.end("time", now)
        crossed = [w for w in self.timing.warnings_minutes
                   if w not in self.warned and now >= self.ends_at - w * 60]
        if crossed:
            # Several thresholds crossed at once (a late start, an idle loop): say only the nearest one.
            self.warned.update(crossed)
            warning = m.Warning(minutes=min(crossed), ends_at=iso(self.ends_at))
            for p in self._connected():
                out.send(p.conn, warning)
        grace = self.timing.grace
        t = self.therapist
        if t is not None and t.dropped_at is not None and now - t.dropped_at >= grace:
            del self.members[t.pid]
            self._return_admitted_to_waiting(now, out)
            self._broadcast_therapist(out)
        elif t is None and self.away_since is not None and now - self.away_since >= grace:
            self.away_since = None
            self.stepped_out = False
            self._return_admitted_to_waiting(now, out)
            self._broadcast_therapist(out)
        gone = sorted((p for p in self.members.values()
                       if p.role == "client" and p.dropped_at is not None and now - p.dropped_at >= grace),
                      key=lambda p: (p.since, p.pid))  # in the order of ``clients()``
        if gone:
            was_admitted = any(p.status == "admitted" for p in gone)
            for p in gone:
                self._retire(p, out)
                del self.members[p.pid]
            if was_admitted:
                self._send_roster(out)
            self._send_queue(out)
        for p in self._connected():
            if now - p.resume_at >= grace / 2 - resign_offset(p.pid, grace):
                self._send_resume(p, now, out)
            if p.status == "admitted" and p.ice_expires is not None and now >= p.ice_expires - ICE_REFRESH:
                self._send_ice(p, now, out)  # fresh TURN credentials well before the old ones expire
        return out.effects

    def end(self, reason: Literal["time", "therapist", "admin"], now: float) -> list[Effect]:
        if self.ended:
            return []
        self.ended = reason
        out = _Out()
        for p in self._connected():
            out.send(p.conn, m.SessionEnded(reason=reason))
            if p.conn is not None:
                out.effects.append(Close(p.conn, 1000, "session-ended"))
        until = max([self.spec.ends_at + self.timing.overrun_cap, now]
                    + [p.token_expires for p in self.members.values()])
        out.effects.append(RoomEnded(self.room_id, reason, until))
        if self.spec.topology == "sfu":
            out.effects.append(MediaMembers(self.room_id, frozenset()))
        self.members.clear()
        self.by_conn.clear()
        return out.effects

    # ------------------------------------------------------------------ connect

    def _connect(self, conn: ConnId, adm: Admission, hello: m.Hello, now: float, out: _Out) -> None:
        if self.is_over(now):
            raise SignalingError("room-ended", "this session has ended")
        if now < self.opens_at:
            raise SignalingError("room-not-open", f"this session opens at {iso(self.opens_at)}")
        if adm.token_id in self.revoked:
            raise SignalingError("token-revoked", "this link was revoked")
        holder = next((p for p in self.members.values() if p.token_id == adm.token_id), None)
        resume = adm.resume
        if resume is not None and (resume.room_id != self.room_id or resume.token_id != adm.token_id
                                   or resume.role != adm.role):
            resume = None
        generation = self.generation(adm.token_id, adm.generation)
        if holder is not None:
            if resume is None or resume.pid != holder.pid:
                raise SignalingError("device-in-use", "this link is in use on another device")
            self._reattach(holder, conn, out)
            member = holder
        elif resume is not None:
            # The server lost the room (restart) or the grace ran out: rebuild from the signed credential. It says
            # "admitted" only for the generation it was signed in: once the seat went back to the waiting room (or
            # left, was removed or declined, or its grace ran out) only the therapist's admit lets it in again.
            member = self._new_member(conn, adm, hello, now, pid=resume.pid, name=resume.name,
                                      admitted=resume.admitted and resume.generation == generation)
        else:
            member = self._new_member(conn, adm, hello, now)
        self.generations[adm.token_id] = generation
        self.by_conn[conn] = member.pid
        self._welcome(member, now, out)

    def _new_member(self, conn: ConnId, adm: Admission, hello: m.Hello, now: float, *, pid: str | None = None,
                    name: str | None = None, admitted: bool = False) -> Member:
        if adm.role == "therapist":
            if self.therapist is not None:
                raise SignalingError("device-in-use", "the therapist is already connected")
            display = clean_name(hello.name) if hello.name else (self.spec.host or "Therapist")
            member = Member(Pid(pid or self.services.new_pid()), "therapist", adm.token_id, adm.token_expires,
                            display, "admitted", now, conn)
            self.members[member.pid] = member
            self.away_since = None
            self.stepped_out = False
            return member
        display = clean_name(hello.name if hello.name is not None else (name or ""))
        if admitted and len(self.clients("admitted")) >= self.spec.seats:
            admitted = False  # the seats are taken: wait for the therapist instead
        if admitted and self.therapist is None and self.away_since is None:
            # The server restarted: the therapist gets the usual grace to come back.
            self.away_since = now
        if not admitted and len(self.clients("waiting")) >= self.spec.seats * 2 + self.timing.waiting_extra:
            raise SignalingError("room-full", "the waiting room is full")
        member = Member(Pid(pid or self.services.new_pid()), "client", adm.token_id, adm.token_expires, display,
                        "admitted" if admitted else "waiting", now, conn, intro=hello.intro,
                        check=hello.check)
        self.members[member.pid] = member
        return member

    def _retire(self, member: Member, out: _Out) -> None:
        """An admitted client stops being admitted: every resume credential it holds stops admitting."""
        if member.role != "client" or member.status != "admitted":
            return
        generation = self.generation(member.token_id) + 1
        self.generations[member.token_id] = generation
        out.effects.append(SeatGeneration(self.room_id, member.token_id, generation, member.token_expires))

    def _reattach(self, member: Member, conn: ConnId, out: _Out) -> None:
        if member.conn is not None:
            old = member.conn
            self.by_conn.pop(old, None)
            out.send(old, m.Error(code="replaced", message="this participant connected again elsewhere"))
            out.effects.append(Close(old, 4012, "replaced"))
        member.conn = conn
        member.dropped_at = None

    def _welcome(self, member: Member, now: float, out: _Out) -> None:
        member.resume_at = now
        out.send(member.conn, m.Welcome(
            v=m.PROTOCOL_VERSION, pid=member.pid, role=member.role, status=member.status, room=self.info(),
            therapist=self.therapist_status(), position=self._position(member),
            resume=self._resume_credential(member, now)))
        if member.role == "therapist":
            self._broadcast_therapist(out, skip=member)
            self._send_queue(out)
            self._send_roster(out)
            self._send_ice(member, now, out)
        elif member.status == "admitted":
            self._send_roster(out)
            self._send_ice(member, now, out)
        else:
            self._send_queue(out)
            if self.note is not None:
                out.send(member.conn, self.note)
        self._media_members(out)

    # ------------------------------------------------------------------ therapist actions

    def _waiting_target(self, pid: str) -> Member:
        target = self.members.get(Pid(pid))
        if target is None or target.role != "client" or target.status != "waiting":
            raise SignalingError("unknown-peer", "no such client in the waiting room")
        return target

    def _admitted_client(self, pid: str) -> Member:
        target = self.members.get(Pid(pid))
        if target is None or target.role != "client" or target.status != "admitted":
            raise SignalingError("unknown-peer", "no such client in the session")
        return target

    def _admit(self, t: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        assert isinstance(msg, m.Admit)
        target = self._waiting_target(msg.pid)
        if target.conn is None:
            raise SignalingError("unknown-peer", "that client is reconnecting")
        if len(self.clients("admitted")) >= self.spec.seats:
            raise SignalingError("room-full", "every seat of this session is taken")
        self._do_admit([target], {target.pid: msg.grant}, now, out)

    def _admit_all(self, t: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        if self.spec.type not in ("couple", "family", "group"):
            raise SignalingError("not-allowed", "admit all is for couple, family and group sessions")
        free = self.spec.seats - len(self.clients("admitted"))
        chosen = [p for p in self.clients("waiting") if p.conn is not None][:max(free, 0)]
        self._do_admit(chosen, {}, now, out)

    def _do_admit(self, chosen: list[Member], grants: dict[Pid, str | None], now: float, out: _Out) -> None:
        if chosen:
            self.note = None  # the therapist is seeing people: "running late" is no longer news
        for p in chosen:
            p.status = "admitted"
            p.since = now
            out.send(p.conn, m.Admitted(grant=grants.get(p.pid)))
            self._send_resume(p, now, out)
            self._send_ice(p, now, out)
        if chosen:
            self._send_roster(out)
            self._send_queue(out)
            self._media_members(out)

    def _note(self, t: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        assert isinstance(msg, m.Note)
        text = _short_message(msg.text)
        if (msg.preset is None) == (text is None):
            raise SignalingError("invalid-message", "a note is either one of the set words or a sentence of your own")
        note = m.WaitingNote(preset=msg.preset, text=text)
        if msg.to is not None:
            target = self._waiting_target(msg.to)
            if target.conn is None:
                raise SignalingError("unknown-peer", "that client is reconnecting")
            out.send(target.conn, note)
            return
        self.note = note
        for p in self.clients("waiting"):
            out.send(p.conn, note)

    def _decline(self, t: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        assert isinstance(msg, m.Decline)
        target = self._waiting_target(msg.pid)
        out.send(target.conn, m.Declined(message=_short_message(msg.message), blocked=msg.block))
        self._evict(target, "declined", 4010, msg.block, out)
        self._send_queue(out)

    def _remove(self, t: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        assert isinstance(msg, m.Remove)
        target = self.members.get(Pid(msg.pid))
        if target is None or target.role != "client":
            raise SignalingError("unknown-peer", "no such client")
        was_admitted = target.status == "admitted"
        out.send(target.conn, m.Removed(message=_short_message(msg.message), blocked=msg.block))
        self._evict(target, "removed", 4011, msg.block, out)
        if was_admitted:
            self._send_roster(out)
            self._media_members(out)
        self._send_queue(out)

    def _evict(self, target: Member, reason: str, code: int, block: bool, out: _Out) -> None:
        """The seat leaves the room; its link stays usable (back to the waiting room) unless ``block``."""
        self._retire(target, out)
        del self.members[target.pid]
        if target.conn is not None:
            self.by_conn.pop(target.conn, None)
            out.effects.append(Close(target.conn, code, reason))
        if block:
            self.revoked.add(target.token_id)
            out.effects.append(RevokeToken(self.room_id, target.token_id, target.token_expires))

    def _send_to_waiting(self, t: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        assert isinstance(msg, m.SendToWaiting)
        target = self._admitted_client(msg.pid)
        self._to_waiting([target], "sent-back", now, out)

    def _return_admitted_to_waiting(self, now: float, out: _Out) -> None:
        self._to_waiting(self.clients("admitted"), "therapist-away", now, out)

    def _to_waiting(self, chosen: list[Member], reason: Literal["sent-back", "therapist-away"], now: float,
                    out: _Out) -> None:
        if not chosen:
            return
        for p in chosen:
            self._retire(p, out)
            p.status = "waiting"
            p.since = now
        for p in chosen:
            out.send(p.conn, m.Waiting(position=self._position(p) or 0, therapist=self.therapist_status(),
                                       reason=reason))
            self._send_resume(p, now, out)
        self._send_roster(out)
        self._send_queue(out, skip=set(p.pid for p in chosen))
        self._media_members(out)

    def _extend(self, t: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        assert isinstance(msg, m.Extend)
        add = msg.minutes * 60.0
        if self.extended + add > self.timing.overrun_cap + 1e-9:
            left = int((self.timing.overrun_cap - self.extended) // 60)
            raise SignalingError("extend-limit", f"at most {left} more minutes can be added")
        self.extended += add
        self.ends_at += add
        self.warned = {w for w in self.warned if now >= self.ends_at - w * 60}
        msg_out = m.Time(ends_at=iso(self.ends_at), extended_minutes=int(self.extended // 60),
                         overrun_left_minutes=int((self.timing.overrun_cap - self.extended) // 60))
        for p in self._connected():
            out.send(p.conn, msg_out)

    def _end_msg(self, t: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        out.effects.extend(self.end("therapist", now))

    def _leave(self, member: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        self._retire(member, out)
        del self.members[member.pid]
        if member.conn is not None:
            self.by_conn.pop(member.conn, None)
            out.effects.append(Close(member.conn, 1000, "left"))
        if member.role == "therapist":
            # Stepping out, not ending: the room locks and waits the grace for the therapist to come back; only
            # then do the admitted clients go back to the waiting room (tick). ``end`` is the only ending.
            self.away_since = now
            self.stepped_out = True
            self._broadcast_therapist(out)
            self._send_roster(out)
        elif member.status == "admitted":
            self._send_roster(out)
        else:
            self._send_queue(out)
        self._media_members(out)

    # ------------------------------------------------------------------ relay

    def _relay(self, sender: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        assert isinstance(msg, (m.Offer, m.Answer, m.Candidate))
        if sender.status != "admitted":
            raise SignalingError("not-allowed", "only admitted participants exchange media")
        if msg.to == m.SFU_PID and self.spec.topology == "sfu":
            out.effects.append(MediaSignal(self.room_id, sender.pid, msg))
            return
        target = self.members.get(Pid(msg.to))
        if target is None or target.status != "admitted" or target.pid == sender.pid or target.conn is None:
            raise SignalingError("unknown-peer", "no such participant in the session")
        relayed: m.ServerMessage
        if isinstance(msg, m.Candidate):  # most relayed messages are candidates
            relayed = m.PeerCandidate(from_=sender.pid, candidate=msg.candidate, sdp_mid=msg.sdp_mid,
                                      sdp_mline_index=msg.sdp_mline_index)
        elif isinstance(msg, m.Offer):
            relayed = m.PeerOffer(from_=sender.pid, sdp=msg.sdp, sig=msg.sig)
        else:
            relayed = m.PeerAnswer(from_=sender.pid, sdp=msg.sdp, sig=msg.sig)
        out.send(target.conn, relayed)

    def _key(self, sender: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        assert isinstance(msg, m.Key)
        if sender.status != "admitted":
            raise SignalingError("not-allowed", "only admitted participants exchange keys")
        relayed = m.PeerKey(from_=sender.pid, data=msg.data)
        if sender.role == "therapist":
            if msg.to is None:
                targets = [p for p in self.clients("admitted") if p.conn is not None]
            else:
                targets = [self._admitted_client(msg.to)]
        else:
            t = self.therapist
            if t is None or t.conn is None or (msg.to is not None and msg.to != t.pid):
                raise SignalingError("unknown-peer", "keys go to the therapist only")
            targets = [t]
        for p in targets:
            out.send(p.conn, relayed)

    def _app(self, sender: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        """An end-to-end encrypted app message, relayed untouched and never kept.

        Only admitted participants send and receive. The therapist sends to all admitted clients (``to: null``)
        or to one admitted client; a client sends to everyone else admitted (``to: null``) or to the therapist
        only: a private message to another client is refused (``not-allowed``), and receivers refuse it again.
        """
        assert isinstance(msg, m.App)
        if sender.status != "admitted":
            raise SignalingError("not-allowed", "only admitted participants exchange app messages")
        relayed = m.PeerApp(from_=sender.pid, data=msg.data)
        if msg.to is None:
            targets = [p for p in self.admitted() if p.pid != sender.pid and p.conn is not None]
        elif sender.role == "therapist":
            target = self._admitted_client(msg.to)
            if target.conn is None:
                raise SignalingError("unknown-peer", "that client is not connected")
            targets = [target]
        else:
            t = self.therapist
            if t is None or msg.to != t.pid:
                if t is not None or msg.to in self.members:
                    raise SignalingError("not-allowed", "a client sends app messages to everyone or to the therapist")
                raise SignalingError("unknown-peer", "the therapist is not in the session")
            if t.conn is None:
                raise SignalingError("unknown-peer", "the therapist is not connected")
            targets = [t]
        for p in targets:
            out.send(p.conn, relayed)

    def _media_state(self, sender: Member, msg: m.ClientMessage, now: float, out: _Out) -> None:
        """Relayed as is to the other admitted participants: the server learns only that a pause happened."""
        assert isinstance(msg, m.MediaState)
        if sender.status != "admitted":
            raise SignalingError("not-allowed", "only admitted participants report their media")
        relayed = m.PeerMediaState(from_=sender.pid, video=msg.video, quality=msg.quality)
        for p in self.admitted():
            if p.pid != sender.pid and p.conn is not None:
                out.send(p.conn, relayed)

    # ------------------------------------------------------------------ fan-out helpers

    def _connected(self) -> Iterable[Member]:
        return [p for p in self.members.values() if p.conn is not None]

    def _position(self, member: Member) -> int | None:
        if member.status != "waiting" or member.role != "client":
            return None
        return [p.pid for p in self.clients("waiting")].index(member.pid) + 1

    def _send_queue(self, out: _Out, skip: set[Pid] | None = None) -> None:
        t = self.therapist
        waiting = self.clients("waiting")
        if t is not None and t.conn is not None:
            out.send(t.conn, m.Queue(waiting=[
                m.QueueEntry(pid=p.pid, name=p.name, since=iso(p.since), connected=p.conn is not None,
                             intro=p.intro, check=p.check) for p in waiting]))
        status = self.therapist_status()
        for i, p in enumerate(waiting, start=1):
            if skip is None or p.pid not in skip:
                out.send(p.conn, m.Waiting(position=i, therapist=status))

    def _send_roster(self, out: _Out) -> None:
        members = self.admitted()
        roster = m.Roster(participants=[
            m.RosterEntry(pid=p.pid, role=p.role, name=p.name, connected=p.conn is not None) for p in members])
        # Group manners: in family and group rooms the members see each other's first names only (the therapist
        # sees what each client typed; the names the members' pages show are the therapist's signed ones).
        for_members = roster if self.spec.type not in ("family", "group") else m.Roster(participants=[
            m.RosterEntry(pid=p.pid, role=p.role, name=first_name(p.name) if p.role == "client" else p.name,
                          connected=p.conn is not None) for p in members])
        for p in members:
            out.send(p.conn, roster if p.role == "therapist" else for_members)

    def _broadcast_therapist(self, out: _Out, skip: Member | None = None) -> None:
        msg = m.Therapist(status=self.therapist_status())
        for p in self._connected():
            if p is not skip:
                out.send(p.conn, msg)

    def _send_ice(self, member: Member, now: float, out: _Out) -> None:
        """ICE servers (with ephemeral TURN credentials) go to admitted participants only."""
        servers, expires = self.services.ice_servers(member.pid, now, self.ends_at + self.timing.overrun_cap)
        member.ice_expires = expires
        out.send(member.conn, m.IceServers(ice_servers=servers, expires_at=iso(expires) if expires else None))

    def _resume_credential(self, member: Member, now: float) -> str:
        return self.services.sign_resume(ResumeClaims(
            room_id=self.room_id, pid=member.pid, token_id=member.token_id, role=member.role,
            admitted=member.role == "therapist" or member.status == "admitted", name=member.name,
            generation=self.generation(member.token_id)), now)

    def _send_resume(self, member: Member, now: float, out: _Out) -> None:
        member.resume_at = now
        out.send(member.conn, m.Resume(credential=self._resume_credential(member, now)))

    def _media_members(self, out: _Out) -> None:
        if self.spec.topology == "sfu":
            pids = frozenset(p.pid for p in self.admitted() if p.conn is not None)
            out.effects.append(MediaMembers(self.room_id, pids))


def _short_message(text: str | None) -> str | None:
    """The therapist's optional note to the client, spaces collapsed; empty means none."""
    return " ".join(text.split()) or None if text else None
