"""Step out vs end (issue 17, item 3).

The therapist's "Step out" asks first; the clients then see "Your therapist stepped out and will be back" and stay
in the session until the grace runs out (nobody is sent away before); then they wait, and "Admit all" brings a
couple back in one click.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_console_stepout.py'
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import expect

from .conftest import decodes_from_all, join, shot

pytestmark = pytest.mark.browser

STEPPED_OUT = "Your therapist stepped out and will be back. Please stay on this page."


async def test_step_out_keeps_the_couple_until_the_grace_then_admit_all(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="couple", clients=2, host="Dr. Ionescu")
    therapist = await pages.new(viewport={"width": 1280, "height": 720})
    await join(therapist, room["therapist_link"])
    clients = []
    for name, link in zip(("Alex", "Sam"), room["client_links"], strict=True):
        page = await pages.new(viewport={"width": 390, "height": 844})
        await join(page, link, name)
        clients.append(page)
    await therapist.get_by_role("button", name="Admit Sam", exact=True).wait_for()
    await therapist.get_by_role("button", name="Admit all", exact=True).click()
    await asyncio.gather(*(decodes_from_all(p, 2, timeout=45) for p in clients))

    # "Leave" is now "Step out", and it asks first; Cancel changes nothing.
    assert await therapist.get_by_role("button", name="Leave", exact=True).count() == 0
    step_out = therapist.get_by_role("button", name="Step out", exact=True)
    await step_out.click()
    dialog = therapist.get_by_role("dialog", name="Step out of the session?")
    await dialog.get_by_role("button", name="Cancel", exact=True).click()
    await dialog.wait_for(state="hidden")
    assert await therapist.evaluate("document.activeElement.id") == "btn-leave"
    await step_out.click()
    await shot(therapist, "console-step-out-dialog")
    await dialog.get_by_role("button", name="Step out", exact=True).click()
    await therapist.get_by_role("heading", name="You stepped out").wait_for()
    for page in clients:
        await page.locator("#banners").get_by_text(STEPPED_OUT).wait_for()
    await shot(clients[0], "phone-therapist-stepped-out")

    # Nobody is sent away before the grace.
    await alcove.advance(alcove.config.timing.grace - 5)
    await asyncio.sleep(0.5)  # a message to the waiting room would arrive well within this
    for page in clients:
        assert await page.locator("#view-session").is_visible()
        assert not await page.locator("#view-waiting").is_visible()

    # After it, both wait; the therapist comes back and admits the couple with one click.
    await alcove.advance(10)
    for page in clients:
        await page.get_by_role("heading", name="Waiting for your therapist").wait_for()
    await therapist.get_by_role("button", name="Rejoin", exact=True).click()
    await therapist.get_by_role("button", name="Join", exact=True).click()
    for name in ("Alex", "Sam"):  # each one's introduction checked again by the returning therapist's page
        await expect(therapist.get_by_role("button", name=f"Admit {name}", exact=True)).to_be_enabled(timeout=20000)
    await therapist.get_by_role("button", name="Admit all", exact=True).click()
    # Both are admitted by the one click.
    for page in clients:
        await page.get_by_role("button", name="Mute", exact=True).wait_for()
    await therapist.get_by_text("Clients admitted: 2 of 2").wait_for()
    # and media flows again between all three: the therapist came back with a new connection (a new pid) and its
    # signed SDP reaches the clients before its next epoch names that pid (it was refused as "outside the signed
    # roster" before)
    await asyncio.gather(*(decodes_from_all(p, 2, timeout=45) for p in (therapist, *clients)))
