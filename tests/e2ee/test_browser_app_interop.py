"""App messages between Chromium and the Python aiortc participant, in both roles (docs/security.md §10): the same
sealing, signing and keys on both sides, to everyone and privately, through the real server.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/e2ee/test_browser_app_interop.py'
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.participant import Participant
from tests.browser.conftest import browser, join, pages, wait_js  # noqa: F401
from tests.browser.test_chat import keyed, line, send
from tests.browser.test_e2ee_browser import admit, invite_link, with_secret
from tests.e2ee.test_aiortc_e2ee import e2ee_links
from tests.e2ee.test_browser_interop import bots  # noqa: F401

pytestmark = [pytest.mark.e2ee, pytest.mark.browser, pytest.mark.media, pytest.mark.usefixtures("media_namespace")]

TEXT = "Bună ziua \u2014 \U0001f600"


async def test_aiortc_therapist_and_browser_client_exchange_both_kinds(alcove: Any, pages: Any,  # noqa: F811
                                                                      bots: list[Participant]) -> None:  # noqa: F811
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
    await keyed(client)
    await t.wait_until(lambda: t.keys is not None and t.keys.can_send_app(), 10, "therapist keyed")
    assert t.send_app({"k": "chat", "text": f"all {TEXT}"})
    assert t.send_app({"k": "chat", "text": f"private {TEXT}"}, to=pid)
    assert t.send_app({"k": "unknown-kind", "x": 1})  # receivers ignore kinds they do not know
    await client.get_by_role("button", name="Chat – 2 unread messages").click()
    await line(client, f"all {TEXT}").wait_for()
    private = client.locator("#chat-log .chat-msg", has_text=f"private {TEXT}")
    await private.wait_for()
    assert await private.get_attribute("data-private") == "1"
    assert await client.locator("#chat-log .chat-msg").count() == 2
    await send(client, f"to all {TEXT}")
    await send(client, f"to you {TEXT}", to="Your therapist only (private)")
    assert (await t.wait_app(lambda a: a[1].get("text") == f"to all {TEXT}")) == (
        pid, {"k": "chat", "text": f"to all {TEXT}"}, False)
    assert (await t.wait_app(lambda a: a[1].get("text") == f"to you {TEXT}"))[2] is True
    assert t.refusals == [] and await client.evaluate("window.alcove.e2ee().refusals") == []


async def test_browser_therapist_and_aiortc_client_exchange_both_kinds(alcove: Any, pages: Any,  # noqa: F811
                                                                      bots: list[Participant]) -> None:  # noqa: F811
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    therapist = await pages.new()
    await join(therapist, with_secret(room["therapist_link"]))
    link = await invite_link(therapist, room["client_links"][0])
    c = await Participant.join(alcove.url, link, name="Bot")
    bots.append(c)
    await admit(therapist, "Bot")
    await keyed(therapist)
    await c.wait_until(lambda: c.keys is not None and c.keys.can_send_app(), 15, "client keyed")
    await send(therapist, f"hello {TEXT}")
    await send(therapist, f"just you {TEXT}", to="Bot only (private)")
    t_pid = await therapist.evaluate("window.alcove.pid()")
    assert (await c.wait_app(lambda a: a[1].get("text") == f"hello {TEXT}"))[:1] == (t_pid,)
    assert (await c.wait_app(lambda a: a[1].get("text") == f"just you {TEXT}"))[2] is True
    assert c.send_app({"k": "chat", "text": f"reply {TEXT}"}, to=t_pid)
    assert c.send_app({"k": "chat", "text": f"everyone {TEXT}"})
    msg = therapist.locator("#chat-log .chat-msg", has_text=f"reply {TEXT}")
    await msg.wait_for()
    assert await msg.get_attribute("data-private") == "1"
    assert await msg.locator(".chat-who").inner_text() == "Bot"
    await line(therapist, f"everyone {TEXT}").wait_for()
    assert c.refusals == [] and await therapist.evaluate("window.alcove.e2ee().refusals") == []
