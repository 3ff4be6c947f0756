"""The join page's "will this work?" check in Chromium: the test sound, the connection test against the server's
echo peer (direct, and relay-only through a throw-away coturn), and the result next to the name in the
therapist's waiting room; then the quality indicator on the tiles once admitted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.config import Config, Secret
from tests.conftest import AlcoveServer, require_loopback_namespace, serving
from tests.turn.conftest import coturn  # noqa: F401  (the fixture)

from .conftest import decodes_from_all, join, wait_js
from .test_turn_browser import RELAY_ONLY_JS

pytestmark = [pytest.mark.browser, pytest.mark.media]

NOTICE = "This test sends your picture and sound to the server and back; nothing is kept."


async def run_check(page: Any, link: str) -> str:
    await page.goto(link)
    await page.get_by_role("button", name="Test my connection").wait_for()
    assert NOTICE in await page.locator("#prejoin-connection-notice").inner_text()
    await page.get_by_role("button", name="Play a test sound").click()
    await page.get_by_text("Did you hear a short chime?").wait_for()
    await page.get_by_role("button", name="Test my connection").click()
    await wait_js(page, "['direct','relay','blocked','error'].includes(document.querySelector('#prejoin-result')"
                        ".dataset.result)", timeout=20)
    return str(await page.locator("#prejoin-result").get_attribute("data-result"))


async def test_prejoin_direct_and_the_therapist_sees_it(alcove: Any, pages: Any) -> None:
    require_loopback_namespace()
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    therapist = await pages.new()
    client = await pages.new()
    await join(therapist, room["therapist_link"])
    await therapist.get_by_text("Nobody is waiting.").wait_for()

    assert await run_check(client, room["client_links"][0]) == "direct"
    assert "Direct connection" in await client.locator("#prejoin-result").inner_text()
    assert len(alcove.hub.echo) <= 1  # the call ends by itself (10 s); nothing else is kept
    await client.get_by_label("Your name").fill("Alex")
    await client.get_by_role("button", name="Join", exact=True).click()

    note = therapist.locator('#queue-list .check-note[data-check="direct"]')
    await note.wait_for()
    assert await note.inner_text() == "their test: direct connection"

    await therapist.get_by_role("button", name="Admit Alex", exact=True).click()
    await decodes_from_all(client, 1)
    await decodes_from_all(therapist, 1)
    # Each side shows a quality indicator on the other's tile, from its own getStats.
    for page in (client, therapist):
        await wait_js(page, "!!document.querySelector('.tile[data-pid]:not(.self) .quality[data-quality]')")


@pytest.fixture
async def turn_alcove(tmp_path: Path, coturn: Any) -> AsyncIterator[AlcoveServer]:  # noqa: F811
    require_loopback_namespace()
    config = Config(turn_urls=tuple(coturn.urls), turn_secret=Secret(coturn.secret))
    async with serving(tmp_path / "data", config) as server:
        yield server


@pytest.mark.turn
async def test_prejoin_relay_only(turn_alcove: AlcoveServer, browser: Any) -> None:
    from .conftest import Pages

    pages = Pages(browser, turn_alcove.url)
    try:
        room = await turn_alcove.create_room(type="individual", host="Dr. Ionescu")
        client = await pages.new()
        await client.add_init_script(RELAY_ONLY_JS)
        assert await run_check(client, room["client_links"][0]) == "relay"
        assert "Through the relay" in await client.locator("#prejoin-result").inner_text()
        # "Audio only" on the join page: the preview drops the camera, and the session will send sound only.
        await client.get_by_label("Audio only").check()
        await wait_js(client, "document.body.dataset.media === 'audio'")
        assert await client.evaluate("document.querySelector('#join-preview').hidden")
    finally:
        await pages.close()
    assert not pages.foreign
