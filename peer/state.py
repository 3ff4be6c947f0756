"""What the server told a participant, mirrored: identity, status, room, roster, queue, presence, time, ICE.

:class:`RoomState` only records; it never sends, negotiates or touches keys. It is fed every server message
(:meth:`RoomState.apply`), dispatched by a table keyed by message type. The status is set by the participant
(:meth:`RoomState.set_status`), which decides when a message changes it; listeners hear every change.

:class:`Tasks` runs a participant's background work: it keeps the order of sends from synchronous code and
records the exceptions of failed tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from signaling import messages as m

from .signaling_client import SignalingClient

log = logging.getLogger("alcove.peer")

StatusListener = Callable[[str, str], None]
"""Called with (previous status, new status)."""


class RoomState:
    """The participant's mirror of the room, from server messages."""

    def __init__(self) -> None:
        self.pid: str = ""
        self.role: str = ""
        self.status: str = "new"
        """``waiting``, ``admitted``, then ``ended``/``declined``/``removed``/``left``/``closed``."""
        self.room: m.RoomInfo | None = None
        self.ends_at: str | None = None
        self.therapist: str = "absent"
        self.position: int | None = None
        self.roster: dict[str, m.RosterEntry] = {}
        self.queue: list[m.QueueEntry] = []
        self.ice_servers: list[dict[str, Any]] = []
        self.ice_known = False
        self.log: list[m.ServerMessage] = []
        """Every server message received, in order, across reconnections."""
        self.errors: list[m.Error] = []
        self.admitted_at: float | None = None
        self.ended_reason: str | None = None
        self.changed = asyncio.Event()
        self.status_listeners: list[StatusListener] = []
        self._table: dict[type[m.ServerMessage], Callable[[Any], None]] = {
            m.Welcome: self._welcome,
            m.Waiting: self._waiting,
            m.Roster: self._roster,
            m.Queue: self._queue,
            m.IceServers: self._ice_servers,
            m.Therapist: self._therapist,
            m.Time: self._time,
            m.SessionEnded: self._session_ended,
            m.Error: self.errors.append,
        }

    # ------------------------------------------------------------------ recording

    def apply(self, msg: m.ServerMessage) -> None:
        self.log.append(msg)
        self.changed.set()
        handler = self._table.get(type(msg))
        if handler is not None:
            handler(msg)

    def _welcome(self, msg: m.Welcome) -> None:
        self.pid, self.role, self.room = msg.pid, msg.role, msg.room
        self.ends_at = msg.room.ends_at
        self.therapist, self.position = msg.therapist, msg.position

    def _waiting(self, msg: m.Waiting) -> None:
        self.position, self.therapist = msg.position, msg.therapist

    def _roster(self, msg: m.Roster) -> None:
        self.roster = {p.pid: p for p in msg.participants}

    def _queue(self, msg: m.Queue) -> None:
        self.queue = list(msg.waiting)

    def _ice_servers(self, msg: m.IceServers) -> None:
        self.ice_servers = list(msg.ice_servers)
        self.ice_known = True

    def _therapist(self, msg: m.Therapist) -> None:
        self.therapist = msg.status

    def _time(self, msg: m.Time) -> None:
        self.ends_at = msg.ends_at

    def _session_ended(self, msg: m.SessionEnded) -> None:
        self.ended_reason = msg.reason

    # ------------------------------------------------------------------ status

    def set_status(self, status: str) -> None:
        previous, self.status = self.status, status
        if status == "admitted" and previous != "admitted":
            self.admitted_at = time.monotonic()
        if (previous == "admitted" and status != "admitted") or status in ("ended", "declined", "removed"):
            self.roster = {}
        for listener in self.status_listeners:
            listener(previous, status)

    # ------------------------------------------------------------------ questions

    @property
    def sfu_room(self) -> bool:
        return self.room is not None and self.room.topology == "sfu"

    def peers(self) -> list[str]:
        """Admitted remote pids (from the roster)."""
        return [pid for pid in self.roster if pid != self.pid]

    def pid_of(self, name: str) -> str:
        """The pid of a waiting client or roster member by display name."""
        for q in self.queue:
            if q.name == name:
                return q.pid
        for r in self.roster.values():
            if r.name == name:
                return r.pid
        raise KeyError(name)

    async def wait_until(self, condition: Callable[[], bool], timeout: float, what: str, who: str) -> None:
        """Wait until ``condition()`` holds (checked on every change and every 50 ms); TimeoutError if not."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{who}: not {what or 'reached'} within {timeout} s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.05))


class Tasks:
    """A participant's background tasks and its ordered sends on the current signaling client."""

    def __init__(self) -> None:
        self.sc: SignalingClient | None = None
        self.failures: list[BaseException] = []
        """Exceptions of the participant's own tasks (negotiation, candidates)."""
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._send_lock = asyncio.Lock()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self.closing:
            self.failures.append(task.exception())  # type: ignore[arg-type]
            log.warning("participant task %s failed: %r", task.get_name(), task.exception())

    def send_soon(self, msg: m.ClientMessage) -> None:
        """Send from synchronous code, keeping the order of calls."""
        self.spawn(self.send_in_order(msg), "alcove-send")

    async def send_in_order(self, msg: m.ClientMessage) -> None:
        async with self._send_lock:
            if self.sc is not None and not self.sc.closed:
                await self.sc.send(msg)

    async def drain(self) -> None:
        """Cancel every task but the peer-connection shutdowns, and wait for all of them."""
        while self._tasks:
            tasks = list(self._tasks)
            for t in tasks:
                if t.get_name() != "alcove-close-pc":
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
