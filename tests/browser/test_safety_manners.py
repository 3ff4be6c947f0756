"""The safety check at the start and group manners in the browser (issue 15, items 3 and 4): Chromium therapist and
clients, end-to-end encrypted app messages through the real server.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q -m browser tests/browser/test_safety_manners.py'
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from .conftest import join, wait_js
from .test_e2ee_browser import admit, invite_link, with_secret

pytestmark = [pytest.mark.browser, pytest.mark.e2ee]

PLANTED_WHERE = "Strada Planted-4e1a 7, Iasi"
PLANTED_CONTACT = "Planted-Contact-93c0"


async def secure_room(alcove: Any, pages: Any, type: str, clients: int, **extra: Any
                      ) -> tuple[dict[str, Any], Any, list[Any], list[str]]:
    room = await alcove.create_room(type=type, clients=clients, host="Dr. Ionescu", **extra)
    therapist = await pages.new()
    await join(therapist, with_secret(room["therapist_link"]))
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    links = [await invite_link(therapist, link) for link in room["client_links"][:clients]]
    return room, therapist, [await pages.new() for _ in links], links


async def pid_of(page: Any) -> str:
    await wait_js(page, "window.alcove && window.alcove.pid && window.alcove.pid()")
    return str(await page.evaluate("window.alcove.pid()"))


def tile(pid: str) -> str:
    """A JS expression: the tile of `pid` on the page."""
    return f"document.querySelector('.tile[data-pid=\"{pid}\"]')"


async def fill_safety(page: Any, *, where: str, name: str, phone: str) -> None:
    await page.get_by_label("The address where you are right now").fill(where)
    await page.get_by_label("Their name").fill(name)
    await page.get_by_label("Their phone number").fill(phone)


async def test_a_required_safety_check_comes_first_and_reaches_the_therapist_only(alcove: Any, pages: Any) -> None:
    _, therapist, (client,), (link,) = await secure_room(alcove, pages, "individual", 1, safety_check="required",
                                                            disconnect_plan="wait", disconnect_wait_minutes=15)
    await join(client, link, "Alex Marinescu")
    await admit(therapist, "Alex Marinescu")
    form = client.locator("#safetycheck")
    await form.wait_for(state="visible")
    # required: the call view waits for the answers, there is no "later", the practice's number and the plan show
    assert not await client.locator(".session-body").is_visible()
    assert not await client.get_by_role("button", name="Answer later").is_visible()
    await client.get_by_text("In an emergency, call: 112").wait_for()
    assert await client.locator("#safetycheck-plan-wait").is_checked()
    assert await client.locator("#safetycheck-wait").input_value() == "15"
    # the therapist sees "not answered yet" beside the client
    await therapist.locator(".safety-answers.missing").wait_for()
    # incomplete: a clear error, nothing sent
    await client.get_by_role("button", name="Send to my therapist").click()
    await client.get_by_text("Please enter where you are right now.").wait_for()
    assert await client.locator("#safetycheck-where").get_attribute("aria-invalid") == "true"
    await fill_safety(client, where=PLANTED_WHERE, name=PLANTED_CONTACT, phone="+40 700 000 123")
    await client.get_by_role("button", name="Send to my therapist").click()
    await form.wait_for(state="hidden")
    await client.locator(".session-body").wait_for(state="visible")
    await client.locator("#banners").get_by_text("Your answers were sent to your therapist only, end-to-end encrypted.").wait_for()
    # beside that client in the console, for this session
    answers = therapist.locator(".safety-answers:not(.missing)")
    await answers.wait_for()
    text = await answers.inner_text()
    assert PLANTED_WHERE in text and PLANTED_CONTACT in text and "Wait 15 min" in text
    # the client's page keeps nothing of what was typed
    assert await client.locator("#safetycheck-where").input_value() == ""
    storage = await client.evaluate("JSON.stringify(Object.entries(sessionStorage).concat(Object.entries(localStorage)))")
    assert PLANTED_WHERE not in storage and PLANTED_CONTACT not in storage
    storage = await therapist.evaluate("JSON.stringify(Object.entries(sessionStorage).concat(Object.entries(localStorage)))")
    assert PLANTED_WHERE not in storage and PLANTED_CONTACT not in storage
    # gone at the end: nothing of the answers is left in the therapist's page
    await therapist.locator("#end-session").click()
    await therapist.locator("#end-confirm-yes").click()
    await wait_js(therapist, "document.body.dataset.state === 'ended'")
    assert PLANTED_WHERE not in await therapist.content() and PLANTED_CONTACT not in await therapist.content()


async def test_an_optional_safety_check_can_wait_and_group_manners(alcove: Any, pages: Any) -> None:
    """Three pages in a group room: optional check (later, then answered), first names, raise hand, mute, ask to
    unmute, spotlight; the other member never sees the safety answers."""
    _, therapist, (ana, bogdan), links = await secure_room(alcove, pages, "group", 2, topology="mesh")
    # both pages load before any media flows (a busy machine loads a page slowly beside a running call)
    for page, link in ((ana, links[0]), (bogdan, links[1])):
        await page.goto(link)
        await page.get_by_role("button", name="Join", exact=True).wait_for()
    for page, name in ((ana, "Ana Popescu"), (bogdan, "Bogdan Ionescu")):
        await page.get_by_label("Your name").fill(name)
        await page.get_by_role("button", name="Join", exact=True).click()
        await admit(therapist, name)
    for page in (ana, bogdan):
        await page.get_by_role("button", name="Answer now").wait_for()
    # optional: the call view stays; "Answer later" closes the form and the banner asks again
    await ana.get_by_role("button", name="Answer now").dispatch_event("click")
    await ana.locator("#safetycheck").wait_for(state="visible")
    assert await ana.locator(".session-body").is_visible()
    await ana.get_by_role("button", name="Answer later").dispatch_event("click")
    await ana.locator("#safetycheck").wait_for(state="hidden")
    await ana.get_by_role("button", name="Answer now").dispatch_event("click")
    await fill_safety(ana, where=PLANTED_WHERE, name=PLANTED_CONTACT, phone="0700 000 777")
    await ana.get_by_label("My therapist calls me back").check()
    await ana.get_by_label("The number to call me on").fill("0700 000 778")
    await ana.get_by_role("button", name="Send to my therapist").click()
    await therapist.locator(".safety-answers:not(.missing)").wait_for()
    assert "Call back on 0700 000 778" in await therapist.locator(".safety-answers:not(.missing)").inner_text()
    # first names among members, the full name in the console
    ana_pid, bogdan_pid = await pid_of(ana), await pid_of(bogdan)
    await wait_js(bogdan, f"{tile(ana_pid)}.querySelector('.name').textContent === 'Ana'")
    await therapist.get_by_text("Ana Popescu", exact=True).wait_for()
    # raise hand: in the console and on the other member's tile
    await bogdan.get_by_role("button", name="Raise hand").dispatch_event("click")
    await therapist.locator("#people-list").get_by_text("✋ Hand raised").wait_for()
    await wait_js(ana, f"!{tile(bogdan_pid)}.querySelector('.hand-badge').hidden")
    await bogdan.get_by_role("button", name="Lower hand").dispatch_event("click")
    await wait_js(ana, f"{tile(bogdan_pid)}.querySelector('.hand-badge').hidden")
    # mute: Bogdan's own page mutes its microphone and says so; Ana is untouched
    await therapist.get_by_role("button", name="Mute Bogdan Ionescu").dispatch_event("click")
    await bogdan.get_by_text("Your therapist muted you.", exact=False).wait_for()
    assert await bogdan.locator("#btn-mute").get_attribute("aria-pressed") == "true"  # its own sender is muted
    assert await ana.locator("#btn-mute").get_attribute("aria-pressed") == "false"
    await therapist.get_by_role("button", name="Ask to unmute: Bogdan Ionescu").dispatch_event("click")
    await bogdan.get_by_text("Your therapist asks you to unmute.").wait_for()
    await bogdan.locator('#banners .banner[data-key="manners-unmute"] button').click()
    await wait_js(bogdan, "document.getElementById('btn-mute').getAttribute('aria-pressed') === 'false'")
    # spotlight: every page shows that tile large
    await therapist.get_by_role("button", name="Spotlight Ana Popescu").dispatch_event("click")
    await wait_js(bogdan, f"{tile(ana_pid)}.classList.contains('spotlight')")
    await wait_js(therapist, f"{tile(ana_pid)}.classList.contains('spotlight')")
    await wait_js(ana, "document.querySelector('.tile.self').classList.contains('spotlight')")
    # the other member never saw Ana's answers
    assert PLANTED_WHERE not in await bogdan.content()
    assert PLANTED_WHERE not in await ana.content()


async def test_the_admin_page_sets_the_safety_check(alcove: Any, pages: Any) -> None:
    page = await pages.new()
    await page.goto(alcove.url + "/admin")
    await page.get_by_label("Admin key").fill(alcove.admin_key)
    await page.get_by_label("Safety check at the start").select_option("required")
    await page.get_by_label("If the call drops (prefilled)").select_option("wait")
    await page.get_by_label("Minutes the therapist waits").fill("20")
    await page.get_by_role("button", name="Create session").click()
    await page.locator("#links").get_by_text("Client link 1").wait_for()
    link = await page.locator("#links code").nth(1).inner_text()
    token = link.split("#t=", 1)[1]
    async with aiohttp.ClientSession() as http, http.post(f"{alcove.url}/api/session", json={"token": token}) as r:
        safety = (await r.json())["room"]["safety"]
    assert (safety["check"], safety["plan"], safety["wait_minutes"]) == ("required", "wait", 20)
