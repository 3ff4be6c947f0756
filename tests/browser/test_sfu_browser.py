"""A family room through the forwarding SFU (the default topology of family and group rooms), all in Chromium:
everyone decodes everyone over ONE connection to the SFU; a client sent back stops its media to the others.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_sfu_browser.py'
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import AlcoveServer

from .conftest import TRACK_PCS, decodes_from_all, frames, join, wait_for, wait_js

pytestmark = [pytest.mark.browser, pytest.mark.sfu]


@pytest.fixture
async def alcove(sfu_alcove: AlcoveServer) -> AlcoveServer:
    """The server with its SFU (the ``pages`` fixture uses ``alcove``)."""
    return sfu_alcove


SMALL = {"width": 320, "height": 240}


OPEN_PCS = "window.__pcs.filter((pc) => pc.connectionState !== 'closed').length"

PACKETS_BY_MID = """async () => {
  const out = {};
  for (const pc of window.__pcs) {
    if (pc.connectionState === 'closed') continue;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.mid) out[s.mid] = s.packetsReceived || 0;
    });
  }
  return out;
}"""


async def new_page(pages: Any) -> Any:
    page = await pages.new(viewport=SMALL)
    await page.add_init_script(TRACK_PCS)
    return page


async def open_family(alcove: AlcoveServer, pages: Any, clients: int) -> tuple[dict[str, Any], list[Any]]:
    room = await alcove.create_room(type="family", clients=clients, host="Dr. Ionescu")
    assert room["topology"] == "sfu"
    therapist = await new_page(pages)
    await join(therapist, room["therapist_link"])
    people = []
    for i, link in enumerate(room["client_links"]):
        page = await new_page(pages)
        await join(page, link, f"Client {i + 1}")
        people.append(page)
    await therapist.get_by_role("button", name=f"Admit Client {clients}", exact=True).wait_for()
    await therapist.get_by_role("button", name="Admit all", exact=True).click()
    return room, [therapist, *people]


async def test_family_room_through_the_sfu_everyone_decodes_everyone(alcove: AlcoveServer, pages: Any) -> None:
    _room, everyone = await open_family(alcove, pages, 3)
    therapist, people = everyone[0], everyone[1:]
    await asyncio.gather(*(decodes_from_all(p, len(everyone) - 1, timeout=40) for p in everyone))
    pids = [await p.evaluate("window.alcove.pid()") for p in everyone]
    for page, me in zip(everyone, pids, strict=True):
        assert set(await frames(page)) == set(pids) - {me}
        # ONE connection per page, to the SFU (a mesh would have 3).
        assert await page.evaluate(OPEN_PCS) == 1

    # The server forwarded, never decoded.
    stats = await alcove.hub.media.stats()
    assert stats and all(int(w.get("decoded_frames", 0)) == 0 for w in stats.values()), stats
    assert sum(int(w.get("forwarded_packets", 0)) for w in stats.values()) > 0

    # Send a client back to the waiting room: its media to the others stops, and theirs to it.
    gone, gone_pid = people[0], pids[1]
    await therapist.get_by_role("button", name="Send Client 1 to waiting room", exact=True).click()
    await gone.get_by_text("You are back in the waiting room.").wait_for()
    rest = [p for p in everyone if p is not gone]

    async def nobody_has_it() -> bool:
        seen = [await frames(p) for p in rest]
        return all(gone_pid not in f for f in seen)

    await wait_for(nobody_has_it, timeout=10, what="the others to drop the client sent back")
    assert await frames(gone) == {}
    assert await gone.evaluate(OPEN_PCS) == 0
    await asyncio.sleep(1.0)
    before = [await p.evaluate(PACKETS_BY_MID) for p in rest]
    await asyncio.sleep(1.5)
    after = [await p.evaluate(PACKETS_BY_MID) for p in rest]
    for b, a in zip(before, after, strict=True):
        growing = sorted(mid for mid, n in a.items() if n > b.get(mid, 0))
        # audio + video of each of the 2 other remaining members; the m-lines that carried the client are frozen
        assert len(growing) == 2 * (len(rest) - 1), (b, a)
    await asyncio.gather(*(decodes_from_all(p, len(rest) - 1, timeout=20) for p in rest))
    for page in rest:
        assert set(await frames(page)) <= set(pids) - {gone_pid}
    await wait_js(therapist, "document.querySelectorAll('#tiles .tile').length === 3")
