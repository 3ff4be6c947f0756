"""The admin's list of upcoming sessions (copy a link again, revoke it) and the too-early page's countdown, which
opens the join page by itself: behaviour, axe-core, and screenshots at desktop and phone size in both languages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import shot, wait_js

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
AXE_RUN = """async () => {
  const r = await axe.run(document, { resultTypes: ["violations"] });
  return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} @ ${v.nodes.slice(0, 4).map((n) => n.target.join(" ")).join(", ")}`);
}"""
SIZES = {"": {"width": 1280, "height": 720}, "-phone": {"width": 390, "height": 844}}
WORDS: dict[str, dict[str, Any]] = {
    "en": {"upcoming": "Upcoming sessions", "revoke": "Revoke", "confirm": "Revoke link", "revoked": "Revoked",
           "created": "Session created:", "create": "Create session", "join": "Join",
           "opens": "Opens in", "live": re.compile(r"Opens in \d+ minutes?|Opens in less than a minute")},
    "ro": {"upcoming": "Ședințe programate", "revoke": "Revocați", "confirm": "Revocați linkul",
           "revoked": "Revocat", "created": "Ședință creată:", "create": "Creați ședința", "join": "Intrați",
           "opens": "Se deschide peste",
           "live": re.compile(r"Se deschide peste \d+ (de )?minut[e]?|Se deschide în mai puțin de un minut")},
}


async def check_axe(page: Any, where: str) -> None:
    found = await page.evaluate(AXE_RUN)
    assert not found, f"{where}: axe-core serious/critical violations: {found}"


async def new_page(pages: Any, lang: str, size: dict[str, int], *, init: str = "") -> Any:
    page = await pages.new(viewport=size)
    await page.add_init_script(path=str(AXE))
    await page.add_init_script(f"try {{ localStorage.setItem('alcove.lang', '{lang}'); }} catch {{}}\n{init}")
    return page


def left(w: dict[str, Any], text: str) -> int:
    """Seconds left, read from "Opens in 4 min 12 s"."""
    found = re.fullmatch(rf"{w['opens']} (\d+) min (\d+) s", text)
    assert found, text
    return int(found[1]) * 60 + int(found[2])


def iso_in(alcove: Any, seconds: float) -> str:
    return datetime.fromtimestamp(alcove.clock.now + seconds, UTC).isoformat(timespec="seconds")


async def exchange(alcove: Any, link: str) -> int:
    async with aiohttp.ClientSession() as http, http.post(
            f"{alcove.url}/api/session", json={"token": link.split("#t=")[1].split("&")[0]}) as r:
        return r.status


@pytest.mark.parametrize("lang", ["en", "ro"])
async def test_the_admin_lists_upcoming_sessions_and_revokes_a_link(alcove: Any, pages: Any, lang: str) -> None:
    w = WORDS[lang]
    couple = await alcove.create_room(type="couple", start=iso_in(alcove, 26 * 3600), duration_minutes=75)
    await alcove.create_room(type="individual", start=iso_in(alcove, 3600), host="Dr. Ionescu")
    key = f"sessionStorage.setItem('alcove.admin-key', '{alcove.admin_key}');"
    for suffix, size in SIZES.items():
        page = await new_page(pages, lang, size, init=key)
        await page.goto(f"{alcove.url}/admin")
        await page.get_by_role("heading", name=w["upcoming"]).wait_for()
        await wait_js(page, "document.querySelectorAll('#upcoming-list > li').length === 2")
        headings = await page.locator("#upcoming-list h3").all_inner_texts()
        # the day, the times and the time zone (Europe/Bucharest: EET in winter)
        assert all(re.fullmatch(r"\w+\.?,? \d{1,2} \w+\.?, \d\d:\d\d–\d\d:\d\d \S+", h) for h in headings), headings
        await check_axe(page, f"admin list {lang}{suffix}")
        await page.locator("#upcoming-list").scroll_into_view_if_needed()
        await shot(page, f"admin-upcoming-{lang}{suffix}")

    # Create one from the form: the confirmation says the date.
    await page.get_by_role("button", name=w["create"]).click()
    title = page.locator("#created-title")
    await title.wait_for()
    assert re.fullmatch(rf"{w['created']} \w+\.?,? \d{{1,2}} \w+\.?, \d\d:\d\d–\d\d:\d\d \S+\.",
                        await title.inner_text()), await title.inner_text()
    await wait_js(page, "document.querySelectorAll('#upcoming-list > li').length === 3")
    await check_axe(page, f"admin created {lang}")
    await shot(page, f"admin-created-{lang}-phone")

    # Revoke the couple's first client link: asked first, then gone for good.
    page = await new_page(pages, lang, SIZES[""], init=key)
    await page.goto(f"{alcove.url}/admin")
    await wait_js(page, "document.querySelectorAll('#upcoming-list > li').length === 3")
    item = page.locator("#upcoming-list > li").nth(2)  # soonest first: the couple (tomorrow) is last
    assert couple["client_links"][0] in await item.inner_text()
    row = item.locator(".links > li").nth(1)  # the therapist's link, then the clients'
    assert couple["client_links"][0] in await row.inner_text()
    await row.get_by_role("button", name=w["revoke"], exact=True).click()
    confirm = row.get_by_role("button", name=w["confirm"])
    await confirm.wait_for()
    assert await page.evaluate("document.activeElement.textContent") == w["confirm"]
    await check_axe(page, f"admin revoke ask {lang}")
    await item.scroll_into_view_if_needed()
    await shot(page, f"admin-revoke-ask-{lang}")
    assert await exchange(alcove, couple["client_links"][0]) == 425  # not revoked until confirmed
    await confirm.click()
    await page.locator("#upcoming-list > li").nth(2).get_by_text(w["revoked"], exact=True).wait_for()
    assert await exchange(alcove, couple["client_links"][0]) == 410
    assert await exchange(alcove, couple["client_links"][1]) == 425  # the other seat keeps its link
    await check_axe(page, f"admin revoked {lang}")
    await page.locator("#upcoming-list > li").nth(2).scroll_into_view_if_needed()
    await shot(page, f"admin-revoked-{lang}")


@pytest.mark.parametrize("lang", ["en", "ro"])
@pytest.mark.parametrize("role", ["client", "therapist"])
async def test_the_too_early_page_counts_down_and_opens_the_join_page(alcove: Any, pages: Any, lang: str,
                                                                      role: str) -> None:
    w = WORDS[lang]
    room = await alcove.create_room(type="individual", start=iso_in(alcove, 15 * 60 + 4 * 60 + 12),
                                    host="Dr. Ionescu")
    link = room["therapist_link"] if role == "therapist" else room["client_links"][0]
    for suffix, size in SIZES.items():
        page = await new_page(pages, lang, size)
        # The page's clock is the server's (a test clock), driven without sleeping.
        await page.clock.install(time=datetime.fromtimestamp(alcove.clock.now, UTC))
        await page.goto(link)
        await wait_js(page, "document.body.dataset.state === 'error-room-not-open'")
        heading = await page.locator("#error-title").inner_text()
        assert re.search(r"\d\d:\d\d \S+$", heading), heading  # the time with its time zone
        countdown = page.locator("#error-countdown")
        first = left(w, await countdown.inner_text())
        assert 4 * 60 <= first <= 4 * 60 + 12, first
        assert await page.locator("#error-countdown-live").inner_text() == ""  # nothing said at every second
        await page.clock.run_for(5_000)
        assert await page.locator("#error-countdown-live").inner_text() == ""
        assert left(w, await countdown.inner_text()) <= first - 5
        await check_axe(page, f"too early {role} {lang}{suffix}")
        await shot(page, f"too-early-countdown-{role}-{lang}{suffix}")
    # at the next minute the live region says so, once
    await page.clock.run_for(13_000)
    live = await page.locator("#error-countdown-live").inner_text()
    assert w["live"].fullmatch(live), live
    # the opening: the page goes to the join page by itself (the server's clock moved on too)
    await alcove.advance(4 * 60 + 13)
    await page.clock.fast_forward(4 * 60_000)
    await page.get_by_role("button", name=w["join"], exact=True).wait_for()
    assert await page.evaluate("document.body.dataset.state") != "error-room-not-open"
