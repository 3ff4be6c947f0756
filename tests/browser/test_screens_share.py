"""Screenshots of screen sharing (issue 18), desktop (1280×720) and phone (390×844), English and Romanian: the
sharer's bar and the viewer's share shown large with the speakers small; axe-core finds nothing serious there.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_screens_share.py'
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import TRACK_PCS, decodes_from_all, join, shot, wait_js
from .test_e2ee_browser import admit, secure_room
from .test_reach import AXE, AXE_RUN
from .test_share import browser, share_decodes

__all__ = ["browser"]  # the Chromium of test_share.py (a fake screen picked without a picker)

pytestmark = [pytest.mark.browser, pytest.mark.e2ee]

DESKTOP = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}


async def test_screens_of_sharing(alcove: Any, pages: Any) -> None:
    _room, therapist, (client,), (link,) = await secure_room(alcove, pages)
    for page in (therapist, client):
        await page.context.add_init_script(path=str(AXE))
    await client.add_init_script(TRACK_PCS)
    await therapist.reload()
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    await join(client, link, "Alex")
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1)
    t_pid = await therapist.evaluate("window.alcove.pid()")
    await therapist.get_by_role("button", name="Share screen", exact=True).click()
    await share_decodes(client, t_pid)
    for page in (therapist, client):
        await page.set_viewport_size(DESKTOP)
    for lang, switch in (("en", None), ("ro", "Română")):
        if switch:
            for page in (therapist, client):
                await page.get_by_role("button", name=switch, exact=True).first.click()
                await wait_js(page, f"document.documentElement.lang === {lang!r}")
        for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            for page in (therapist, client):
                await page.set_viewport_size(viewport)
                await page.evaluate("window.scrollTo(0, 0)")
            await wait_js(client, "document.getElementById('share-video').videoWidth > 0")
            await client.wait_for_timeout(400)
            await shot(therapist, f"share-sharer-{size}-{lang}")
            await shot(client, f"share-viewer-{size}-{lang}")
            for who, page in (("sharer", therapist), ("viewer", client)):
                found = await page.evaluate(AXE_RUN)
                assert not found, f"{who} {size} {lang}: axe-core serious/critical violations: {found}"
