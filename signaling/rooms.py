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


class Rooms:
    def __init__(self, timing: Timing, services: Services) -> None:
        self.timing = timing
        self.services = services
        self.rooms: dict[RoomId, Room] = {}
        self.conn_room: dict[ConnId, RoomId] = {}
        self.ended: dict[RoomId, float] = {}  # room id -> refuse its tokens until
        self.generations: dict[str, tuple[int, float]] = {}  # token id -> (admission generation, until)

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
            return Connected(None, self._after(room, effects))
        self.rooms[room_id] = room
        self.conn_room[conn] = room_id
        for e in effects:  # a resume may have replaced an older socket
            if isinstance(e, Close) and e.conn != conn:
                self.conn_room.pop(e.conn, None)
        return Connected(Joined(room_id, member.pid, member.role, member.status), self._after(room, effects))

    def receive(self, conn: ConnId, msg: m.ClientMessage, now: float) -> list[Effect]:
        room = self._room_of(conn)
        if room is None:
            return []
        return self._after(room, room.receive(conn, msg, now))

    def disconnect(self, conn: ConnId, now: float) -> list[Effect]:
        room = self._room_of(conn)
        self.conn_room.pop(conn, None)
        if room is None:
            return []
        return self._after(room, room.disconnect(conn, now))

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for room in list(self.rooms.values()):
            effects.extend(self._after(room, room.tick(now)))
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
        return self._after(room, room.end(reason, now))

    def evict(self, room_id: str) -> list[ConnId]:
        """Forget a room without ending it (another instance owns it now): the sockets to close so its
        participants resume there. No effect: nothing is revoked, nobody's seat changes."""
        room = self.rooms.pop(RoomId(room_id), None)
        if room is None:
            return []
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
        states = {"scheduled": 0, "open": 0, "in-session": 0, "ended": len(self.ended)}
        participants: dict[m.Role, int] = {"therapist": 0, "client": 0}
        waiting = 0
        for room in self.rooms.values():
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

    def _room_of(self, conn: ConnId) -> Room | None:
        room_id = self.conn_room.get(conn)
        return self.rooms.get(room_id) if room_id is not None else None

    def _after(self, room: Room, effects: list[Effect]) -> list[Effect]:
        """Bookkeeping after a room acted: forget closed sockets, ended rooms and rooms nobody holds."""
        for e in effects:
            if isinstance(e, Close):
                self.conn_room.pop(e.conn, None)
            elif isinstance(e, RoomEnded):
                self.ended[e.room_id] = e.until
            elif isinstance(e, SeatGeneration):
                self.generations[e.token_id] = (e.generation, e.until)
        if room.ended or (room.is_empty() and room.room_id in self.rooms):
            self.rooms.pop(room.room_id, None)
        return effects
