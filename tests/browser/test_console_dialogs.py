"""Nothing irreversible by one click (issue 17, item 2).

"Decline" and "Remove" open a modal dialog: Cancel changes nothing; a confirmed decline shows the client the
therapist's message and leaves the link usable (the client knocks again and is admitted); a removal with "close this
link" ticked says so on the client's page, and the link is refused from then on.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_console_dialogs.py'
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import decodes_from_all, join, shot

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}


async def test_decline_and_remove_ask_first_and_block_only_when_chosen(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    therapist = await pages.new(viewport={"width": 1280, "height": 720})
    client = await pages.new(viewport=PHONE)
    await join(therapist, room["therapist_link"])
    await join(client, room["client_links"][0], "Alex")
    await therapist.get_by_role("button", name="Admit Alex", exact=True).wait_for()

    # One click opens the dialog, nothing more; Escape and Cancel change nothing.
    decline = therapist.get_by_role("button", name="Decline Alex", exact=True)
    await decline.click()
    dialog = therapist.get_by_role("dialog", name="Decline Alex?")
    await dialog.wait_for()
    assert await therapist.evaluate("document.activeElement.id") == "pick-message"
    await therapist.keyboard.press("Escape")
    await dialog.wait_for(state="hidden")
    assert await therapist.evaluate("document.activeElement.getAttribute('aria-label')") == "Decline Alex"
    await decline.click()
    await dialog.get_by_role("button", name="Cancel", exact=True).click()
    await dialog.wait_for(state="hidden")
    await therapist.wait_for_timeout(300)  # a decline would reach the client well within this
    assert await client.get_by_role("heading", name="Waiting for your therapist").is_visible()

    # Confirmed with a message, the link left open.
    await decline.click()
    await dialog.get_by_label("Message for Alex (optional)").fill("  Let us meet on Thursday,   as agreed. ")
    await shot(therapist, "console-decline-dialog")
    await dialog.get_by_role("button", name="Decline", exact=True).click()
    await client.get_by_role("heading", name="Your therapist could not let you in").wait_for()
    # (the page's text, not the live region that may be announcing the same words at that moment)
    await client.locator("main").get_by_text("Message from your therapist: “Let us meet on Thursday, as agreed.”").wait_for()
    await client.locator("#ended-body").get_by_text("Your link still works").wait_for()
    await shot(client, "phone-declined")
    assert await therapist.evaluate("document.activeElement.id") == "queue-title"

    # The same link knocks again; the therapist admits it.
    await join(client, room["client_links"][0], "Alex")
    await therapist.get_by_role("button", name="Admit Alex", exact=True).click()
    await decodes_from_all(therapist, 1)

    # Remove, this time closing the link for good: the client's page says so, the link is refused.
    await therapist.get_by_role("button", name="Remove Alex", exact=True).click()
    dialog = therapist.get_by_role("dialog", name="Remove Alex from the session?")
    await dialog.get_by_role("checkbox", name="Also close this link for good").check()
    await dialog.get_by_role("button", name="Remove", exact=True).click()
    await client.get_by_role("heading", name="You were removed from the session").wait_for()
    await client.locator("#ended-body").get_by_text("Your therapist has closed this link: it will not open again.").wait_for()
    assert not await client.locator("#ended-message").is_visible()
    await shot(client, "phone-removed-blocked")
    await client.goto(room["client_links"][0])
    await client.get_by_role("heading", name="This link is no longer valid").wait_for()
