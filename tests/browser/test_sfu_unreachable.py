"""A family room whose SFU has no address a client could reach: the page says so instead of waiting forever.

The server is configured for a public URL elsewhere (so loopback candidates do not come by themselves) and runs
in a namespace with nothing but lo (so the SFU has no other address, and no TURN is configured).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.config import Config
from tests.conftest import AlcoveServer, require_loopback_namespace, serving

from .conftest import join

pytestmark = [pytest.mark.browser, pytest.mark.sfu]

MESSAGE = "The media server has no reachable address"


@pytest.fixture
async def alcove(tmp_path: Path) -> AsyncIterator[AlcoveServer]:
    require_loopback_namespace()
    async with serving(tmp_path / "data", Config(public_url="https://video.example.org", media_workers=1)) as server:
        yield server


async def test_the_page_says_the_media_server_has_no_reachable_address(alcove: AlcoveServer, pages: Any) -> None:
    assert alcove.hub.media_unreachable == "no-address"
    room = await alcove.create_room(type="family", clients=1, host="Dr. Ionescu")
    assert room["topology"] == "sfu"

    def here(link: str) -> str:  # the links name the public URL; the pages are served on loopback
        return alcove.url + link[link.index("/j/"):]

    therapist = await pages.new()
    await join(therapist, here(room["therapist_link"]))
    client = await pages.new()
    await join(client, here(room["client_links"][0]), "Client 1")
    await therapist.get_by_role("button", name="Admit all", exact=True).click()
    for page in (therapist, client):
        await page.locator("#banners").get_by_text(MESSAGE).wait_for(timeout=20_000)
