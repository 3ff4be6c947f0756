"""Links that fit in a text message: an opaque seat id in the fragment, resolved at the ticket exchange, and the
admin's list of upcoming sessions (docs/admin-api.md, docs/security.md §3)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.e2ee import b64e, make_link_fragment
from peer.participant import Participant
from peer.signaling_client import JoinRefused, SignalingClient
from server.config import Config
from tools.admin_client import with_key_code

from ..conftest import AlcoveServer, serving

pytestmark = pytest.mark.integration

HOST = "video.cabinet-terapie-cluj.org"  # a 30-character host name
PLANTED = "Zephyrine Quillfeather"


def admin(server: AlcoveServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_key}"}


async def exchange(server: AlcoveServer, link: str) -> tuple[int, dict[str, Any]]:
    token = link.split("#t=", 1)[1].split("&")[0]
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/api/session", json={"token": token}) as r:
        return r.status, await r.json()


async def listed(server: AlcoveServer) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/api/rooms", headers=admin(server)) as r:
        assert r.status == 200
        rooms: list[dict[str, Any]] = (await r.json())["rooms"]
        return rooms


async def test_links_fit_in_a_text_message_for_a_30_character_host(tmp_path: Path) -> None:
    assert len(HOST) == 30
    async with serving(tmp_path / "data", Config(public_url=f"https://{HOST}")) as server:
        room = await server.create_room(type="family", clients=6, host=PLANTED)
        plain = [room["therapist_link"], *room["client_links"]]
        assert all(link.startswith(f"https://{HOST}/j/#t=") for link in plain)
        assert max(len(link) for link in plain) <= 100, [len(x) for x in plain]
        # the anchor: the room's link secret (16 bytes) and the therapist's key code (16 bytes)
        key_code = b64e(secrets.token_bytes(16))
        anchored = [with_key_code(link, key_code).replace("&tk=", f"&s={b64e(secrets.token_bytes(16))}&tk=")
                    for link in room["client_links"]]
        assert max(len(link) for link in anchored) <= 160, [len(x) for x in anchored]
        # the console's invite links are short too
        async with aiohttp.ClientSession() as http, http.post(
                f"{server.url}/api/invites", json={"token": plain[0].split("#t=")[1]}) as r:
            invites = (await r.json())["client_links"]
        assert len(invites) == 6 and max(len(link) for link in invites) <= 100
        assert max(len(x.split("#")[0] + make_link_fragment(x.split("#t=")[1], secrets.token_bytes(16),
                                                            secrets.token_bytes(16))) for x in invites) <= 160
        # the fragment is an opaque handle: no name, no claim
        assert all(PLANTED not in link for link in plain)


async def test_a_short_link_joins_and_the_old_long_link_still_works(alcove: AlcoveServer) -> None:
    room = await alcove.create_room(type="couple", host="Dr. T")
    seat = room["client_links"][1].split("#t=")[1]
    assert len(seat) == 22
    status, body = await exchange(alcove, room["client_links"][0])
    assert status == 200 and body["role"] == "client" and body["room"]["id"] == room["room_id"]
    long_token = await alcove.hub.links.resolve(seat)
    assert long_token.count(".") == 2 and len(long_token) > 300
    t = await Participant.join(alcove.url, room["therapist_link"], name="Dr. T")
    c = await Participant.join(alcove.url, f"{alcove.url}/j/#t={long_token}", name="Alex")  # an old, long link
    try:
        await t.wait_until(lambda: any(q.pid == c.pid for q in t.queue), 5, "queued")
        # the short and the long link are the same seat: one device
        with pytest.raises(JoinRefused) as refused:
            await SignalingClient.open(alcove.url, room["client_links"][1], name="Alex")
        assert refused.value.code == "device-in-use"
    finally:
        await c.close()
        await t.close()


async def test_a_short_link_is_single_device(alcove: AlcoveServer) -> None:
    room = await alcove.create_room(type="individual")
    first = await SignalingClient.open(alcove.url, room["client_links"][0], name="Alex")
    try:
        with pytest.raises(JoinRefused) as refused:
            await SignalingClient.open(alcove.url, room["client_links"][0], name="Alex")
        assert refused.value.code == "device-in-use"
    finally:
        await first.close()


async def test_unknown_seat_ids_are_refused_clearly(alcove: AlcoveServer) -> None:
    status, body = await exchange(alcove, "x/j/#t=" + secrets.token_urlsafe(16))
    assert (status, body["error"]["code"]) == (400, "token-invalid")


async def test_the_admin_lists_upcoming_sessions_and_revokes_a_link(alcove: AlcoveServer) -> None:
    in_an_hour = datetime.fromtimestamp(alcove.clock.now + 3600, UTC).isoformat(timespec="seconds")
    first = await alcove.create_room(type="couple", duration_minutes=75, start=in_an_hour)
    soon = await alcove.create_room(type="individual", host=PLANTED)
    rooms = await listed(alcove)
    assert [r["room_id"] for r in rooms] == [soon["room_id"], first["room_id"]]  # soonest first
    entry = next(r for r in rooms if r["room_id"] == first["room_id"])
    assert entry["type"] == "couple" and entry["seats"] == 2 and entry["starts_at"] == first["starts_at"]
    assert [x["role"] for x in entry["links"]] == ["therapist", "client", "client"]
    assert entry["client_links"] == first["client_links"] and not any(x["revoked"] for x in entry["links"])
    assert PLANTED not in str(rooms)
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{alcove.url}/api/rooms/{first['room_id']}/links/1") as r:
            assert r.status == 401  # the admin only
        for bad in ("9", "x", "-1", "1000"):
            async with http.delete(f"{alcove.url}/api/rooms/{first['room_id']}/links/{bad}", headers=admin(alcove)) as r:
                assert r.status == 404, bad
        async with http.delete(f"{alcove.url}/api/rooms/{first['room_id']}/links/1", headers=admin(alcove)) as r:
            assert r.status == 200 and (await r.json())["revoked"] is True
        async with http.get(f"{alcove.url}/api/rooms") as r:
            assert r.status == 401
    status, body = await exchange(alcove, first["client_links"][0])
    assert (status, body["error"]["code"]) == (410, "token-revoked")
    status, body = await exchange(alcove, first["client_links"][1])  # the other seat is untouched (not open yet)
    assert (status, body["error"]["code"]) == (425, "room-not-open")
    entry = next(r for r in await listed(alcove) if r["room_id"] == first["room_id"])
    assert [x["revoked"] for x in entry["links"]] == [False, True, False]
    # the revocation and the list survive a restart, and so do the short links
    await alcove.restart()
    status, body = await exchange(alcove, first["client_links"][0])
    assert (status, body["error"]["code"]) == (410, "token-revoked")
    assert (await exchange(alcove, first["therapist_link"]))[0] == 425
    assert (await exchange(alcove, soon["therapist_link"]))[0] == 200
    assert {r["room_id"] for r in await listed(alcove)} == {soon["room_id"], first["room_id"]}
    # an ended room leaves the list; a room that is over is forgotten, its seat ids with it
    await alcove.delete_room(soon["room_id"])
    assert [r["room_id"] for r in await listed(alcove)] == [first["room_id"]]
    await alcove.advance(3600 + 75 * 60 + 1)
    assert await listed(alcove) == []
    await alcove.advance(3600)
    status, body = await exchange(alcove, first["client_links"][1])
    assert (status, body["error"]["code"]) == (400, "token-invalid")
    stored = (alcove.data_dir / "links.json").read_text()
    assert first["client_links"][1].split("#t=")[1] not in stored


async def test_the_data_directory_keeps_no_name_and_no_link(alcove: AlcoveServer) -> None:
    room = await alcove.create_room(type="individual", host=PLANTED)
    stored = (alcove.data_dir / "links.json").read_text()
    for needle in (PLANTED, "Zephyrine", *(x.split("#t=")[1] for x in (room["therapist_link"], *room["client_links"]))):
        assert needle not in stored


async def test_an_extended_session_stays_on_the_admins_list_until_it_really_ends(alcove: AlcoveServer) -> None:
    room = await alcove.create_room(type="individual", duration_minutes=10)
    therapist = await Participant.join(alcove.url, room["therapist_link"], name="Dr. T", media=False)
    try:
        mark = therapist.mark()
        await therapist.extend(10)
        await therapist.expect("time", after=mark)
        await alcove.advance(10 * 60 + 30)  # past the planned end, inside the extension
        assert [r["room_id"] for r in await listed(alcove)] == [room["room_id"]]
        await alcove.advance(10 * 60)
        assert await listed(alcove) == []
    finally:
        await therapist.close()
