"""A word to the waiting room (issue 15, item 2): the therapist sends a set word to everyone waiting and a sentence
of its own to one person; each page says the set word in its own language, the sentence reaches only the person it
was meant for, a later arrival still reads the word to everyone, and it is gone once admitted. Screenshots of the
console's form and the client's note at desktop and phone size, in English and Romanian, with axe on both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import join, shot, wait_js

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
AXE_RUN = """async () => {
  const r = await axe.run(document, { resultTypes: ["violations"] });
  return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} @ ${v.nodes.slice(0, 4).map((n) => n.target.join(" ")).join(", ")}`);
}"""
PRIVATE = "Plantednote-7Q: the door code is 4411."


async def note_text(page: Any) -> str:
    return str(await page.evaluate("document.getElementById('waiting-note').textContent"))


async def axe_clean(page: Any, where: str) -> None:
    found = await page.evaluate(AXE_RUN)
    assert found == [], f"{where}: {found}"


async def to_romanian(page: Any) -> None:
    await page.locator('#lang-switch button[data-lang="ro"]').click()
    await wait_js(page, "document.documentElement.lang === 'ro'")


async def test_a_word_to_the_waiting_room_reaches_who_it_is_for(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="group", host="Dr. Ionescu", clients=4)
    therapist = await pages.new(viewport={"width": 1280, "height": 720})
    alex = await pages.new()
    bo = await pages.new(viewport={"width": 390, "height": 844})
    for page in (therapist, alex, bo):
        await page.context.add_init_script(path=str(AXE))  # axe-core from web/node_modules, never a CDN
    await join(therapist, room["therapist_link"])
    await join(alex, room["client_links"][0], "Alex")
    await join(bo, room["client_links"][1], "Bo")
    for page in (alex, bo):
        await page.get_by_role("heading", name="Waiting for your therapist").wait_for()
    opener = therapist.get_by_role("button", name="Send a word to the waiting room")
    await wait_js(therapist, "document.querySelectorAll('#queue-list li').length === 2")

    # a set word to everyone waiting, with the keyboard: the form says it is not end-to-end encrypted
    await opener.focus()
    await therapist.keyboard.press("Enter")
    dialog = therapist.get_by_role("dialog", name="A word to the waiting room")
    await dialog.wait_for()
    assert "Not end-to-end encrypted" in await dialog.inner_text()
    assert await therapist.evaluate("document.activeElement.id") == "note-to"
    await axe_clean(therapist, "console, note form open")
    await shot(therapist, "console-waiting-note")
    await dialog.get_by_role("radio", name="I am running about 5 minutes late.").check()
    await dialog.get_by_role("button", name="Send").click()
    await therapist.get_by_text("Sent to everyone waiting.").wait_for()
    assert await therapist.evaluate("document.activeElement.id") == "note-open"
    for page in (alex, bo):
        await wait_js(page, "document.getElementById('waiting-note').textContent.includes('5 minutes late')")
    await axe_clean(bo, "waiting room with a note")
    await shot(bo, "phone-waiting-note")
    await to_romanian(bo)
    assert "aproximativ 5 minute" in await note_text(bo)  # the set word, in the page's own language
    await shot(bo, "phone-waiting-note-ro")

    # a sentence of the therapist's own, to Bo only: Alex never sees it
    await opener.click()
    await dialog.get_by_label("To").select_option(label="Bo")
    await dialog.get_by_label("Your own sentence (at most 160 characters)").fill(PRIVATE)
    assert await dialog.get_by_role("radio", name="My own words").is_checked()
    await dialog.get_by_role("button", name="Send").click()
    await therapist.get_by_text("Sent to Bo.").wait_for()
    await wait_js(bo, f"document.getElementById('waiting-note').textContent.includes({PRIVATE!r})")
    assert PRIVATE not in await note_text(alex) and "5 minutes late" in await note_text(alex)

    # an empty sentence is refused in the form, nothing is sent
    await opener.click()
    await dialog.get_by_role("radio", name="My own words").check()
    await dialog.get_by_role("button", name="Send").click()
    await therapist.get_by_text("Write a sentence, or choose one of the set words.").wait_for()
    await therapist.keyboard.press("Escape")

    # a later arrival reads the word to everyone, not the private sentence
    cy = await pages.new()
    await join(cy, room["client_links"][2], "Cy")
    await wait_js(cy, "document.getElementById('waiting-note').textContent.includes('5 minutes late')")
    assert PRIVATE not in await note_text(cy)
    await shot(cy, "waiting-note")
    await to_romanian(cy)
    await shot(cy, "waiting-note-ro")

    # admitted: the note is gone from the page
    await therapist.get_by_role("button", name="Admit Alex").click()
    await alex.locator("#view-session").wait_for()
    assert await note_text(alex) == ""
    await to_romanian(therapist)
    await therapist.get_by_role("button", name="Trimiteți un mesaj în sala de așteptare").click()
    await therapist.get_by_role("dialog", name="Un mesaj pentru sala de așteptare").wait_for()
    await shot(therapist, "console-waiting-note-ro")
    await therapist.keyboard.press("Escape")
    await therapist.set_viewport_size({"width": 390, "height": 844})
    await therapist.get_by_role("button", name="Trimiteți un mesaj în sala de așteptare").click()
    await shot(therapist, "phone-console-waiting-note-ro")
