"""An individual session from the link to the end, through the waiting room and the therapist's console."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import decodes_from_all, frames, join, shot, wait_js

pytestmark = pytest.mark.browser


async def remote_videos(page: Any) -> int:
    return int(await page.evaluate("document.querySelectorAll('#tiles video[data-remote]').length"))


async def test_individual_session_from_link_to_end(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    client = await pages.new()
    therapist = await pages.new()

    await client.goto(room["client_links"][0])
    await client.get_by_text("Your session with Dr. Ionescu is today at").wait_for()
    await client.get_by_label("Your name").fill("Alex")
    await wait_js(client, "document.getElementById('join-preview').readyState >= 2")
    await shot(client, "join")
    await client.get_by_role("button", name="Join", exact=True).click()
    await client.get_by_role("heading", name="Waiting for your therapist").wait_for()
    await wait_js(client, "document.getElementById('waiting-preview').readyState >= 2")
    await join(therapist, room["therapist_link"])
    admit = therapist.get_by_role("button", name="Admit Alex", exact=True)
    await admit.wait_for()

    # While waiting: no remote media of any kind, and no peer connection at all.
    assert await remote_videos(client) == 0
    assert await frames(client) == {}
    await client.get_by_text("Your therapist is here.").wait_for()
    await shot(client, "waiting")
    await wait_js(therapist, "document.title.startsWith('(1) waiting')")
    await shot(therapist, "console-with-waiting-list")

    await admit.click()
    await client.get_by_role("button", name="Mute", exact=True).wait_for()
    await decodes_from_all(client, 1)
    await decodes_from_all(therapist, 1)
    assert await remote_videos(client) == 1
    await shot(client, "session-client")
    await shot(therapist, "console-in-session")

    await therapist.get_by_role("button", name="End session", exact=True).click()
    await therapist.get_by_role("button", name="Confirm", exact=True).click()
    await client.get_by_role("heading", name="Session ended").wait_for()
    assert await remote_videos(client) == 0
    await shot(client, "ended")

    await client.goto(room["client_links"][0])
    await client.get_by_role("heading", name="This session has ended").wait_for()
