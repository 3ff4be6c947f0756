"""Remote state on the tiles, presence notices, the encryption badge's details and leaving the waiting room
(issue 17, items 4 and 7), in English and Romanian, at 1280×720 (therapist) and 390×844 (client's phone).

Each participant's own microphone and camera state travels as an end-to-end encrypted, signed app message of kind
`state`: a muted client shows "Muted" and "Camera off" on the therapist's tile of them, with their initials on a calm
colour instead of a black picture, and the same the other way round. "<name> left" and "<name> is back" come once, as
a polite notice. The encryption badge says "Private — end-to-end encrypted" and shows its details on demand. A client
who leaves from the waiting room reads "You left the waiting room", not "Session ended". Every state is scanned by
axe-core and saved in docs/screenshots/.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_screens_tiles.py'
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_i18n import load_catalogs

from .conftest import decodes_from_all, shot
from .test_console_keyboard import AXE, LIVE_LOG, check_axe

pytestmark = pytest.mark.browser

LOCALES = {"en": "en-GB", "ro": "ro-RO"}
DESKTOP = (1280, 720)
PHONE = (390, 844)


async def device(pages: Any, lang: str, size: tuple[int, int], phone: bool = False) -> Any:
    """A page in `lang` (the browser's own language: the page follows it), with axe-core and the live-region log."""
    ctx = await pages.browser.new_context(viewport={"width": size[0], "height": size[1]}, is_mobile=phone,
                                          has_touch=phone, locale=LOCALES[lang], timezone_id="Europe/Bucharest",
                                          color_scheme="light")
    await ctx.grant_permissions(["camera", "microphone"], origin=pages.origin)
    await ctx.add_init_script(path=str(AXE))
    await ctx.add_init_script(script=LIVE_LOG)
    pages.contexts.append(ctx)
    page = await ctx.new_page()
    page.on("pageerror", lambda exc: pages.console_errors.append(f"pageerror: {exc}"))
    return page


async def phone_shot(page: Any, name: str) -> None:
    await page.evaluate("window.scrollTo(0, 0)")
    await shot(page, name)


async def knock(page: Any, t: dict[str, str], link: str, name: str) -> None:
    await page.goto("about:blank")  # a fresh page load, not a change of fragment
    await page.goto(link)
    await page.get_by_label(t["join.name"]).fill(name)
    await page.get_by_role("button", name=t["join.submit"], exact=True).click()
    await page.get_by_role("heading", name=t["waiting.heading"]).wait_for()


def tile(page: Any, pid: str) -> Any:
    return page.locator(f'.tile[data-pid="{pid}"]')


@pytest.mark.parametrize("lang", ["en", "ro"])
async def test_remote_state_presence_and_the_encryption_details(lang: str, alcove: Any, pages: Any) -> None:
    t = load_catalogs()[lang]["catalog"]
    suffix = "" if lang == "en" else f"-{lang}"
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    link = room["client_links"][0]
    therapist = await device(pages, lang, DESKTOP)
    await therapist.goto(room["therapist_link"])
    await therapist.get_by_label(t["join.name"]).fill("Dr. Ionescu")
    await therapist.get_by_role("button", name=t["join.submit"], exact=True).click()
    await therapist.get_by_text(t["console.waiting.empty"]).wait_for()
    client = await device(pages, lang, PHONE, phone=True)
    admit = t["console.admit"].replace("{name}", "Alex")

    # Leaving from the waiting room: the page says so, not "Session ended".
    await knock(client, t, link, "Alex")
    await therapist.get_by_role("button", name=admit, exact=True).wait_for()
    await client.get_by_role("button", name=t["session.leave"], exact=True).click()
    await client.get_by_role("heading", name=t["ended.waiting.title"]).wait_for()
    await client.locator("#ended-body").get_by_text(t["ended.waiting.body"]).wait_for()
    assert await client.get_by_text(t["ended.title"], exact=True).count() == 0
    await check_axe(client, "left the waiting room")
    await phone_shot(client, f"phone-left-waiting{suffix}")

    # Admitted: each side sends its own state; both cameras and microphones on, no badge.
    await knock(client, t, link, "Alex")
    await therapist.get_by_role("button", name=admit, exact=True).click()
    await decodes_from_all(client, 1)
    await decodes_from_all(therapist, 1)
    alex = await client.evaluate("window.alcove.pid()")
    ionescu = await therapist.evaluate("window.alcove.pid()")
    await therapist.locator(f'.tile[data-pid="{alex}"][data-mic="on"][data-cam="on"]').wait_for()
    await client.locator(f'.tile[data-pid="{ionescu}"][data-mic="on"][data-cam="on"]').wait_for()
    assert await therapist.locator(".state-badge").count() == 0

    # The client mutes and turns the camera off: the therapist sees it on the tile, the initials instead of a picture.
    await client.get_by_role("button", name=t["session.mute"], exact=True).click()
    await client.get_by_role("button", name=t["session.camera.off"], exact=True).click()
    remote = tile(therapist, alex)
    await therapist.locator(f'.tile[data-pid="{alex}"][data-mic="off"][data-cam="off"]').wait_for()
    await remote.get_by_text(t["session.remote.muted"], exact=True).wait_for()
    await remote.get_by_text(t["session.remote.camera-off"], exact=True).wait_for()
    assert await remote.locator("video").is_hidden()
    assert await remote.locator(".avatar").get_attribute("data-initials") == "A"
    await check_axe(therapist, "remote tile muted, camera off")
    await shot(therapist, f"tiles-remote-off{suffix}")
    # Only the microphone back on: one badge left.
    await client.get_by_role("button", name=t["session.unmute"], exact=True).click()
    await therapist.locator(f'.tile[data-pid="{alex}"][data-mic="on"][data-cam="off"]').wait_for()
    assert await remote.get_by_text(t["session.remote.muted"], exact=True).count() == 0

    # The therapist the same way round, on the client's phone: "DI" on a calm colour.
    await therapist.get_by_role("button", name=t["session.mute"], exact=True).click()
    await therapist.get_by_role("button", name=t["session.camera.off"], exact=True).click()
    theirs = tile(client, ionescu)
    await client.locator(f'.tile[data-pid="{ionescu}"][data-mic="off"][data-cam="off"]').wait_for()
    await theirs.get_by_text(t["session.remote.muted"], exact=True).wait_for()
    assert await theirs.locator(".avatar").get_attribute("data-initials") == "DI"
    await check_axe(client, "therapist's tile muted, camera off")
    await phone_shot(client, f"phone-tiles-remote-off{suffix}")

    # The encryption badge: one calm label; the details (verification, key epoch) only on demand.
    toggle = client.get_by_role("button", name=t["e2ee.status.unverified"], exact=True)
    assert await toggle.get_attribute("aria-expanded") == "false"
    await toggle.tap()
    assert await toggle.get_attribute("aria-expanded") == "true"
    await client.locator("#e2ee-details").get_by_text(t["e2ee.details.client.unverified"]).wait_for()
    epoch = await client.locator("#e2ee-status").get_attribute("data-epoch")
    assert epoch and epoch in await client.locator("#e2ee-details").inner_text()
    await check_axe(client, "encryption details open (client)")
    await phone_shot(client, f"phone-e2ee-details{suffix}")
    await toggle.tap()
    await therapist.get_by_role("button", name=t["e2ee.status.on"], exact=True).click()
    await therapist.locator("#e2ee-details").get_by_text(t["e2ee.details.verified.some"]).wait_for()
    await check_axe(therapist, "encryption details open (therapist)")
    await shot(therapist, f"console-e2ee-details{suffix}")
    await therapist.get_by_role("button", name=t["e2ee.status.on"], exact=True).click()

    # Alex leaves and comes back: one polite notice each, with the signed name.
    await client.get_by_role("button", name=t["session.leave"], exact=True).click()
    left = t["console.left"].replace("{name}", "Alex")
    await therapist.locator("#banners").get_by_text(left).wait_for()
    await check_axe(therapist, "left notice")
    await shot(therapist, f"console-left{suffix}")
    await knock(client, t, link, "Alex")
    await therapist.get_by_role("button", name=admit, exact=True).click()
    back = t["console.back"].replace("{name}", "Alex")
    await therapist.locator("#banners").get_by_text(back).wait_for()
    await decodes_from_all(client, 1)
    said: list[str] = await therapist.evaluate("window.__live")
    assert any(left in x for x in said) and any(back in x for x in said), said
    # once each: one notice of each kind, in the polite region (the region's whole text is logged at each change)
    assert await therapist.locator('#banners [data-presence="left"]').count() <= 1
    assert await therapist.locator('#banners [data-presence="back"]').count() == 1
    assert not [x for x in said if epoch in x], said
    # The client's new tile of the therapist has the therapist's state again (sent under the new epoch).
    again = await client.evaluate("window.alcove.pid()")
    assert again
    await client.locator(f'.tile[data-pid="{ionescu}"][data-mic="off"][data-cam="off"]').wait_for()
    await shot(therapist, f"console-back{suffix}")
    # every state message passed the receivers' checks: no refused-message banner on either side
    for page in (therapist, client):
        assert await page.locator("#banners [data-refused]").count() == 0


async def test_mixed_python_and_browser_tell_each_other_their_state(alcove: Any, pages: Any) -> None:
    """The aiortc participant's state reaches the browser's tile, the browser's reaches the participant; its
    leaving and coming back are told with the signed name."""
    from peer.participant import Participant
    from rtc import aiortc_hooks

    aiortc_hooks.allow_loopback_candidates()
    t = load_catalogs()["en"]["catalog"]
    room = await alcove.create_room(type="couple", host="Dr. Ionescu")
    therapist = await device(pages, "en", DESKTOP)
    await therapist.goto(room["therapist_link"])
    await therapist.get_by_role("button", name=t["join.submit"], exact=True).click()
    await therapist.get_by_text(t["console.waiting.empty"]).wait_for()
    ionescu = await therapist.evaluate("window.alcove.pid()")
    bots: list[Any] = []
    try:
        # Muted before any key: nothing goes out yet (False), the state follows the first epoch.
        sam = await Participant.join(alcove.url, room["client_links"][0], name="Sam", e2ee=True, media=False)
        bots.append(sam)
        assert sam.set_media_state(mic=False) is False
        await therapist.get_by_role("button", name="Admit Sam", exact=True).click()
        await therapist.locator(f'.tile[data-pid="{sam.pid}"][data-mic="off"][data-cam="on"]').wait_for(timeout=20000)
        await tile(therapist, sam.pid).get_by_text(t["session.remote.muted"], exact=True).wait_for()
        assert await tile(therapist, sam.pid).locator(".avatar").get_attribute("data-initials") == "S"
        # The browser's state reaches the participant, signed by the therapist's page.
        await sam.wait_app(lambda a: a[0] == ionescu and a[1] == {"k": "state", "mic": True, "cam": True}, timeout=15)
        await therapist.get_by_role("button", name=t["session.camera.off"], exact=True).click()
        await sam.wait_app(lambda a: a[0] == ionescu and a[1] == {"k": "state", "mic": True, "cam": False}, timeout=15)
        assert not sam.refusals, sam.refusals
        # Unmuted from Python: the badge goes.
        assert sam.set_media_state(mic=True) is True
        await therapist.locator(f'.tile[data-pid="{sam.pid}"][data-mic="on"][data-cam="on"]').wait_for()
        assert await tile(therapist, sam.pid).locator(".state-badge").count() == 0

        # Sam leaves and comes back (a new device, the same link): told once each, with the signed name.
        await sam.leave()
        await therapist.locator("#banners").get_by_text("Sam left the session.").wait_for()
        again = await Participant.join(alcove.url, room["client_links"][0], name="Sam", e2ee=True, media=False)
        bots.append(again)
        await therapist.get_by_role("button", name="Admit Sam", exact=True).click()
        await therapist.locator("#banners").get_by_text("Sam is back in the session.").wait_for(timeout=20000)
        assert await therapist.locator('#banners [data-presence="back"]').count() == 1
    finally:
        for bot in bots:
            await bot.close()
