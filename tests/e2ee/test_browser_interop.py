"""The browser's E2EE against the Python aiortc participant, in both roles, and through a fingerprint-swapping
middleman (tools/mitm.py): same protocol, same SAS, SFrame media both ways; the middleman is refused by both ends.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/e2ee/test_browser_interop.py'
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.participant import Participant
from rtc import aiortc_hooks as hooks
from tests.browser.conftest import TRACK_PCS, browser, decodes_from_all, frames, join, pages, wait_js  # noqa: F401
from tests.browser.test_e2ee_browser import (
    admit,
    assert_little_metadata,
    assert_page_negotiated_little_metadata,
    e2ee_state,
    invite_link,
    sas_at_therapist,
    sas_of_client,
    with_secret,
)
from tests.e2ee.test_aiortc_e2ee import e2ee_links, watch_rtp
from tools.mitm import MitmProxy

pytestmark = [pytest.mark.e2ee, pytest.mark.browser, pytest.mark.media, pytest.mark.usefixtures("media_namespace")]


def sas_text(sas: Any) -> str:
    """A Python SAS in the page's diagnostics form ("i,i,…|d,d,d")."""
    return ",".join(str(i) for i in sas.indices) + "|" + ",".join(str(d) for d in sas.decimal)


@pytest.fixture
async def bots() -> AsyncIterator[list[Participant]]:
    hooks.allow_loopback_candidates()
    joined: list[Participant] = []
    yield joined
    for p in joined:
        await p.close()


async def test_aiortc_therapist_and_browser_client(alcove: Any, pages: Any,  # noqa: F811
                                                     bots: list[Participant]) -> None:
    ik = ec.generate_private_key(ec.SECP256R1())
    room = await alcove.create_room(type="individual", host="Dr. T")
    t_link, (c_link,) = e2ee_links(room, ik)
    t = await Participant.join(alcove.url, t_link, name="Dr. T", therapist_ik=ik)
    bots.append(t)
    client = await pages.new()
    await join(client, c_link, "Alex")
    await wait_js(client, "window.alcove && window.alcove.pid()")
    pid = await client.evaluate("window.alcove.pid()")
    await t.wait_until(lambda: pid in t.intros, 10, "intro verified")
    assert t.intros[pid].mac_ok is True
    await t.admit(pid)
    await t.wait_until(lambda: pid in t.sas_of, 10, "reveal")
    await decodes_from_all(client, 1, timeout=30)
    await t.wait_frames(pid, video=11, audio=10, timeout=30)
    assert await sas_of_client(client) == sas_text(t.sas_of[pid])
    # the worker reports its counters once a second
    await wait_js(client, f"(window.alcove.e2ee().peers[{t.pid!r}] || {{}}).decrypted > 20")
    state = await e2ee_state(client)
    assert state["failures"] == [] and t.security_failures == []
    assert t.keystate is not None and t.keystate.counters["decrypted"] > 20


async def test_browser_client_reload_with_an_aiortc_therapist_gets_a_new_epoch(alcove: Any, pages: Any,  # noqa: F811
                                                                               bots: list[Participant]) -> None:
    ik = ec.generate_private_key(ec.SECP256R1())
    room = await alcove.create_room(type="individual", host="Dr. T")
    t_link, (c_link,) = e2ee_links(room, ik)
    t = await Participant.join(alcove.url, t_link, name="Dr. T", therapist_ik=ik)
    bots.append(t)
    client = await pages.new()
    await join(client, c_link, "Alex")
    await wait_js(client, "window.alcove && window.alcove.pid()")
    pid = await client.evaluate("window.alcove.pid()")
    await t.wait_until(lambda: pid in t.intros, 10, "intro verified")
    await t.admit(pid)
    await decodes_from_all(client, 1, timeout=30)
    code = await sas_of_client(client)
    epochs = len(t.epochs_made)
    await client.reload()
    await wait_js(client, "window.alcove && window.alcove.pid()")
    assert await client.evaluate("window.alcove.pid()") == pid  # resumed, not admitted again
    await t.wait_until(lambda: len(t.epochs_made) > epochs, 15, "a new epoch for the returning client")
    await decodes_from_all(client, 1, timeout=30)
    before = t.frames_from(pid)["video"]
    await t.wait_frames(pid, video=before + 10, timeout=30)
    assert await sas_of_client(client) == code
    assert t.security_failures == []


