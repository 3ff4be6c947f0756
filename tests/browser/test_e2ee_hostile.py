"""A hostile server (tools/hostile.py) against the browser client: a forged roster gets no key, a pid takeover is
refused and shown on both screens, a withheld switch stops the remaining client's sending at the epoch's expiry.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_e2ee_hostile.py'
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.e2ee import ClientKeys, KeyState, message_kind, unwrap_any
from peer.participant import Participant
from rtc.aiortc_hooks import allow_loopback_candidates
from tests.conftest import AlcoveServer
from tests.e2ee.test_aiortc_e2ee import e2ee_links
from tools.hostile import HostileProxy

from .conftest import Pages, decodes_from_all, frames, join, wait_for, wait_js
from .test_e2ee_browser import admit, e2ee_state, invite_link, with_secret

pytestmark = [pytest.mark.browser, pytest.mark.e2ee]


@pytest.fixture
async def hostile(browser: Any, alcove: Any) -> AsyncIterator[tuple[HostileProxy, Pages]]:
    """A hostile proxy in front of the fixture server and pages that load the app through it."""
    server = HostileProxy(alcove.url)
    await server.start()
    pages = Pages(browser, server.url)
    try:
        yield server, pages
    finally:
        for line in pages.console_errors[-40:]:
            print("[browser]", line)
        await pages.close()
        await server.stop()
    assert not pages.foreign, f"requests to other origins: {pages.foreign}"


def via(server: HostileProxy, alcove: Any, link: str) -> str:
    return link.replace(alcove.url, server.url, 1)


async def secure_room(alcove: Any, server: HostileProxy, pages: Pages, clients: int
                      ) -> tuple[dict[str, Any], Any, list[Any], list[str]]:
    room = await alcove.create_room(type="individual" if clients == 1 else "couple", host="Dr. Ionescu")
    therapist = await pages.new()
    await join(therapist, via(server, alcove, with_secret(room["therapist_link"])))
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    links = [await invite_link(therapist, via(server, alcove, link)) for link in room["client_links"][:clients]]
    return room, therapist, [await pages.new() for _ in links], links


def epochs(server: HostileProxy) -> list[str]:
    return [data for _, data in server.keys_seen if message_kind(data) == "epoch"]


def ghost_entry(pid: str, name: str, intro: str) -> dict[str, Any]:
    return {"pid": pid, "name": name, "since": "2026-01-01T00:00:00Z", "connected": True, "intro": intro}


async def test_a_forged_roster_gets_no_key_in_chromium(alcove: Any, hostile: Any) -> None:
    server, pages = hostile
    room, therapist, (a, b), (link_a, link_b) = await secure_room(alcove, server, pages, clients=2)
    await join(a, link_a, "Alex")
    await admit(therapist, "Alex")
    await decodes_from_all(a, 1)
    t_pid = await therapist.evaluate("window.alcove.pid()")
    ghost = ClientKeys(room["room_id"], pid="p_ghost")
    server.extra_queue.append(ghost_entry("p_ghost", "Ghost", ghost.make_intro()))
    await server.resend(t_pid)
    await therapist.get_by_role("button", name="Admit Ghost", exact=True).wait_for()  # shown, never clicked
    server.extra_queue.clear()
    server.extra_roster.append({"pid": "p_ghost", "role": "client", "name": "Ghost", "connected": True})
    await server.resend(t_pid)
    # The therapist's screen says the ghost has no key (it never admitted it) ...
    await therapist.locator('.tile[data-pid="p_ghost"] .e2ee-badge', has_text="No key").wait_for()
    # ... and an admission while it sits in the forged roster makes an epoch without it.
    await join(b, link_b, "Blake")
    await admit(therapist, "Blake")
    a_pid = await a.evaluate("window.alcove.pid()")

    async def b_decodes() -> bool:  # from the therapist and Alex (the ghost in its forged roster sends nothing)
        got = await frames(b)
        return got.get(t_pid, 0) >= 10 and got.get(a_pid, 0) >= 10

    await wait_for(b_decodes, timeout=25, what="Blake decoding the therapist and Alex")
    assert epochs(server)
    keys = [k for _, k in ghost.hpke_keys]
    for data in epochs(server):
        assert "p_ghost" not in json.loads(json.loads(data)["p"])["wrapped"]
        assert unwrap_any(data, room["room_id"], keys) is None
    assert (await e2ee_state(a))["failures"] == [] and (await e2ee_state(b))["failures"] == []
    # The server renames Alex in Blake's roster: Blake's tile keeps the name the therapist signed.
    b_pid = await b.evaluate("window.alcove.pid()")
    tile = b.locator(f'.tile[data-pid="{a_pid}"] .name')
    await wait_for(lambda: _text_is(tile, "Alex"), timeout=10, what="the signed name on Blake's tile")
    server.only = {b_pid}
    server.hidden.add(a_pid)
    server.extra_roster = [{"pid": a_pid, "role": "client", "name": "Mallory", "connected": True}]
    await server.resend(b_pid)
    await wait_js(b, "window.alcove.status() === 'admitted'")
    await b.wait_for_timeout(1000)
    assert await tile.inner_text() == "Alex"
    assert await b.get_by_text("Mallory").count() == 0


async def _text_is(locator: Any, text: str) -> bool:
    return bool(await locator.count()) and (await locator.inner_text()) == text


async def test_a_pid_takeover_is_refused_and_shown_on_both_screens(alcove: Any, hostile: Any) -> None:
    server, pages = hostile
    room, therapist, (a, b), (link_a, link_b) = await secure_room(alcove, server, pages, clients=2)
    await join(a, link_a, "Alex")
    await admit(therapist, "Alex")
    await join(b, link_b, "Blake")
    await admit(therapist, "Blake")
    await decodes_from_all(a, 2)
    t_pid = await therapist.evaluate("window.alcove.pid()")
    a_pid = await a.evaluate("window.alcove.pid()")
    # Drop Alex's pid from the therapist's roster, queue it again with a new intro, put it back.
    server.hidden.add(a_pid)
    await server.resend(t_pid)
    await wait_js(therapist, f"!document.querySelector('.tile[data-pid=\"{a_pid}\"]')")
    attacker = ClientKeys(room["room_id"], pid=a_pid)
    server.extra_queue.append(ghost_entry(a_pid, "Alex", attacker.make_intro()))
    await server.resend(t_pid)
    banner = therapist.locator('#banners .banner[data-refused="new-person"]')
    await banner.wait_for()
    assert "Someone new is using the seat of Alex" in await banner.inner_text()
    await therapist.get_by_text("A new person, not the one you let in before").wait_for()
    server.extra_queue.clear()
    server.hidden.clear()
    await server.resend(t_pid)
    # Alex was forgotten when the roster dropped it: the next epoch (Blake only) leaves it out, and its screen says so.
    refused = a.locator('#banners .banner[data-refused="epoch"]')
    await refused.wait_for(timeout=15_000)
    assert "did not pass the security check" in await refused.inner_text()
    assert any(r["what"] == "epoch" for r in (await e2ee_state(a))["refusals"])
    assert any(r["what"] == "new-person" and r["pid"] == a_pid for r in (await e2ee_state(therapist))["refusals"])
    await therapist.locator(f'.tile[data-pid="{a_pid}"] .e2ee-badge', has_text="No key").wait_for()
    keys = [k for _, k in attacker.hpke_keys]
    assert all(unwrap_any(data, room["room_id"], keys) is None for data in epochs(server))


async def test_a_withheld_switch_stops_the_remaining_browser_at_the_expiry(alcove: Any, hostile: Any) -> None:
    """aiortc therapist with a short epoch lifetime; Chromium client Alex stays; a colluding aiortc client (its keys
    never expire) is removed while the server withholds every later epoch and switch from Alex."""
    server, pages = hostile
    allow_loopback_candidates()
    ik = ec.generate_private_key(ec.SECP256R1())
    room = await alcove.create_room(type="couple")
    t_link, (link_a, link_b) = e2ee_links(room, ik)
    t = await Participant.join(server.url, t_link, name="Dr. T", therapist_ik=ik, epoch_lifetime_ms=8000)
    b = await Participant.join(server.url, link_b, name="Blake",
                               keystate_factory=lambda: KeyState(wall=lambda: 0.0))
    try:
        a = await pages.new()
        await join(a, via(server, alcove, link_a), "Alex")
        await t.wait_until(lambda: len(t.intros) == 2, 15, "both intros")
        for name in ("Alex", "Blake"):
            await t.admit(t.pid_of(name))
        await decodes_from_all(a, 2)
        a_pid = await a.evaluate("window.alcove.pid()")
        await a.locator('#e2ee-status[data-state="on"]').wait_for()
        server.withhold(a_pid, "epoch", "switch")
        await t.remove(b.pid or "")
        # At the old epoch's expiry Alex's page stops sending and says so.
        status = a.locator('#e2ee-status[data-state="reconnecting"]')
        await status.wait_for(timeout=15_000)
        assert await status.inner_text() == "Reconnecting encryption…"
        assert (await e2ee_state(a))["sendExpired"] is True
        await a.wait_for_timeout(1200)  # a stats report of the worker from after the expiry
        sent = (await e2ee_state(a))["peers"]["self"]
        await a.wait_for_timeout(2000)
        later = (await e2ee_state(a))["peers"]["self"]
        assert later["encrypted"] == sent["encrypted"], "frames were sent under the expired epoch"
        assert later["dropped"] > sent["dropped"]
        assert server.withheld and all(pid == a_pid for pid, _ in server.withheld)
        # The server stops withholding: the therapist's periodic rekey brings Alex back.
        server.release(a_pid)
        await a.locator('#e2ee-status[data-state="on"]').wait_for(timeout=15_000)
        await wait_for(lambda: _grew(a, later["encrypted"]), timeout=10, what="Alex sending again")
    finally:
        await b.close()
        await t.close()


async def _grew(page: Any, before: int) -> bool:
    return int((await e2ee_state(page))["peers"]["self"]["encrypted"]) > before


@pytest.fixture
async def hostile_sfu(browser: Any, sfu_alcove: AlcoveServer) -> AsyncIterator[tuple[HostileProxy, Pages]]:
    server = HostileProxy(sfu_alcove.url)
    await server.start()
    pages = Pages(browser, server.url)
    try:
        yield server, pages
    finally:
        await pages.close()
        await server.stop()
    assert not pages.foreign, f"requests to other origins: {pages.foreign}"


@pytest.mark.sfu
async def test_an_sfu_mapping_that_swaps_publishers_does_not_swap_the_tiles(sfu_alcove: AlcoveServer,
                                                                              hostile_sfu: Any) -> None:
    """The server tells Alex that the therapist's media is Sam's and Sam's the therapist's: each tile still shows
    the media of the member whose key decrypts it (SFrame KID -> the signed roster)."""
    server, pages = hostile_sfu
    room = await sfu_alcove.create_room(type="family", clients=2, host="Dr. Ionescu")
    small = {"width": 320, "height": 240}
    therapist = await pages.new(viewport=small)
    await join(therapist, via(server, sfu_alcove, with_secret(room["therapist_link"])))
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    links = [await invite_link(therapist, via(server, sfu_alcove, link)) for link in room["client_links"]]
    a, b = [await pages.new(viewport=small) for _ in links]
    t_pid = await therapist.evaluate("window.alcove.pid()")
    await join(a, links[0], "Alex")
    await admit(therapist, "Alex")
    a_pid = await a.evaluate("window.alcove.pid()")
    await join(b, links[1], "Sam")
    b_pid = await wait_pid(b)
    server.only = {a_pid}
    server.swap = (t_pid, b_pid)
    await admit(therapist, "Sam")

    async def placed_by_sender() -> bool:
        shown = (await e2ee_state(a)).get("shownFrom") or {}
        return set(shown) == {t_pid, b_pid} and all(sender == pid for pid, sender in shown.items())

    await wait_for(placed_by_sender, timeout=40, what="Alex's tiles placed by the authenticated sender")
    await decodes_from_all(a, 2, timeout=40)
    shown = (await e2ee_state(a))["shownFrom"]
    assert shown == {t_pid: t_pid, b_pid: b_pid}


async def wait_pid(page: Any) -> str:
    await wait_js(page, "!!window.alcove && !!window.alcove.pid()")
    return str(await page.evaluate("window.alcove.pid()"))
