"""E2EE across a restart of the server with the therapist in Chromium, back before the client: the restarted
server's roster first lists the therapist alone, and the console keeps the client in the signed membership within
the resume grace (web/static/js/lib/e2ee-flow.js ``TherapistE2ee.onRoster``) and its connection to the client
(web/static/js/lib/call.js ``Call.hold``), so both sides decrypt afterwards and
nothing is refused.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q -s tests/browser/test_restart_e2ee.py'
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from peer.participant import Participant
from tests.browser.conftest import browser, decodes_from_all, frames, join, pages, wait_js
from tests.integration.test_faults import ServerProcess, rejoin

pytestmark = [pytest.mark.browser, pytest.mark.media, pytest.mark.e2ee, pytest.mark.usefixtures("media_namespace")]

__all__ = ["browser", "pages"]  # fixtures used by this module


@pytest.fixture
async def alcove(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """``alcove serve`` as a real process (the ``pages`` fixture uses its ``url``)."""
    server = ServerProcess(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_the_console_back_before_its_client_keeps_it_keyed(alcove: ServerProcess, pages: Any) -> None:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    therapist = await pages.new(viewport={"width": 320, "height": 240})
    await join(therapist, room["therapist_link"])
    bot = await Participant.join(alcove.url, room["client_links"][0], name="Bot 1", fps=15, e2ee=True)
    try:
        await therapist.get_by_role("button", name="Admit Bot 1", exact=True).click()
        await decodes_from_all(therapist, 1, timeout=40)
        tpid = await therapist.evaluate("window.alcove.pid()")
        await bot.wait_frames(tpid, video=10, timeout=30)
        epoch = (await therapist.evaluate("window.alcove.e2ee()"))["epoch"]

        alcove.signal(signal.SIGKILL)
        await alcove.wait()
        await wait_js(therapist, "!window.alcove.connected()", timeout=10)
        listening = await alcove.start()
        await wait_js(therapist, "window.alcove.connected() && window.alcove.status() === 'admitted'", timeout=20)
        page_back = time.monotonic()
        await asyncio.sleep(1.0)  # the console has the fresh server's roster without its client
        # ... and shows it all the same: it still holds the key, and the therapist can take it out of it
        unlisted = therapist.locator('#people-list li[data-unlisted="true"]')
        await unlisted.get_by_text("Bot 1").wait_for(timeout=5000)
        assert await unlisted.get_by_role("button", name="Take Bot 1 out of the session key").count() == 1
        back = await rejoin(bot)
        # a new epoch for the returning client, and media both ways under it
        await wait_js(therapist, f"window.alcove.e2ee().epoch > {epoch}", timeout=15)
        await bot.wait_until(lambda: bot.keystate is not None and (bot.keystate.send_epoch or 0) > epoch, 15,
                             "the client on the new epoch")
        from_page, at_page = bot.frames_from(tpid)["video"], (await frames(therapist)).get(bot.pid, 0)
        # the page held its connection to the client while the fresh server's roster lacked it (lib/call.js
        # `hold`): the media of before the restart is still counted on both sides, nothing was renegotiated
        assert from_page > 0 and at_page > 0, (from_page, at_page)
        await bot.wait_frames(tpid, video=from_page + 30, timeout=20)
        await decodes_from_all(therapist, 1, timeout=20, min_frames=at_page + 30)
        e2ee = await therapist.evaluate("window.alcove.e2ee()")
        print(f"\nrestart, console back first (E2EE): the page back {page_back - listening:.2f} s, the client "
              f"{back - listening:.2f} s after the server listened; epoch {epoch} -> {e2ee['epoch']}; refusals: "
              f"page {e2ee['refusals']}, client {bot.refusals}")
        assert e2ee["refusals"] == [] and e2ee["failures"] == []
        assert bot.refusals == [] and bot.security_failures == [] and bot.failures == []
    finally:
        await bot.close()
