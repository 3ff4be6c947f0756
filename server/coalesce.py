"""Coalescing of state messages at the edge: the waiting-room ``queue`` (to the therapist) and ``waiting``
positions (to waiting clients) are state, not events. Only the latest matters, and at most ``RATE`` per second
go to one socket, however fast waiting clients come and go. Any other message to the same socket first flushes
the pending state, so the order a client sees is the core's order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from signaling import messages as m
from signaling.effects import ConnId

RATE: Final = 4.0
INTERVAL: Final = 1.0 / RATE


def coalescable(message: m.ServerMessage) -> bool:
    kind = type(message)
    return kind is m.Queue or (kind is m.Waiting and message.reason is None)  # type: ignore[union-attr]


class Coalescer:
    def __init__(self, deliver: Callable[[ConnId, m.ServerMessage], None], interval: float = INTERVAL) -> None:
        self.deliver = deliver
        self.interval = interval
        self._pending: dict[ConnId, m.ServerMessage] = {}
        self._last: dict[ConnId, float] = {}
        self._timers: dict[ConnId, asyncio.TimerHandle] = {}

    def hold(self, conn: ConnId, message: m.ServerMessage) -> bool:
        """True when ``message`` is kept to send later (the caller must not send it now)."""
        if not coalescable(message):
            if conn in self._pending:  # a timer runs only while a state waits
                self.flush(conn)
            return False
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self._last.get(conn)
        if conn not in self._pending and (last is None or now - last >= self.interval):
            self._last[conn] = now
            return False
        self._pending[conn] = message  # the newest state replaces an unsent older one
        if conn not in self._timers:
            at = (last if last is not None else now) + self.interval
            self._timers[conn] = loop.call_at(at, self.flush, conn)
        return True

    def flush(self, conn: ConnId) -> None:
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        message = self._pending.pop(conn, None)
        if message is not None:
            self._last[conn] = asyncio.get_running_loop().time()
            self.deliver(conn, message)

    def forget(self, conn: ConnId) -> None:
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        self._pending.pop(conn, None)
        self._last.pop(conn, None)

    def __len__(self) -> int:
        return len(self._pending) + len(self._timers) + len(self._last)
