"""A group through the forwarding SFU with mixed clients: Chromium pages (web/static/js/lib/sfu.js) and aiortc
participants (peer/participant.py) in one room. Everyone decodes everyone; a removed client stops receiving;
the SFU never decodes (``/metrics``); a killed SFU worker is reported (``media-ended``) and media comes back
once every client has built a new connection.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/sfu/test_group_mixed.py'
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from peer.participant import Participant
from signaling import messages as m
from tests.browser.conftest import TRACK_PCS, browser, decodes_from_all, frames, join, pages, wait_for
from tests.conftest import AlcoveServer, sfu_decoded_frames

pytestmark = [pytest.mark.sfu, pytest.mark.browser, pytest.mark.media]

__all__ = ["browser", "pages"]  # fixtures used by this module

SMALL = {"width": 320, "height": 240}
PAGES = 3  # the therapist + 2 clients in Chromium
BOTS = 3  # aiortc clients

PCS = "[window.__pcs.length, window.__pcs.filter((pc) => pc.connectionState !== 'closed').length]"


@pytest.fixture
async def alcove(sfu_alcove: AlcoveServer, loopback_only: None) -> AlcoveServer:
    """The server with its SFU (the ``pages`` fixture uses ``alcove``)."""
    return sfu_alcove


async def bots_decode(bots: list[Participant], pids: list[str], since: dict[tuple[str, str], int] | None = None,
                      timeout: float = 25.0) -> None:
    """Every bot gets ≥ 10 more video frames (and audio) from every other pid in ``pids``."""
    since = since or {}

    async def one(bot: Participant, pid: str) -> None:
        base = since.get((bot.pid, pid), 0)
        await bot.wait_until(lambda: bot.frames_from(pid)["video"] >= base + 10
                             and bot.frames_from(pid)["audio"] >= 5, timeout, f"frames from {pid}")

    await asyncio.gather(*(one(b, pid) for b in bots for pid in pids if pid != b.pid))


async def test_group_of_six_chromium_and_aiortc_through_the_sfu(alcove: AlcoveServer, pages: Any) -> None:
    room = await alcove.create_room(type="group", clients=PAGES - 1 + BOTS, host="Dr. Ionescu")
    assert room["topology"] == "sfu"
    links = room["client_links"]

    async def new_page() -> Any:
        page = await pages.new(viewport=SMALL)
        await page.add_init_script(TRACK_PCS)
        return page

    therapist = await new_page()
    await join(therapist, room["therapist_link"])
    people = []
    for i in range(PAGES - 1):
        page = await new_page()
        await join(page, links[i], f"Page {i + 1}")
        people.append(page)
    # E2EE is on by default in the browser: the bots take part (intro, grant, epochs) with the admin links.
    bots = [await Participant.join(alcove.url, links[PAGES - 1 + i], name=f"Bot {i + 1}", fps=15, e2ee=True)
            for i in range(BOTS)]
    try:
        await _scenario(alcove, room, therapist, people, bots)
    finally:
        for bot in bots:
            await bot.close()


async def _scenario(alcove: AlcoveServer, room: dict[str, Any], therapist: Any, people: list[Any],
                    bots: list[Participant]) -> None:
    for name in [f"Page {i + 1}" for i in range(len(people))] + [f"Bot {i + 1}" for i in range(len(bots))]:
        await therapist.get_by_role("button", name=f"Admit {name}", exact=True).wait_for()
    await therapist.get_by_role("button", name="Admit all", exact=True).click()
    browsers = [therapist, *people]
    n = len(browsers) + len(bots)

    # Everyone decodes everyone: 6 publishers, 30 forwarded streams.
    await asyncio.gather(*(decodes_from_all(p, n - 1, timeout=40) for p in browsers),
                         bots_decode(bots, [*[await p.evaluate("window.alcove.pid()") for p in browsers],
                                            *[b.pid for b in bots]], timeout=40))
    page_pids = [await p.evaluate("window.alcove.pid()") for p in browsers]
    all_pids = [*page_pids, *[b.pid for b in bots]]
    for page, me in zip(browsers, page_pids, strict=True):
        assert set(await frames(page)) == set(all_pids) - {me}
        assert await page.evaluate(PCS) == [1, 1]  # one connection, to the SFU
    for bot in bots:
        assert bot.links == {} and bot.sfu is not None and bot.failures == []
    assert await sfu_decoded_frames(alcove) == 0

    # Remove a client (an aiortc one): it stops receiving, and nobody receives it any more.
    gone, bots = bots[0], bots[1:]
    await therapist.get_by_role("button", name="Remove Bot 1", exact=True).click()
    await therapist.get_by_role("dialog").get_by_role("button", name="Remove", exact=True).click()
    await gone.wait_until(lambda: gone.status == "removed" and gone.sfu is None, 5, "removed")
    rest_pids = [p for p in all_pids if p != gone.pid]

    async def nobody_has_it() -> bool:
        seen = [await frames(p) for p in browsers]
        return all(gone.pid not in f for f in seen)

    await wait_for(nobody_has_it, timeout=10, what="the others to drop the removed client")
    await asyncio.sleep(1.0)
    frozen_in = {pid: gone.frames_from(pid) for pid in rest_pids}
    frozen_out = {b.pid: b.frames_from(gone.pid) for b in bots}
    await asyncio.sleep(1.5)
    assert {pid: gone.frames_from(pid) for pid in rest_pids} == frozen_in
    assert {b.pid: b.frames_from(gone.pid) for b in bots} == frozen_out

    # Kill the room's SFU worker: every client is told (media-ended), builds a new connection, media is back.
    media = alcove.hub.media
    worker = media.worker_of(room["room_id"])
    assert worker is not None
    marks = {b.pid: b.mark() for b in bots}
    made_before = [(await p.evaluate(PCS))[0] for p in browsers]
    os.kill(worker, signal.SIGKILL)
    for b in bots:
        await b.wait_until(lambda b=b: any(isinstance(x, m.MediaEnded) for x in b.log[marks[b.pid]:]), 5,
                           "media-ended")

    async def rebuilt() -> bool:
        states = [await p.evaluate(PCS) for p in browsers]
        return all(made > before and open_ == 1 for (made, open_), before in zip(states, made_before, strict=True))

    await wait_for(rebuilt, timeout=10, what="each page to build a new SFU connection")
    since = {(b.pid, pid): b.frames_from(pid)["video"] for b in bots for pid in rest_pids}
    await asyncio.gather(*(decodes_from_all(p, len(rest_pids) - 1, timeout=30) for p in browsers),
                         bots_decode(bots, rest_pids, since, timeout=30))
    assert media.worker_of(room["room_id"]) not in (None, worker)
    for page in browsers:
        assert set(await frames(page)) <= set(rest_pids)
    assert await sfu_decoded_frames(alcove) == 0
