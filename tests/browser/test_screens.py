"""The remaining states, each checked and saved as a screenshot in docs/screenshots/."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from .conftest import decodes_from_all, join, shot, wait_js

pytestmark = pytest.mark.browser

DENY_MEDIA = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""


async def test_denied_camera_and_microphone_offer_joining_without_them(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    page = await pages.new(grant_media=False)
    await page.add_init_script(DENY_MEDIA)
    await page.goto(room["client_links"][0])
    await page.get_by_role("heading", name="Camera and microphone are blocked").wait_for()
    await page.get_by_label("Your name").fill("Alex")
    await shot(page, "join-permission-denied", full_page=True)
    await page.get_by_role("button", name="Join without camera and microphone").click()
    await page.get_by_text("You will join without camera and microphone.").wait_for()
    await page.get_by_role("button", name="Join", exact=True).click()
    await page.get_by_role("heading", name="Waiting for your therapist").wait_for()


async def _session(alcove: Any, pages: Any, **room_args: Any) -> tuple[Any, Any, dict[str, Any]]:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu", **room_args)
    therapist = await pages.new()
    client = await pages.new()
    await join(therapist, room["therapist_link"])
    await join(client, room["client_links"][0], "Alex")
    await therapist.get_by_role("button", name="Admit Alex", exact=True).click()
    await decodes_from_all(client, 1)
    return therapist, client, room


async def test_time_warning_and_extension_are_calm_banners(alcove: Any, pages: Any) -> None:
    therapist, client, _ = await _session(alcove, pages, duration_minutes=50)
    await alcove.advance(45 * 60 + 5)  # 4:55 left: the 5-minute warning
    warning = re.compile(r"^Ends at \d\d:\d\d \S+ — \d+ minutes? left\.$")  # the end, its zone, the time left
    banner = client.get_by_role("status").get_by_text(warning)
    await banner.wait_for()
    await therapist.locator("#banners").get_by_text(warning).wait_for()
    await shot(client, "warning-banner")
    await therapist.get_by_role("button", name="Extend 10 min", exact=True).click()
    await client.get_by_text("The session was extended by 10 minutes.").wait_for()


def drop_socket(alcove: Any, role: str) -> None:
    hub = alcove.hub
    for room in hub.rooms.rooms.values():
        for member in room.members.values():
            if member.role == role and member.conn is not None:
                hub.connections[member.conn].ws._req.transport.abort()
                return
    raise AssertionError(f"no connected {role}")


async def test_client_is_told_when_the_therapist_is_reconnecting(alcove: Any, pages: Any) -> None:
    therapist, client, _ = await _session(alcove, pages)
    await therapist.context.set_offline(True)
    drop_socket(alcove, "therapist")
    await client.locator("#banners").get_by_text("Your therapist is reconnecting. Please stay on this page.").wait_for()
    await therapist.get_by_text("Room locked while you reconnect.").wait_for()
    await shot(client, "therapist-reconnecting")
    await shot(therapist, "console-reconnecting")
    # two banners make the page taller than the window: the call controls stay in sight and clickable
    for page in (therapist, client):
        controls = await page.evaluate("""() => { window.scrollTo(0, 0);
          return [...document.querySelectorAll('.toolbar .btn.tool')].filter((b) => b.getClientRects().length)
            .map((b) => { const r = b.getBoundingClientRect(); const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
                          return { id: b.id, top: r.top, bottom: r.bottom, vh: innerHeight, hit: !!hit && b.contains(hit) }; }); }""")
        assert controls and all(c["top"] >= 0 and c["bottom"] <= c["vh"] and c["hit"] for c in controls), controls
    # what the keyboard focuses scrolls into view above the controls, however tall they are (two rows at 900 px)
    await therapist.set_viewport_size({"width": 900, "height": 800})
    measure = """() => [parseFloat(getComputedStyle(document.documentElement).scrollPaddingBottom),
                        document.querySelector('.toolbar').getBoundingClientRect().height]"""
    await wait_js(therapist, f"(() => {{ const [pad, bar] = ({measure})(); return pad >= bar && bar > 80; }})()")
    pad, bar = await therapist.evaluate(measure)
    assert bar > 80 and pad >= bar, (pad, bar)
    await therapist.context.set_offline(False)
    await client.locator("#banners").get_by_text("Your therapist is back.").wait_for(timeout=20000)
    await therapist.get_by_text("Room open: you can admit clients.").wait_for()


async def test_admin_page_creates_a_session_and_copies_its_links(alcove: Any, pages: Any) -> None:
    page = await pages.new(permissions=["clipboard-read", "clipboard-write"])
    await page.goto(alcove.url + "/admin")
    await page.get_by_label("Admin key").fill(alcove.admin_key)
    await page.get_by_label("Session type").select_option("couple")
    await page.get_by_label("Therapist name").fill("Dr. Ionescu")
    await page.get_by_role("button", name="Create session").click()
    created = page.locator("#created")  # (the list of upcoming sessions below has the same links)
    await created.get_by_text("Client link 2").wait_for()
    copies = created.get_by_role("button", name="Copy", exact=True)
    assert await copies.count() == 3
    await copies.nth(1).click()
    await page.get_by_text("Copied.").wait_for()
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert "/j/#t=" in copied
    # The key is kept for this tab only.
    assert await page.evaluate("sessionStorage.getItem('alcove.admin-key')") == alcove.admin_key
    assert await page.evaluate("localStorage.length") == 0
    await shot(page, "admin", full_page=True)
    # The copied client link works.
    client = await pages.new()
    await client.goto(copied)
    await client.get_by_role("button", name="Join", exact=True).wait_for()


async def test_landing_page_links_nowhere_else(alcove: Any, pages: Any) -> None:
    page = await pages.new()
    await page.goto(alcove.url + "/")
    await page.get_by_role("heading", name="Alcove").wait_for()
    hrefs = await page.evaluate("[...document.querySelectorAll('[href],[src]')].map(e => e.href || e.src)")
    assert all(h.startswith(alcove.url) for h in hrefs), hrefs
    await shot(page, "landing")
    await asyncio.sleep(0)
