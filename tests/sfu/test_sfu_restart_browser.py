"""Group media across a restart of the signaling process, with Chromium in the room (issue 10, item 7): the
therapist in Chromium, two aiortc clients (E2EE on), ``alcove serve`` killed (``kill -9``) mid-session and
started again. The SFU worker forwards on while no signaling process runs, the new process adopts it, the page
keeps its SFU connection (it still receives media, web/static/js/lib/sfu.js ``restartAll``), and the longest
gap in the frames every participant decodes is printed (``-s``) and bounded. And the other case of a signaling
reconnect: only the page's socket drops, the SFU drops its connection, and the page builds a new one.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q -s tests/sfu/test_sfu_restart_browser.py'
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from peer.participant import Participant
from tests.browser.conftest import TRACK_PCS, browser, decodes_from_all, frames, join, pages, wait_js
from tests.integration.test_faults import (
    FrameWatch,
    ServerProcess,
    everyone_gets,
    rejoin,
    timing_holds,
    workers_of,
)

pytestmark = [pytest.mark.sfu, pytest.mark.browser, pytest.mark.media, pytest.mark.usefixtures("media_namespace")]

__all__ = ["browser", "pages"]  # fixtures used by this module

TRACK_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.__ws = [];
  window.WebSocket = function (...args) { const ws = new Native(...args); window.__ws.push(ws); return ws; };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
})()"""

GAP_BOUND = 2.0
"""Seconds: the longest a stream may go without a decoded frame across the restart."""


@pytest.fixture
async def alcove(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """``alcove serve`` as a real process (the ``pages`` fixture uses its ``url``)."""
    server = ServerProcess(tmp_path, ALCOVE_MEDIA_WORKERS="1")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class PageWatch:
    """The page's decoded video frames per publisher, sampled every 100 ms: the longest gap."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.last: dict[str, tuple[int, float]] = {}
        self.gaps: dict[str, float] = {}
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                counts = await frames(self.page)
                now = time.monotonic()
                for pid, count in counts.items():
                    previous = self.last.get(pid)
                    if previous is None or count > previous[0]:
                        if previous is not None:
                            self.gaps[pid] = max(self.gaps.get(pid, 0.0), now - previous[1])
                        self.last[pid] = (count, now)
            await asyncio.sleep(0.1)

    def reset(self) -> None:
        self.gaps.clear()

    def longest(self) -> float:
        now = time.monotonic()
        return max([*self.gaps.values(), *(now - t for _, t in self.last.values()), 0.0])

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_group_media_with_chromium_survives_a_kill_9_of_the_signaling_process(
        alcove: ServerProcess, pages: Any) -> None:
    room = await alcove.create_room(type="group", clients=2, host="Dr. Ionescu")
    assert room["topology"] == "sfu"
    therapist = await pages.new(viewport={"width": 320, "height": 240})
    await therapist.add_init_script(TRACK_PCS)
    await join(therapist, room["therapist_link"])
    bots = [await Participant.join(alcove.url, link, name=f"Bot {i + 1}", fps=15, e2ee=True)
            for i, link in enumerate(room["client_links"])]
    watch: FrameWatch | None = None
    page_watch: PageWatch | None = None
    try:
        for i in range(len(bots)):
            await therapist.get_by_role("button", name=f"Admit Bot {i + 1}", exact=True).wait_for()
        await therapist.get_by_role("button", name="Admit all", exact=True).click()
        await decodes_from_all(therapist, len(bots), timeout=40)
        tpid = await therapist.evaluate("window.alcove.pid()")
        for b in bots:
            await b.wait_frames(tpid, video=10, timeout=30)
        await everyone_gets(bots, 10)
        [worker] = workers_of(alcove)
        watch, page_watch = FrameWatch(bots, also=(tpid,)), PageWatch(therapist)
        bot_from_page = {b.pid: b.frames_from(tpid)["video"] for b in bots}
        await asyncio.sleep(1.0)  # a second of steady state before the fault
        watch.reset()
        page_watch.reset()
        before = await frames(therapist)

        alcove.signal(signal.SIGKILL)
        await alcove.wait()
        down = time.monotonic()
        await wait_js(therapist, "!window.alcove.connected()", timeout=10)
        await everyone_gets(bots, 15)  # forwarding goes on without a signaling process
        rejoining = [asyncio.create_task(rejoin(b)) for b in bots]
        listening = await alcove.start()
        back = max(await asyncio.gather(*rejoining))
        await wait_js(therapist, "window.alcove.connected() && window.alcove.status() === 'admitted'", timeout=15)
        page_back = time.monotonic()
        await everyone_gets(bots, 30)
        for b in bots:
            await b.wait_frames(tpid, video=bot_from_page[b.pid] + 60, timeout=20)
        await asyncio.sleep(1.0)
        after = await frames(therapist)
        gap_bots, gap_page = watch.longest(), page_watch.longest()
        bots_of_page = {b.pid: watch.gaps.get((b.pid, tpid), 0.0) for b in bots}
        print(f"\nSFU restart with Chromium: server down {listening - down:.2f} s; bots back "
              f"{back - listening:.2f} s, the page {page_back - listening:.2f} s after it listened; "
              f"longest video gap: received by the bots {gap_bots:.2f} s (from the page "
              f"{max(bots_of_page.values()):.2f} s), received by the page {gap_page:.2f} s; the page's decoded "
              f"frames per publisher before/after: {[(before.get(b.pid), after.get(b.pid)) for b in bots]}; "
              f"SFU connections the page made: {await therapist.evaluate('window.__pcs.length')}")
        assert worker in workers_of(alcove)  # adopted
        assert await therapist.evaluate("window.__pcs.length") == 1  # the page kept its SFU connection
        assert all(after[b.pid] > before[b.pid] + 30 for b in bots), (before, after)
        if timing_holds():
            assert gap_bots < GAP_BOUND and gap_page < GAP_BOUND, (gap_bots, gap_page)
        assert all(b.failures == [] for b in bots)
    finally:
        for w in (watch, page_watch):
            if w is not None:
                await w.stop()
        for b in bots:
            await b.close()


async def test_a_page_whose_socket_alone_dropped_builds_a_new_sfu_connection(
        alcove: ServerProcess, pages: Any) -> None:
    room = await alcove.create_room(type="group", clients=1, host="Dr. Ionescu")
    therapist = await pages.new(viewport={"width": 320, "height": 240})
    await therapist.add_init_script(TRACK_PCS)
    await therapist.add_init_script(TRACK_SOCKETS)
    await join(therapist, room["therapist_link"])
    bot = await Participant.join(alcove.url, room["client_links"][0], name="Bot 1", fps=15, e2ee=True)
    try:
        await therapist.get_by_role("button", name="Admit Bot 1", exact=True).click()
        await decodes_from_all(therapist, 1, timeout=40)
        # the page's websocket alone drops (WebRTC goes on): the server sees the socket go, takes the page out
        # of the SFU's members, and the worker closes its connection; the page comes back on its own
        await therapist.evaluate("window.__ws.at(-1).close(3000)")
        await wait_js(therapist, "!window.alcove.connected()", timeout=15)
        await wait_js(therapist, "window.alcove.connected()", timeout=20)
        await wait_js(therapist, "window.__pcs.length === 2", timeout=10)  # a new SFU connection
        await decodes_from_all(therapist, 1, timeout=30)
        mark = bot.frames_from(await therapist.evaluate("window.alcove.pid()"))["video"]
        await bot.wait_frames(await therapist.evaluate("window.alcove.pid()"), video=mark + 15, timeout=20)
    finally:
        await bot.close()

