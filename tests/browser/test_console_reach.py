"""The therapist's controls in reach (issue 17, item 1).

At 1280×720, 1440×900 and on a 768×1024 tablet the therapist sees the time, "Extend", "End session" and the
waiting list without scrolling, in an individual and a family session, before and after admitting; at the
one-minute warning the banner itself offers "Extend 5 min". Each control's box is measured against the viewport,
with the page scrolled to its top and the console to its top, and must be the element actually hit at its centre
(not clipped by the console's own scrolling, not under the call controls).

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_console_reach.py'
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import decodes_from_all, join, overlays_apart, shot

pytestmark = pytest.mark.browser

SIZES = ((1280, 720), (1440, 900), (768, 1024))

# The box of each selector, and whether it is the element hit at its own centre, with nothing scrolled.
MEASURE = """(selectors) => {
  window.scrollTo(0, 0);
  document.getElementById("console").scrollTop = 0;
  const out = { vw: window.innerWidth, vh: window.innerHeight, scrollW: document.documentElement.scrollWidth,
                boxes: {} };
  for (const sel of selectors) {
    const el = document.querySelector(sel);
    if (!el) { out.boxes[sel] = null; continue; }
    const r = el.getBoundingClientRect();
    const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
    out.boxes[sel] = { x: r.x, y: r.y, r: r.right, b: r.bottom, w: r.width, h: r.height,
                       hit: !!hit && (el === hit || el.contains(hit) || hit.contains(el)) };
  }
  return out;
}"""

# "Ends at 17:06 UTC — 1 minute left.": the end with its time zone and the minutes actually left (the browser's clock
# does not follow the test server's, so the count is not the threshold here).
WARNING = re.compile(r"^Ends at \d\d:\d\d \S+ — \d+ minutes? left\.$")

CONTROLS = ("#session-clock", "#extend-5", "#extend-10", "#end-session", "#queue-title")


async def in_reach(page: Any, selectors: tuple[str, ...], where: str) -> dict[str, Any]:
    m: dict[str, Any] = await page.evaluate(MEASURE, list(selectors))
    assert m["scrollW"] <= m["vw"], f"{where}: horizontal scroll"
    for sel in selectors:
        b = m["boxes"][sel]
        assert b is not None and b["w"] > 0 and b["h"] > 0, f"{where}: {sel} not shown"
        assert b["x"] >= 0 and b["y"] >= 0 and b["r"] <= m["vw"] and b["b"] <= m["vh"], \
            f"{where}: {sel} outside the {m['vw']}x{m['vh']} viewport: {b}"
        assert b["hit"], f"{where}: {sel} is covered or clipped: {b}"
    return m


async def check_sizes(therapist: Any, selectors: tuple[str, ...], where: str, shot_as: str | None = None) -> None:
    for w, h in SIZES:
        await therapist.set_viewport_size({"width": w, "height": h})
        await in_reach(therapist, selectors, f"{where} at {w}x{h}")
        await overlays_apart(therapist, f"{where} at {w}x{h}")  # the tiles' badges, the floating self-view's too
        if shot_as:
            await shot(therapist, f"{shot_as}-{w}x{h}")


async def test_individual_console_in_reach_and_the_last_minute_banner_extends(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu", duration_minutes=50)
    therapist = await pages.new(viewport={"width": 1280, "height": 720})
    client = await pages.new()
    await join(therapist, room["therapist_link"])
    await join(client, room["client_links"][0], "Alex")
    admit = therapist.get_by_role("button", name="Admit Alex", exact=True)
    await admit.wait_for()
    waiting = (*CONTROLS, "#queue-list li button")
    await check_sizes(therapist, waiting, "individual, a client waiting")

    await admit.click()
    await decodes_from_all(therapist, 1)
    # muted: the floating self-view shows its connection dot and "Muted", clear of each other and its move button
    await therapist.get_by_role("button", name="Mute", exact=True).click()
    await therapist.locator(".tile.self .badge:not([hidden])").wait_for()
    await check_sizes(therapist, CONTROLS, "individual, in session", shot_as="console-reach-individual")
    await therapist.set_viewport_size({"width": 390, "height": 844})  # a phone: the smallest floating self-view
    await overlays_apart(therapist, "individual, in session, on a phone")
    await therapist.set_viewport_size({"width": 1280, "height": 720})
    await therapist.get_by_role("button", name="Unmute", exact=True).click()

    # One minute left: the warning banner carries its own "Extend 5 min", in reach at every size.
    await alcove.advance(49 * 60 + 5)
    banner = therapist.locator("#banners .banner[data-key='warning']")
    await banner.get_by_text(WARNING).wait_for()
    extend = banner.get_by_role("button", name="Extend 5 min", exact=True)
    await extend.wait_for()
    await check_sizes(therapist, (*CONTROLS, "#banners .banner-action"), "the one-minute warning")
    await therapist.set_viewport_size({"width": 1280, "height": 720})
    await shot(therapist, "console-last-minute")
    # The client's banner has no such button: only the therapist extends.
    await client.locator("#banners").get_by_text(WARNING).wait_for()
    assert await client.locator("#banners .banner[data-key='warning'] button").count() == 0
    await extend.click()
    await client.get_by_text("The session was extended by 5 minutes.").wait_for()
    await therapist.get_by_text("The session was extended by 5 minutes.").wait_for()
    assert await banner.count() == 0, "the warning stays after the extension"


async def test_family_console_in_reach_with_three_waiting(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="family", clients=3, host="Dr. Ionescu")
    therapist = await pages.new(viewport={"width": 1280, "height": 720})
    await join(therapist, room["therapist_link"])
    clients = []
    for i, link in enumerate(room["client_links"]):
        page = await pages.new(viewport={"width": 800, "height": 600})
        await join(page, link, f"Client {i + 1}")
        clients.append(page)
    await therapist.get_by_role("button", name="Admit Client 3", exact=True).wait_for()
    await check_sizes(therapist, (*CONTROLS, "#admit-all", "#queue-list li button"), "family, three waiting",
                      shot_as="console-reach-family-waiting")

    await therapist.get_by_role("button", name="Admit Client 1", exact=True).click()
    await decodes_from_all(therapist, 1, timeout=45)
    await check_sizes(therapist, (*CONTROLS, "#admit-all", "#queue-list li button"), "family, one in, two waiting",
                      shot_as="console-reach-family")
