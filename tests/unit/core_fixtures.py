"""Helpers for synchronous core tests: deterministic services, a room, and tiny constructors."""

from __future__ import annotations

import itertools

from signaling import messages as m
from signaling.effects import ConnId, Effect, RoomId, Send
from signaling.policy import Timing
from signaling.room import Admission, ResumeClaims, Room, RoomSpec

T0 = 1_800_000_000.0  # a fixed "now" for the scheduled start


class FakeServices:
    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def new_pid(self) -> str:
        return f"p{next(self._ids)}"

    def sign_resume(self, claims: ResumeClaims, now: float) -> str:
        return f"R:{claims.pid}:{int(claims.admitted)}"

    def ice_servers(self, pid: str, now: float, ends_at: float) -> tuple[list[dict[str, object]], float | None]:
        return [], None


def spec(type: m.SessionType = "individual", seats: int = 1, minutes: float = 50, topology: m.Topology = "mesh",
         room_id: str = "r1") -> RoomSpec:
    return RoomSpec(room_id=RoomId(room_id), type=type, starts_at=T0, ends_at=T0 + minutes * 60, seats=seats,
                    topology=topology, host="Dr. Pop")


def admission(s: RoomSpec, role: m.Role, token: str, resume: ResumeClaims | None = None) -> Admission:
    return Admission(spec=s, role=role, token_id=token, token_expires=s.ends_at + 900, resume=resume)


def hello(name: str | None = None) -> m.Hello:
    return m.Hello(v=1, ticket="t", name=name)


def C(name: str) -> ConnId:
    return ConnId(name)


def sent(effects: list[Effect], conn: str | None = None) -> list[m.ServerMessage]:
    return [e.message for e in effects if isinstance(e, Send) and (conn is None or e.conn == conn)]


def types(effects: list[Effect], conn: str) -> list[str]:
    return [m.tag_of(msg) for msg in sent(effects, conn)]


def new_room(s: RoomSpec | None = None, timing: Timing | None = None) -> Room:
    return Room(s or spec(), timing or Timing(), FakeServices())
