"""The registry: rooms by id, sockets by room, and the clock tick. Still sans-I/O."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from . import messages as m
from .effects import Close, ConnId, Effect, Pid, RoomEnded, RoomId, SeatGeneration, Send
from .errors import SignalingError
from .policy import Timing
from .room import Admission, Room, RoomSpec, Services


@dataclass(frozen=True)
class Joined:
    """Who a socket became in its room, and how it stands there."""

    room_id: RoomId
    pid: Pid
    role: m.Role
    status: m.Status


@dataclass(frozen=True)
class Connected:
    """The answer to a hello: ``joined`` is None when it was refused (the effects say why)."""

    joined: Joined | None
    effects: list[Effect]


@dataclass(frozen=True)
class Census:
    """Counts for the gauges: rooms by state, connected participants by role, waiting clients."""

    rooms: dict[str, int]
    participants: dict[m.Role, int]
    waiting: int


Footprint = tuple[str, int, int, int]
"""What one live room adds to the census: its state, connected therapists, connected admitted clients, connected
waiting clients."""

CENSUS_NEUTRAL: frozenset[type] = frozenset({m.Offer, m.Answer, m.Candidate, m.Key, m.App, m.MediaState, m.Note,
                                             m.Extend})
"""Client messages that never change who is in a room, connected or admitted (the relay's hot path): the census
is not counted again after them. Any other message is counted again."""


def footprint(room: Room, now: float) -> Footprint:
    """One room's share of the census (one pass over its members)."""
    therapists = clients = waiting = 0
    admitted = False
    for p in room.members.values():
        if p.role == "client":
            if p.status == "admitted":
                admitted = True  # connected or not: the session is on while an admitted client may come back
            if p.conn is None:
                continue
            if p.status == "waiting":
                waiting += 1
            else:
                clients += 1
        elif p.conn is not None:
            therapists += 1
    state = "scheduled" if now < room.opens_at else "in-session" if admitted else "open"
    return state, therapists, clients, waiting


class Rooms:
    def __init__(self, timing: Timing, services: Services) -> None:
        self.timing = timing
        self.services = services
        self.rooms: dict[RoomId, Room] = {}
        self.conn_room: dict[ConnId, RoomId] = {}
        self.ended: dict[RoomId, float] = {}  # room id -> refuse its tokens until
        self.generations: dict[str, tuple[int, float]] = {}  # token id -> (admission generation, until)
        # The census, kept as rooms change (a room is counted again after each input that may change it, never
        # every room at once): each live room's footprint, and their sums.
        self._counted: dict[RoomId, Footprint] = {}
        self._states = {"scheduled": 0, "open": 0, "in-session": 0}
        self._participants: dict[m.Role, int] = {"therapist": 0, "client": 0}
        self._waiting = 0
        # Each live room's next deadline (``Room.next_due``): the tick skips a room until then.
        self._due: dict[RoomId, float] = {}

    def get(self, room_id: str) -> Room | None:
        return self.rooms.get(RoomId(room_id))

    def is_over(self, spec: RoomSpec, now: float) -> bool:
        """Is the session of ``spec`` over? Ended here (even before anyone joined), or past its end."""
        if spec.room_id in self.ended:
            return True
        room = self.rooms.get(spec.room_id)
        return room.is_over(now) if room is not None else now >= spec.ends_at

    def connect(self, conn: ConnId, adm: Admission, hello: m.Hello, now: float) -> Connected:
        room_id = adm.spec.room_id
        if self.is_over(adm.spec, now):
            err = SignalingError("room-ended", "this session has ended")
            return Connected(None, [Send(conn, m.error_message(err)), Close(conn, err.close_code or 4000, err.code)])
        room = self.rooms.get(room_id)
        if room is None:
            room = Room(adm.spec, self.timing, self.services)
        known = self.generations.get(adm.token_id)
        if known is not None and known[0] > adm.generation:  # the room was dropped when it emptied: remember
            adm = dataclasses.replace(adm, generation=known[0])
        effects = room.connect(conn, adm, hello, now)
        pid = room.by_conn.get(conn)
        member = room.member(pid) if pid is not None else None
        if member is None:
            return Connected(None, self._after(room, effects, now))
        self.rooms[room_id] = room
        self.conn_room[conn] = room_id
        for e in effects:  # a resume may have replaced an older socket
            if isinstance(e, Close) and e.conn != conn:
                self.conn_room.pop(e.conn, None)
        return Connected(Joined(room_id, member.pid, member.role, member.status), self._after(room, effects, now))

    def receive(self, conn: ConnId, msg: m.ClientMessage, now: float) -> list[Effect]:
        room = self._room_of(conn)
        if room is None:
            return []
        return self._after(room, room.receive(conn, msg, now), None if type(msg) in CENSUS_NEUTRAL else now)

    def disconnect(self, conn: ConnId, now: float) -> list[Effect]:
        room = self._room_of(conn)
        self.conn_room.pop(conn, None)
        if room is None:
            return []
        return self._after(room, room.disconnect(conn, now), now)

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        due = self._due
        for room in list(self.rooms.values()):
            if due.get(room.room_id, now) > now:
                continue  # nothing of this room is due yet
            members = len(room.members)
            done = room.tick(now)
            # A tick changes the census only with an effect (an end, a return to the waiting room: a new seat
            # generation) or by dropping members whose grace ran out; a quiet room is not counted again.
            effects.extend(self._after(room, done, now if done or len(room.members) != members else None))
            if room.room_id in self.rooms:
                due[room.room_id] = room.next_due()
        for room_id, until in list(self.ended.items()):
            if now > until:
                del self.ended[room_id]
        for token_id, (_, until) in list(self.generations.items()):
            if now > until:
                del self.generations[token_id]
        return effects

    def end(self, room_id: str, reason: Literal["time", "therapist", "admin"], now: float,
            until: float | None = None) -> list[Effect]:
        """End a room (admin). Works for a room nobody has joined yet: its tokens are refused from now on."""
        room = self.rooms.get(RoomId(room_id))
        if room is None:
            rid = RoomId(room_id)
            stop = max(until or now, now)
            self.ended[rid] = stop
            return [RoomEnded(rid, reason, stop)]
        return self._after(room, room.end(reason, now), now)

    def evict(self, room_id: str) -> list[ConnId]:
        """Forget a room without ending it (another instance owns it now): the sockets to close so its
        participants resume there. No effect: nothing is revoked, nobody's seat changes."""
        room = self.rooms.pop(RoomId(room_id), None)
        if room is None:
            return []
        self._count(room, 0.0)
        self._due.pop(room.room_id, None)
        conns = [conn for conn, rid in self.conn_room.items() if rid == room.room_id]
        for conn in conns:
            del self.conn_room[conn]
        return conns

    def live_count(self) -> int:
        """Rooms held in memory (somebody joined and the session is not over)."""
        return len(self.rooms)

    def conn_of(self, room_id: str, pid: str) -> ConnId | None:
        """The socket of participant ``pid`` in room ``room_id``, if it is connected."""
        room = self.rooms.get(RoomId(room_id))
        member = room.member(pid) if room is not None else None
        return member.conn if member is not None else None

    def census(self, now: float) -> Census:
        """The counts for the gauges, kept up to date as rooms change (O(1): no walk over the rooms). A room's
        state is the one it had at its latest input or tick (``now`` is kept for callers)."""
        return Census({**self._states, "ended": len(self.ended)}, dict(self._participants), self._waiting)

    def _count(self, room: Room, now: float) -> None:
        """Count ``room`` again: its old footprint out of the sums, its new one (if it is still live) in."""
        old = self._counted.pop(room.room_id, None)
        new = footprint(room, now) if self.rooms.get(room.room_id) is room else None
        if old == new:
            if new is not None:
                self._counted[room.room_id] = new
            return
        if old is not None:
            self._states[old[0]] -= 1
            self._participants["therapist"] -= old[1]
            self._participants["client"] -= old[2]
            self._waiting -= old[3]
        if new is not None:
            self._counted[room.room_id] = new
            self._states[new[0]] += 1
            self._participants["therapist"] += new[1]
            self._participants["client"] += new[2]
            self._waiting += new[3]

    def _room_of(self, conn: ConnId) -> Room | None:
        room_id = self.conn_room.get(conn)
        return self.rooms.get(room_id) if room_id is not None else None

    def _after(self, room: Room, effects: list[Effect], now: float | None) -> list[Effect]:
        """Bookkeeping after a room acted: forget closed sockets, ended rooms and rooms nobody holds; count the
        room again for the census unless ``now`` is None (an input that cannot change it)."""
        for e in effects:
            if type(e) is Send:  # the relay's one effect: nothing to keep
                continue
            if isinstance(e, Close):
                self.conn_room.pop(e.conn, None)
            elif isinstance(e, RoomEnded):
                self.ended[e.room_id] = e.until
            elif isinstance(e, SeatGeneration):
                self.generations[e.token_id] = (e.generation, e.until)
        if room.ended or (room.is_empty() and room.room_id in self.rooms):
            self.rooms.pop(room.room_id, None)
        if now is not None:
            self._count(room, now)
            if self.rooms.get(room.room_id) is room:
                self._due[room.room_id] = room.next_due()
        if room.room_id not in self.rooms:
            self._due.pop(room.room_id, None)
        return effects
