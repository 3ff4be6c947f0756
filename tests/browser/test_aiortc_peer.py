"""A browser and the Python aiortc participant in one room: both decode each other (mesh, no rollback on the
aiortc side: it offers only to larger pids and otherwise answers)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import decodes_from_all, join

pytestmark = pytest.mark.browser


async def test_browser_therapist_and_aiortc_client_decode_each_other(alcove: Any, pages: Any) -> None:
    participant = pytest.importorskip("peer.participant")
    hooks = pytest.importorskip("rtc.aiortc_hooks")
    hooks.allow_loopback_candidates()
    room = await alcove.create_room(type="couple", host="Dr. Ionescu")
    therapist = await pages.new()
    await join(therapist, room["therapist_link"])
    # E2EE is on by default in the browser: the bots make an intro with the admin link (no s/tk), check the
    # grant and follow the epochs; the safety code is what authenticates them.
    bots = [await participant.Participant.join(alcove.url, link, name=f"Bot {i + 1}", e2ee=True)
            for i, link in enumerate(room["client_links"])]
    try:
        await therapist.get_by_role("button", name="Admit Bot 2", exact=True).wait_for()
        for i in range(len(bots)):
            await therapist.get_by_role("button", name=f"Admit Bot {i + 1}", exact=True).click()
        await decodes_from_all(therapist, len(bots), timeout=30)
        therapist_pid = await therapist.evaluate("window.alcove.pid()")
        for bot in bots:
            await bot.wait_frames(therapist_pid, video=10, timeout=30)
            # the same safety code on both sides
            sas = bot.sas
            assert sas is not None
            text = ",".join(str(i) for i in sas.indices) + "|" + ",".join(str(d) for d in sas.decimal)
            assert await therapist.evaluate(f"window.alcove.e2ee().sasOf[{bot.pid!r}]") == text
    finally:
        for bot in bots:
            await bot.close()