async def test_browser_therapist_and_aiortc_client(alcove: Any, pages: Any,  # noqa: F811
                                                     bots: list[Participant]) -> None:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    therapist = await pages.new()
    await therapist.add_init_script(TRACK_PCS)
    await join(therapist, with_secret(room["therapist_link"]))
    link = await invite_link(therapist, room["client_links"][0])
    c = await Participant.join(alcove.url, link, name="Bot")
    bots.append(c)
    assert c.e2ee
    await admit(therapist, "Bot")
    await c.wait_until(lambda: c.status == "admitted" and c.sas is not None, 10, "admitted")
    t_pid = await therapist.evaluate("window.alcove.pid()")
    await c.wait_until(lambda: t_pid in c.links, 10, "link")
    packets = watch_rtp(c.links[t_pid].pc)  # what Chromium sends, as a relay on the path sees it
    await decodes_from_all(therapist, 1, timeout=30)
    await c.wait_frames(t_pid, video=11, audio=10, timeout=30)
    # less metadata, both ways: no audio level or other clear header extension, Opus at constant bitrate
    await assert_page_negotiated_little_metadata(therapist)
    pc = c.links[t_pid].pc
    extmaps = assert_little_metadata(pc.remoteDescription.sdp)
    assert_little_metadata(pc.localDescription.sdp)
    opus = {int(line.split(":", 1)[1].split(" ")[0]) for line in pc.remoteDescription.sdp.splitlines()
            if line.startswith("a=rtpmap:") and "opus/48000" in line.lower()}
    audio = [ids for pt, ids in packets if pt in opus]
    assert len(audio) >= 10 and all(set(ids) <= set(extmaps) for ids in audio), audio[:5]
    # Opus at constant bitrate: every audio packet has the same size, give or take the SFrame counter's length
    # (measured: 118-119 bytes; with VBR the same tone-and-silence input gives 70-130 bytes)
    # Chromium's encoder settles its constant rate after the first packets (110 bytes were seen before 118 under
    # load, and runs that stay at 111 for a second or more), so: nearly every packet within 8 bytes of the usual
    # size; VBR spreads over ±30 bytes.
    # (the first quarter of each stream's packets is left out: that is where the encoder settles)
    sizes = sorted(n for pt in opus for n in (lambda got: got[len(got) // 4:])(packets.sizes.get(pt, [])))
    assert len(sizes) >= 10, sizes
    usual = max(set(sizes), key=sizes.count)
    assert sum(abs(n - usual) <= 8 for n in sizes) >= 0.9 * len(sizes), sizes
    assert await sas_at_therapist(therapist, c.pid) == sas_text(c.sas)
    assert c.security_failures == [] and (await e2ee_state(therapist))["failures"] == []
    assert c.keystate is not None and c.keystate.counters["decrypted"] > 20


async def test_middleman_is_refused_by_both_browser_ends(alcove: Any, browser: Any) -> None:  # noqa: F811
    proxy = await MitmProxy(alcove.url, rewrite=True).start()
    contexts = []
    try:
        room = await alcove.create_room(type="individual", host="Dr. Ionescu")
        via = lambda link: link.replace(alcove.url, proxy.url)  # noqa: E731
        opened = []
        for _ in range(2):
            ctx = await browser.new_context(viewport={"width": 1200, "height": 800}, locale="en-GB")
            await ctx.grant_permissions(["camera", "microphone"], origin=proxy.url)
            contexts.append(ctx)
            opened.append(await ctx.new_page())
        therapist, client = opened
        await join(therapist, via(with_secret(room["therapist_link"])))
        link = await invite_link(therapist, via(room["client_links"][0]))
        await join(client, link, "Alex")
        await admit(therapist, "Alex")  # intro, grant and reveal pass the middleman untouched
        t_pid = await therapist.evaluate("window.alcove.pid()")
        await client.get_by_role("heading", name="Security check failed").wait_for(timeout=20_000)
        await therapist.get_by_text("Security check failed for Alex").wait_for(timeout=20_000)
        await asyncio.sleep(2.0)  # long enough for a connection to come up if it were going to
        assert proxy.rewritten >= 1
        stats = await therapist.evaluate("window.alcove.stats()")
        assert all(s["state"] != "connected" and s["framesDecoded"] == 0 for s in stats.values()), stats
        assert (await frames(client)).get(t_pid, 0) == 0
        state = await e2ee_state(therapist)
        assert state["failures"], state
        await therapist.screenshot(path="docs/screenshots/e2ee-mitm-therapist.png")
        await client.screenshot(path="docs/screenshots/e2ee-security-check-failed.png")
    finally:
        for ctx in contexts:
            await ctx.close()
        await proxy.stop()
