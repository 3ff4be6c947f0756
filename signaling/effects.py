"""The only outputs of the core. The edge (server/) performs them, in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

from .messages import ClientMessage, ServerMessage

ConnId = NewType("ConnId", str)
RoomId = NewType("RoomId", str)
Pid = NewType("Pid", str)


@dataclass(frozen=True)
class Send:
    """Send ``message`` on socket ``conn``."""

    conn: ConnId
    message: ServerMessage


@dataclass(frozen=True)
class Close:
    """Close socket ``conn`` (after the messages queued before it)."""

    conn: ConnId
    code: int
    reason: str


@dataclass(frozen=True)
class RevokeToken:
    """Refuse the room token ``token_id`` from now until ``until`` (epoch seconds); persist it."""

    room_id: RoomId
    token_id: str
    until: float


@dataclass(frozen=True)
class SeatGeneration:
    """The seat held by room token ``token_id`` left the session (sent back, left, removed, declined, grace
    expired): its admission generation is now ``generation``, and resume credentials of older generations never
    admit again. Persist it (an opaque id and a number) until ``until``, so a restart keeps refusing them."""

    room_id: RoomId
    token_id: str
    generation: int
    until: float


@dataclass(frozen=True)
class RoomEnded:
    """The room is over: refuse each of its tokens until ``until``; persist it."""

    room_id: RoomId
    reason: str
    until: float


@dataclass(frozen=True)
class MediaSignal:
    """A relay message addressed to the room's SFU (``to == "sfu"``), stamped with its sender."""

    room_id: RoomId
    pid: Pid
    message: ClientMessage


@dataclass(frozen=True)
class MediaMembers:
    """SFU rooms: the set of admitted, connected pids changed (the SFU forwards only between these)."""

    room_id: RoomId
    pids: frozenset[str]


Effect = Send | Close | RevokeToken | SeatGeneration | RoomEnded | MediaSignal | MediaMembers
