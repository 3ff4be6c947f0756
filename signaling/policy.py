"""Session types, their defaults, and the room's timing policy (all configurable)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .messages import SessionType, Topology


@dataclass(frozen=True)
class SessionKind:
    max_clients: int
    minutes: int
    topology: Topology


DEFAULT_KINDS: Final[dict[SessionType, SessionKind]] = {
    "individual": SessionKind(max_clients=1, minutes=50, topology="mesh"),
    "couple": SessionKind(max_clients=2, minutes=75, topology="mesh"),
    "family": SessionKind(max_clients=6, minutes=90, topology="sfu"),
    "group": SessionKind(max_clients=10, minutes=90, topology="sfu"),
}


@dataclass(frozen=True)
class Timing:
    """Times in seconds."""

    early_join: float = 15 * 60
    grace: float = 120.0
    overrun_cap: float = 15 * 60
    warnings_minutes: tuple[int, ...] = (10, 5, 1)
    waiting_extra: int = 4  # waiting room holds seats*2 + this many clients at most

    def __post_init__(self) -> None:
        if self.grace <= 0 or self.early_join < 0 or self.overrun_cap < 0:
            raise ValueError("timing values must be positive")
