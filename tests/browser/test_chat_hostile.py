"""A hostile server against the browser's app messages (docs/security.md §10): a private message relayed to a third
member, a replay, a tampered ciphertext, a sender outside the signed roster and a client-to-client private message
are each refused, shown to the person, and never shown as a chat message.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_chat_hostile.py'
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from peer.e2ee import b64d, b64e
from peer.participant import Participant
from rtc.aiortc_hooks import allow_loopback_candidates
from tools.hostile import HostileProxy

from .conftest import Pages, join, wait_js
from .test_chat import keyed, line, send
from .test_e2ee_browser import admit
from .test_e2ee_hostile import hostile, secure_room  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.e2ee]

REFUSED = "A message in this session did not pass the security check and was not shown."


async def app_refusals(page: Any) -> int:
    return int(await page.evaluate("window.alcove.e2ee().refusals.filter((r) => r.what === 'app').length"))


def tampered(msg: dict[str, Any], **payload_changes: Any) -> dict[str, Any]:
    env = json.loads(msg["data"])
    payload = json.loads(env["p"])
    payload.update(payload_changes)
    env["p"] = json.dumps(payload)
    return {**msg, "data": json.dumps(env)}


async def test_every_forgery_is_refused_and_shown(alcove: Any, hostile: tuple[HostileProxy, Pages]) -> None:  # noqa: F811
    server, pages = hostile
    allow_loopback_candidates()
    _, therapist, (alex,), (link_a,) = await secure_room(alcove, server, pages, clients=1)
    await join(alex, link_a, "Alex")
    await admit(therapist, "Alex")
    await keyed(alex)
    await keyed(therapist)
    a_pid = await alex.evaluate("window.alcove.pid()")
    # a genuine private message to Alex, and one to everyone
    await send(therapist, "only for Alex", to="Alex only (private)")
    await send(therapist, "for everyone", to="Everyone in the session")
    await alex.get_by_role("button", name="Chat – 2 unread messages").click()
    await line(alex, "for everyone").wait_for()
    private = next(msg for to, msg in server.apps_seen if to == a_pid and json.loads(json.loads(msg["data"])["p"])["to"] == a_pid)
    everyone = next(msg for to, msg in server.apps_seen if to == a_pid and json.loads(json.loads(msg["data"])["p"])["to"] is None)
    shown = await alex.locator("#chat-log .chat-msg").count()
    # 1. a replay of the private message
    assert await server.inject(a_pid, private)
    await wait_js(alex, "window.alcove.e2ee().refusals.some((r) => r.what === 'app')")
    banner = alex.locator('#banners [data-refused="app"]')
    await banner.wait_for()
    assert await banner.get_by_text(REFUSED).count() == 1
    assert "replayed" in (await banner.get_attribute("data-detail") or "")
    # 2. a tampered ciphertext (a fresh sequence number, so it is not only a replay)
    payload = json.loads(json.loads(everyone["data"])["p"])
    ct = bytearray(b64d(payload["ct"]))
    ct[0] ^= 0x80
    assert await server.inject(a_pid, tampered(everyone, ct=b64e(bytes(ct)), seq=payload["seq"] + 50))
    await wait_js(alex, "window.alcove.e2ee().refusals.filter((r) => r.what === 'app').length >= 2")
    # 3. a sender outside the signed roster (the server stamps a ghost)
    assert await server.inject(a_pid, {**everyone, "from": "p_ghost"})
    await wait_js(alex, "window.alcove.e2ee().refusals.filter((r) => r.what === 'app').length >= 3")
    await alex.locator('#banners [data-refused="app"]').nth(1).wait_for()  # a banner of its own (another pid)
    # 4. a private message for someone else: the server hands Alex a copy addressed to another member
    assert await server.inject(a_pid, tampered(private, to="p_other", seq=10_000))
    await wait_js(alex, "window.alcove.e2ee().refusals.filter((r) => r.what === 'app').length >= 4")
    assert await app_refusals(alex) == 4
    assert await alex.locator("#chat-log .chat-msg").count() == shown  # nothing of it shown as a message


async def test_a_client_to_client_private_message_is_refused_by_the_server_and_the_receiver(
        alcove: Any, hostile: tuple[HostileProxy, Pages]) -> None:  # noqa: F811
    server, pages = hostile
    allow_loopback_candidates()
    _, therapist, (alex, _unused), (link_a, link_s) = await secure_room(alcove, server, pages, clients=2)
    await join(alex, link_a, "Alex")
    await admit(therapist, "Alex")
    sam = await Participant.join(server.url, link_s, name="Sam", media=False)
    try:
        await admit(therapist, "Sam")
        await keyed(alex)
        await sam.wait_until(lambda: sam.keys is not None and sam.keys.can_send_app()
                             and len(sam.keys.roster) == 3, 20, "Sam keyed with Alex in the roster")
        a_pid = await alex.evaluate("window.alcove.pid()")
        # a modified client seals a private message to Alex with its own pairwise key
        sam.keys._app_send_private = lambda _to: sam.pid
        assert sam.send_app({"k": "chat", "text": "psst, just us"}, to=a_pid)
        await sam.wait_until(lambda: any(e.code == "not-allowed" for e in sam.errors), 10, "the server refused it")
        assert not any(to == a_pid and msg.get("from") == sam.pid for to, msg in server.apps_seen)
        # a server that relays it anyway: Alex refuses it and says so
        data = sam.keys.make_app({"k": "chat", "text": "psst, just us"}, to=a_pid)
        assert await server.inject(a_pid, {"type": "app", "from": sam.pid, "data": data})
        await alex.locator('#banners [data-refused="app"]').wait_for()
        assert "another client" in (await alex.locator('#banners [data-refused="app"]').get_attribute("data-detail") or "")
        await alex.get_by_role("button", name="Chat").click()
        assert await line(alex, "psst").count() == 0
    finally:
        await sam.close()
