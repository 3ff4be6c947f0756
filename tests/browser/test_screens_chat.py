"""Screenshots of the chat's states (docs/screenshots/chat-*.png), desktop 1280×720 and phone 390×844, in English
and Romanian, each checked with axe-core (no serious or critical violation): the unread badge, the client's panel
with a private message to the therapist, the therapist's panel with a private message to one client.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_screens_chat.py'
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import join, shot, wait_js
from .test_chat import keyed
from .test_e2ee_browser import admit, invite_link, with_secret
from .test_reach import AXE, AXE_RUN, Devices

pytestmark = [pytest.mark.browser, pytest.mark.e2ee]

SIZES = {"desktop": {"width": 1280, "height": 720}, "phone": {"width": 390, "height": 844}}


async def write(page: Any, text: str, to_index: int) -> None:
    """Types and sends with the keyboard (Enter); ``to_index``: the recipient option (0 everyone)."""
    await page.locator("#chat-to").select_option(index=to_index)
    await page.locator("#chat-input").fill(text)
    await page.locator("#chat-input").press("Enter")
    await wait_js(page, "document.getElementById('chat-input').value === ''")


async def open_chat(page: Any) -> None:
    if await page.locator("#chat").is_hidden():
        await page.locator("#btn-chat").click()
    await page.locator("#chat").wait_for()


async def close_chat(page: Any) -> None:
    if await page.locator("#chat").is_visible():
        await page.locator("#chat-close").click()


async def shots(page: Any, name: str, lang: str) -> None:
    for size, viewport in SIZES.items():
        await page.set_viewport_size(viewport)
        await page.wait_for_timeout(150)
        found = await page.evaluate(AXE_RUN)
        assert not found, f"{name} {size} {lang}: axe-core serious/critical violations: {found}"
        await shot(page, f"chat-{name}-{size}-{lang}")
    await page.set_viewport_size(SIZES["desktop"])


async def test_chat_screens(alcove: Any, browser: Any) -> None:
    assert AXE.is_file(), "axe-core is not installed: run `make lint` (npm ci in web/)"
    devices = Devices(browser, alcove.url)
    try:
        room = await alcove.create_room(type="individual", host="Dr. Ionescu")
        therapist = await devices.device("en", (1280, 720), False)
        client = await devices.device("en", (1280, 720), False)
        await join(therapist, with_secret(room["therapist_link"]))
        link = await invite_link(therapist, room["client_links"][0])
        await join(client, link, "Alex")
        await admit(therapist, "Alex")
        await keyed(client)
        await keyed(therapist)
        await open_chat(therapist)
        for lang, texts in (("en", ("Welcome, Alex. Today's worksheet: https://example.org/worksheet",
                                    "Take your time; we start when you are ready.",
                                    "Could we talk about Tuesday first?",
                                    "Of course. Only you can read this.")),
                            ("ro", ("Bine ați venit. Fișa de lucru de azi: https://example.org/fisa",
                                    "Începem când sunteți gata.",
                                    "Putem vorbi mai întâi despre marți?",
                                    "Desigur. Doar dumneavoastră puteți citi acest mesaj."))):
            if lang == "ro":
                for page in (therapist, client):
                    await page.get_by_role("button", name="Română").click()
                    await wait_js(page, "document.documentElement.lang === 'ro'")
            await close_chat(client)
            await write(therapist, texts[0], 0)
            await write(therapist, texts[1], 0)
            await wait_js(client, "document.getElementById('chat-badge').textContent === '2'")
            await shots(client, "unread", lang)
            await open_chat(client)
            await write(client, texts[2], 1)  # private, to the therapist
            await client.locator("#chat-log .chat-msg", has_text=texts[2]).wait_for()
            await therapist.locator("#chat-log .chat-msg", has_text=texts[2]).wait_for()
            await write(therapist, texts[3], 1)  # private, to Alex
            await client.locator("#chat-log .chat-msg", has_text=texts[3]).wait_for()
            await shots(client, "client", lang)
            await shots(therapist, "therapist", lang)
    finally:
        await devices.close()
    assert not devices.foreign, f"requests to other origins: {devices.foreign}"
