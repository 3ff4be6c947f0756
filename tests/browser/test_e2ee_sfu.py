"""End-to-end encryption in the browser THROUGH the forwarding SFU (docs/sfu.md, docs/security.md): a family room
with E2EE links, the therapist and two Chromium clients. Everyone decodes everyone (SFrame through the SFU, which
never decodes a frame), and after a removal a new epoch is switched in without the removed client.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_e2ee_sfu.py'
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from tests.conftest import AlcoveServer
from tests.conftest import sfu_decoded_frames as decoded_frames

from .conftest import TRACK_PCS, decodes_from_all, frames, join, wait_for, wait_js
from .test_e2ee_browser import (
    _grew,
    admit,
    assert_page_negotiated_little_metadata,
    e2ee_state,
    invite_link,
    sas_at_therapist,
    sas_of_client,
    with_secret,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2ee, pytest.mark.sfu]

SMALL = {"width": 320, "height": 240}


@pytest.fixture
async def alcove(sfu_alcove: AlcoveServer) -> AlcoveServer:
    """The server with its SFU (the ``pages`` fixture uses ``alcove``)."""
    return sfu_alcove


async def sfu_decoded_frames(alcove: AlcoveServer) -> float:
    """The SFU's decoded-frames counter, after checking that it forwarded something."""
    async with aiohttp.ClientSession() as http, http.get(f"{alcove.url}/metrics") as r:
        text = await r.text()
    forwarded = re.search(r"^alcove_sfu_forwarded_packets(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert forwarded and float(forwarded.group(1)) > 0, "the SFU forwarded nothing"
    return await decoded_frames(alcove)


async def encrypted_everywhere(page: Any, n_tiles: int) -> int:
    """The room indicator says "End-to-end encrypted", every remote tile says Encrypted; returns the epoch."""
    await wait_js(page, "(window.alcove.e2ee().peers.self || {}).encrypted > 20")
    state = await e2ee_state(page)
    assert state["epoch"] is not None and state["failures"] == [], state
    await page.locator(f"#e2ee-status[data-epoch='{state['epoch']}']").get_by_text(
        "Private — end-to-end encrypted").wait_for()
    await wait_js(page, f"[...document.querySelectorAll('.e2ee-badge')].filter(b => b.dataset.state === 'ok')"
                        f".length === {n_tiles}", timeout=15)
    assert await page.locator(".e2ee-badge", has_text="Encrypted").count() == n_tiles
    return int(state["epoch"])


async def test_family_room_e2ee_through_the_sfu(alcove: AlcoveServer, pages: Any) -> None:
    room = await alcove.create_room(type="family", clients=2, host="Dr. Ionescu")
    assert room["topology"] == "sfu"
    therapist = await pages.new(viewport=SMALL)
    await join(therapist, with_secret(room["therapist_link"]))
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    links = [await invite_link(therapist, link) for link in room["client_links"]]
    a, b = pages_ = [await pages.new(viewport=SMALL) for _ in links]
    await a.add_init_script(TRACK_PCS)
    for page, link, name in zip(pages_, links, ("Alex", "Sam"), strict=True):
        await join(page, link, name)
    await admit(therapist, "Alex")
    await admit(therapist, "Sam")
    everyone = [therapist, a, b]

    # (1) everyone decodes everyone, through the SFrame worker, and the pages say so
    await asyncio.gather(*(decodes_from_all(p, 2, timeout=40) for p in everyone))
    t_pid, a_pid, b_pid = [await p.evaluate("window.alcove.pid()") for p in everyone]
    for page, me in zip(everyone, (t_pid, a_pid, b_pid), strict=True):
        assert set(await frames(page)) == {t_pid, a_pid, b_pid} - {me}
    for client, pid in ((a, a_pid), (b, b_pid)):
        assert await sas_of_client(client) == await sas_at_therapist(therapist, pid)
    epochs = [await encrypted_everywhere(p, 2) for p in everyone]
    assert len(set(epochs)) == 1, epochs
    for page in everyone:
        state = await e2ee_state(page)
        assert sum(p.get("decrypted", 0) for k, p in state["peers"].items() if k != "self") > 20, state

    # less metadata towards the SFU: no audio level or other clear header extension, Opus at constant bitrate
    await assert_page_negotiated_little_metadata(a)

    # (2) the SFU forwarded every frame and decoded none
    assert await sfu_decoded_frames(alcove) == 0
    # ... and read what it needs outside the SFrame ciphertext: the VP8 payload descriptor of every E2EE publisher
    # (temporal layers 0, 1 and 2 of L1T3) and the key-frame bit of the clear VP8 header
    stats = await alcove.hub.media.stats()
    published = {pid: peer["published"]["video"] for worker in stats.values() for room in worker["rooms"].values()
                 for pid, peer in room["peers"].items()}
    assert set(published) == {t_pid, a_pid, b_pid}
    for video in published.values():
        assert video["keyframes_in"] > 0, video
        assert all(size > 0 for size in video["layer_bytes"]), video

    # (3) remove Sam: a new epoch without Sam; Alex and the therapist go on, Sam's page decodes nothing further
    await therapist.get_by_role("button", name="Remove Sam", exact=True).click()
    await therapist.get_by_role("dialog").get_by_role("button", name="Remove", exact=True).click()
    await wait_js(therapist, f"window.alcove.e2ee().epoch > {epochs[0]}", timeout=15)
    new_epoch = (await e2ee_state(therapist))["epoch"]
    await wait_js(a, f"window.alcove.e2ee().epoch >= {new_epoch}", timeout=15)

    async def b_frozen() -> bool:
        return sum((await frames(b)).values()) == 0 or await b.evaluate("window.alcove.status()") != "admitted"

    await wait_for(b_frozen, timeout=10, what="the removed client to stop decoding")
    b_then = await frames(b)
    a_then, t_then = await frames(a), await frames(therapist)
    await wait_for(lambda: _grew(a, t_pid, a_then.get(t_pid, 0) + 10), timeout=15, what="Alex decodes the therapist")
    await wait_for(lambda: _grew(therapist, a_pid, t_then.get(a_pid, 0) + 10), timeout=15,
                   what="the therapist decodes Alex")
    assert sum((await frames(b)).values()) <= sum(b_then.values())
    for page in (a, therapist):
        assert b_pid not in await frames(page)
        assert (await e2ee_state(page))["failures"] == []
    # the SFU still decoded nothing
    assert await sfu_decoded_frames(alcove) == 0
