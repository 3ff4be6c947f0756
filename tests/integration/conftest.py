"""Fixtures for the participant and probe integration tests: see tests/conftest.py (join, media_namespace).

Every integration test also runs under ``no_leaks``: once it and its fixtures are done, the asyncio tasks and the
process's sockets are back to where they were, and every server it stopped holds no socket, no pending queue
update, no half-open slot, no ticket past its lifetime and, once the grace has passed, no room.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.state import THROTTLES
from server.tokens import TICKET_TTL

from ..conftest import AlcoveServer

SETTLE = 5.0  # seconds for closing transports and peer connections to finish


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def live_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if not t.done() and t is not asyncio.current_task()}


async def settle(condition: Any) -> bool:
    """Yield to the loop until ``condition()`` holds or SETTLE seconds passed (never waits on a fake clock)."""
    deadline = time.monotonic() + SETTLE
    while not condition():
        if time.monotonic() > deadline:
            return False
        gc.collect()
        await asyncio.sleep(0.02)
    return True


def server_leaks(hub: Any, app: Any, clock: Any) -> list[str]:
    leaks = []
    if hub.connections:
        leaks.append(f"{len(hub.connections)} connection(s) still registered")
    if len(hub.coalescer):
        leaks.append("coalescer state left")
    if app[THROTTLES].pending:
        leaks.append("half-open websocket slots still held")
    if [t for t, (_, until) in hub.tokens._tickets.items() if until > clock() + TICKET_TTL]:
        leaks.append("a ticket outlives its lifetime")
    clock.advance(hub.config.timing.grace + 1)
    try:
        hub.rooms.tick(clock())  # the core alone: the server's sockets and media are gone
    finally:
        clock.advance(-(hub.config.timing.grace + 1))
    if hub.rooms.rooms:
        leaks.append(f"{len(hub.rooms.rooms)} room(s) left after the grace")
    return leaks


@pytest.fixture(autouse=True)
async def no_leaks(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    stopped: list[tuple[Any, Any, Any]] = []
    original_stop = AlcoveServer.stop

    async def stop(self: AlcoveServer) -> None:
        app = self.runner.app if self.runner is not None else None
        await original_stop(self)
        if app is not None:
            from server.state import HUB

            stopped.append((app[HUB], app, self.clock))

    monkeypatch.setattr(AlcoveServer, "stop", stop)
    tasks, sockets = live_tasks(), open_sockets()
    yield
    problems = [leak for hub, app, clock in stopped for leak in server_leaks(hub, app, clock)]
    if not await settle(lambda: not (live_tasks() - tasks)):
        problems.append(f"tasks left: {sorted(t.get_name() for t in live_tasks() - tasks)}")
    if not await settle(lambda: open_sockets() <= sockets):
        problems.append(f"{open_sockets() - sockets} socket(s) left open")
    assert not problems, problems
