"""Words for each role (issue 17, item 7): the therapist's join page, empty session and end page speak to the
therapist, not about "your therapist"; the client keeps its own words.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_console_words.py'
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import join

pytestmark = pytest.mark.browser


async def test_the_therapist_reads_words_for_a_therapist(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    therapist = await pages.new(viewport={"width": 1280, "height": 720})
    client = await pages.new()

    await therapist.goto(room["therapist_link"])
    await therapist.get_by_text("Your clients see this name in the session.").wait_for()
    assert await therapist.get_by_text("Your therapist sees this name").count() == 0
    await client.goto(room["client_links"][0])
    await client.get_by_text("Your therapist sees this name while you wait.").wait_for()

    await join(therapist, room["therapist_link"])
    await therapist.get_by_text("Nobody is in the session yet: admit clients from the waiting list.").wait_for()
    await therapist.get_by_role("button", name="End session", exact=True).click()
    await therapist.get_by_role("button", name="Confirm", exact=True).click()
    await therapist.get_by_role("heading", name="Session ended").wait_for()
    await therapist.locator("#ended-body").get_by_text("You ended the session for everyone. Thank you.").wait_for()
    assert await therapist.get_by_text("Your therapist ended the session").count() == 0
