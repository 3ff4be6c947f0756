"""The therapist's browser pins the client code it last ran (the hashes of its import map and integrity
attributes) and, when the served code changed, shows a warning and keeps the therapist's key locked until the
therapist continues. The change here is real: the server is restarted serving a copy of the static files with one
module changed, which the browser loads only because the page carries its new hash."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from server import pages as server_pages

from .conftest import join, wait_for, wait_js
from .test_e2ee_browser import invite_link, with_secret

pytestmark = [pytest.mark.browser, pytest.mark.e2ee]


async def free_the_seat(alcove: Any, room_id: str) -> None:
    """A closed tab: once the server saw its socket go, let the grace run out so the link can join afresh."""

    async def gone() -> bool:
        room = alcove.hub.rooms.get(room_id)
        return room is None or room.therapist is None or room.therapist.conn is None

    await wait_for(gone, timeout=10, what="the server seeing the tab closed")
    await alcove.advance(alcove.config.timing.grace + 1)


async def test_changed_code_warns_before_the_therapists_key_is_unlocked(
        alcove: Any, pages: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    link = with_secret(room["therapist_link"])
    therapist = await pages.new()
    await join(therapist, link)
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    assert "&tk=" in await invite_link(therapist, room["client_links"][0])  # the key is in use
    assert await therapist.locator("#code-changed").count() == 0  # first run: pinned silently
    assert await therapist.evaluate("localStorage.getItem('alcove.codepin') !== null")
    context = therapist.context
    await therapist.close()
    await free_the_seat(alcove, room["room_id"])

    # The same release again: still no warning.
    again = await context.new_page()
    await join(again, link)
    await again.get_by_text("Nobody is waiting.").wait_for()
    assert "&tk=" in await invite_link(again, room["client_links"][0])
    assert await again.locator("#code-changed").count() == 0
    await again.close()
    await free_the_seat(alcove, room["room_id"])

    # The server now serves changed code (a module with one more line).
    copy = tmp_path / "static"
    shutil.copytree(server_pages.static_dir(), copy)
    changed = next(p for p in sorted(copy.rglob("store.js")))
    changed.write_text(changed.read_text() + "// changed by the server\n")
    monkeypatch.setattr(server_pages, "static_dir", lambda: copy)
    await alcove.restart()

    page = await context.new_page()
    await join(page, link)
    warning = page.locator("#code-changed")
    await warning.wait_for()
    assert await warning.is_visible()
    text = await warning.inner_text()
    assert "The code of this page changed" in text and "store.js" in text and "alcove verify-client" in text
    # The key stays locked: the console cannot make an invite link carrying the key's hash.
    await page.get_by_role("heading", name="Invite links").wait_for()
    await page.locator("#invite-input").fill(room["client_links"][0])
    await page.get_by_role("button", name="Add encryption", exact=True).click()
    await asyncio.sleep(1.0)  # a window in which an unlocked key would have produced the link
    assert "&tk=" not in await page.locator("#invite-output").input_value()
    await page.get_by_role("button", name="Continue with this version").click()
    await wait_js(page, "document.getElementById('invite-output').value.includes('&tk=')")
    assert await page.locator("#code-changed").count() == 0
    await page.close()
    await free_the_seat(alcove, room["room_id"])

    # Accepted: the new code is pinned now, no warning on the next visit.
    last = await context.new_page()
    await join(last, link)
    await last.get_by_text("Nobody is waiting.").wait_for()
    assert "&tk=" in await invite_link(last, room["client_links"][0])
    assert await last.locator("#code-changed").count() == 0


async def test_a_module_changed_behind_the_pages_back_does_not_run(
        alcove: Any, pages: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The import map's integrity is enforced by Chromium for imported modules (not only entry scripts)."""
    copy = tmp_path / "static"
    shutil.copytree(server_pages.static_dir(), copy)
    monkeypatch.setattr(server_pages, "static_dir", lambda: copy)
    await alcove.restart()
    page = await pages.new()
    await page.goto(alcove.url + "/")
    tagline = "document.querySelector('[data-i18n=\"app.tagline\"]').textContent.trim().length > 0"
    await wait_js(page, tagline)  # landing.js ran and imported i18n.js
    i18n = next(copy.rglob("i18n.js"))
    i18n.write_text(i18n.read_text() + "// changed on disk after the release was hashed\n")
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text))
    await page.reload()
    await wait_for(lambda: asyncio.sleep(0, result=any("integrity" in e for e in errors)), timeout=10,
                   what="an integrity error")
    assert not await page.evaluate(tagline)  # the module graph did not run
    pages.console_errors.clear()  # the expected refusal is not a failure of this test
