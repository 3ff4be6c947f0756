"""The therapist's admission controls: decline, send back to the waiting room and admit again, remove."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import decodes_from_all, frames, join, wait_for

pytestmark = pytest.mark.browser


async def remote_videos(page: Any) -> int:
    return int(await page.evaluate("document.querySelectorAll('#tiles video[data-remote]').length"))


async def test_decline_send_back_readmit_and_remove(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="couple", host="Dr. Ionescu")
    therapist = await pages.new()
    declined = await pages.new()
    client = await pages.new()

    await join(therapist, room["therapist_link"])
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    await join(declined, room["client_links"][0], "Sam")
    await join(client, room["client_links"][1], "Alex")
    await therapist.get_by_role("button", name="Admit Alex", exact=True).wait_for()
    # Clients never see each other's names while waiting.
    assert "Alex" not in await declined.content()
    assert "Sam" not in await client.content()

    # Decline, closing the link: Sam gets a calm page, and the link is refused from then on.
    await therapist.get_by_role("button", name="Decline Sam", exact=True).click()
    await therapist.get_by_role("checkbox", name="Also close this link for good").check()
    await therapist.get_by_role("dialog").get_by_role("button", name="Decline", exact=True).click()
    await declined.get_by_role("heading", name="Your therapist could not let you in").wait_for()
    await declined.goto(room["client_links"][0])
    await declined.get_by_role("heading", name="This link is no longer valid").wait_for()

    # Admit, then send back: media stops at once and the client is told where it is.
    await therapist.get_by_role("button", name="Admit Alex", exact=True).click()
    await decodes_from_all(client, 1)
    await therapist.get_by_role("button", name="Send Alex to waiting room", exact=True).click()
    await client.get_by_text("You are back in the waiting room.").wait_for()
    assert await remote_videos(client) == 0
    assert await frames(client) == {}

    async def therapist_has_no_peer() -> bool:
        return await frames(therapist) == {}

    await wait_for(therapist_has_no_peer, what="the therapist's connection to the client to close")

    # Admit again: media flows again.
    await therapist.get_by_role("button", name="Admit Alex", exact=True).click()
    await decodes_from_all(client, 1)
    await decodes_from_all(therapist, 1)

    # Remove, closing the link: the client is out, and its link is revoked.
    await therapist.get_by_role("button", name="Remove Alex", exact=True).click()
    await therapist.get_by_role("checkbox", name="Also close this link for good").check()
    await therapist.get_by_role("dialog").get_by_role("button", name="Remove", exact=True).click()
    await client.get_by_role("heading", name="You were removed from the session").wait_for()
    assert await remote_videos(client) == 0
    await client.goto(room["client_links"][1])
    await client.get_by_role("heading", name="This link is no longer valid").wait_for()
