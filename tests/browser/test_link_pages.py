"""Links that cannot be used (yet, any more, or at all) get a clear page, not an error."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from .conftest import join, shot

pytestmark = pytest.mark.browser


async def test_too_early_link_says_when_it_opens(alcove: Any, pages: Any) -> None:
    start = datetime.fromtimestamp(alcove.clock.now, UTC) + timedelta(hours=2)
    room = await alcove.create_room(type="individual", start=start.isoformat(), host="Dr. Ionescu")
    page = await pages.new()
    await page.goto(room["client_links"][0])
    opens = datetime.fromisoformat(room["opens_at"].replace("Z", "+00:00"))
    expected = await page.evaluate(
        "(iso) => new Intl.DateTimeFormat(navigator.language, {hour: '2-digit', minute: '2-digit', timeZoneName: 'short'}).format(new Date(iso))",
        opens.isoformat())
    heading = page.get_by_role("heading", level=1)
    # "at 21:10" the same day, "on Mon 30 Nov at 00:10" when the opening is past midnight where the browser is
    await page.get_by_role("heading", name=re.compile(rf"^This session opens (on .+ )?at {re.escape(expected)}$")).wait_for()
    assert "opens" in (await heading.text_content() or "")
    await shot(page, "too-early")


async def test_ended_link_shows_the_ended_page(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="individual", duration_minutes=30)
    await alcove.advance(31 * 60)
    page = await pages.new()
    await page.goto(room["client_links"][0])
    await page.get_by_role("heading", name="This session has ended").wait_for()
    await shot(page, "ended-link")


@pytest.mark.parametrize("link", ["/j/#t=not-a-real-token", "/j/#t=", "/j/", "/j/#x=1"])
async def test_malformed_or_missing_link_shows_a_clear_page(alcove: Any, pages: Any, link: str) -> None:
    page = await pages.new()
    await page.goto(alcove.url + link)
    await page.get_by_role("heading", name="This link does not work").wait_for()
    assert await page.get_by_role("button", name="Join", exact=True).count() == 0
    if link == "/j/#t=not-a-real-token":
        await shot(page, "malformed")


async def test_revoked_link_shows_the_no_longer_valid_page(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="individual")
    link = room["client_links"][0]
    async with aiohttp.ClientSession() as http, http.delete(  # revoked from the admin's list
            f"{alcove.url}/api/rooms/{room['room_id']}/links/1",
            headers={"Authorization": f"Bearer {alcove.admin_key}"}) as r:
        assert r.status == 200
    page = await pages.new()
    await page.goto(link)
    await page.get_by_role("heading", name="This link is no longer valid").wait_for()
    assert await page.get_by_role("button", name="Join", exact=True).count() == 0
    await shot(page, "revoked-link")


async def test_a_second_device_is_told_the_link_is_open_elsewhere(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="individual")
    first = await pages.new()
    await join(first, room["client_links"][0], "Alex")
    await first.get_by_role("heading", name="Waiting for your therapist").wait_for()
    second = await pages.new()  # another browser profile: no resume credential
    await join(second, room["client_links"][0], "Alex")
    await second.get_by_role("heading", name="This link is open somewhere else").wait_for()
    assert await first.get_by_role("heading", name="Waiting for your therapist").count() == 1  # not displaced
