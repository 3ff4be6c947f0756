"""Coming back without a new admission: a reload of the tab, and a short network cut."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import decodes_from_all, join, wait_for, wait_js

pytestmark = pytest.mark.browser


async def _in_session(alcove: Any, pages: Any) -> tuple[Any, Any, dict[str, Any]]:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    therapist = await pages.new()
    client = await pages.new()
    await join(therapist, room["therapist_link"])
    await join(client, room["client_links"][0], "Alex")
    await therapist.get_by_role("button", name="Admit Alex", exact=True).click()
    await decodes_from_all(client, 1)
    await decodes_from_all(therapist, 1)
    for page in (client, therapist):  # end-to-end encryption is on by default
        await wait_js(page, "window.alcove.e2ee() && window.alcove.e2ee().epoch !== null")
    return therapist, client, room


async def test_reload_returns_to_the_room_without_admission(alcove: Any, pages: Any) -> None:
    therapist, client, _ = await _in_session(alcove, pages)
    await client.reload()
    # Straight back into the session: no join step, no waiting room, nothing for the therapist to click.
    await client.get_by_role("button", name="Mute", exact=True).wait_for()
    assert await client.get_by_role("heading", name="Waiting for your therapist").count() == 0
    await decodes_from_all(client, 1)
    await decodes_from_all(therapist, 1)
    assert await therapist.get_by_role("button", name="Admit Alex", exact=True).count() == 0
    assert (await client.evaluate("window.alcove.e2ee().failures")) == []


def drop_client_socket(alcove: Any) -> None:
    """Cuts the client's signaling socket like a dead network would (a TCP reset, no close handshake).

    Chromium's offline emulation blocks new requests but leaves an open websocket alone, so the cut itself is
    made on the server's side of the connection."""
    hub = alcove.hub
    for room in hub.rooms.rooms.values():
        for member in room.members.values():
            if member.role == "client" and member.conn is not None:
                hub.connections[member.conn].ws._req.transport.abort()
                return
    raise AssertionError("no connected client")


async def test_network_cut_of_five_seconds_returns_to_the_room(alcove: Any, pages: Any) -> None:
    therapist, client, _ = await _in_session(alcove, pages)
    sockets: list[Any] = []
    client.on("websocket", lambda ws: sockets.append(ws))
    await client.context.set_offline(True)
    drop_client_socket(alcove)
    await client.locator("#banners").get_by_text("Connection lost. Reconnecting…").wait_for()
    await asyncio.sleep(5)
    await client.context.set_offline(False)

    async def signaling_back() -> bool:
        return bool(await client.evaluate("window.alcove.connected()"))

    await wait_for(signaling_back, timeout=20, what="the signaling socket to come back")
    assert sockets, "the page never opened a new signaling socket"
    await client.locator("#banners").get_by_text("You are connected again.").wait_for()
    assert await client.evaluate("window.alcove.status()") == "admitted"
    await decodes_from_all(client, 1, timeout=30)
    await decodes_from_all(therapist, 1, timeout=30)
    assert await therapist.get_by_role("button", name="Admit Alex", exact=True).count() == 0
