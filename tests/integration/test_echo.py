"""The pre-join test's HTTP edge (``/api/echo/ice``, ``/api/echo/offer``): a link's token alone, throttled per
link, short-lived TURN credentials, clear typed errors, calls that end by themselves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.config import Config, Secret
from server.echo import TURN_LIFETIME_S
from server.turn import verify_credentials

from ..conftest import AlcoveServer, serving
from .test_server_http import join, next_of

pytestmark = pytest.mark.integration

TURN_SECRET = "echo-test-secret"


def token_of(link: str) -> str:
    return link.split("#t=", 1)[1]


async def post(url: str, body: Any) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as r:
        return r.status, await r.json(content_type=None), r.headers


async def test_echo_needs_a_live_link(alcove: AlcoveServer) -> None:
    room = await alcove.create_room()
    token = token_of(room["client_links"][0])
    status, data, _ = await post(f"{alcove.url}/api/echo/ice", {"token": token})
    assert status == 200 and data["ice_servers"] == [] and data["limit_s"] == 10
    for body, code in (({"token": "nope"}, "token-invalid"), ({}, "invalid-message"),
                       ({"token": token, "extra": 1}, "invalid-message"),
                       ({"token": token, "sdp": "v=0 but not an offer"}, "invalid-message"),
                       ({"token": token, "sdp": ""}, "invalid-message")):
        path = "/api/echo/offer" if "sdp" in body else "/api/echo/ice"
        status, data, _ = await post(f"{alcove.url}{path}", body)
        assert (status, data["error"]["code"]) == (400, code), (body, data)
    assert len(alcove.hub.echo) == 0
    await alcove.delete_room(room["room_id"])
    status, data, _ = await post(f"{alcove.url}/api/echo/ice", {"token": token})
    assert (status, data["error"]["code"]) == (410, "room-ended")


async def test_echo_is_refused_once_admitted(alcove: AlcoveServer) -> None:
    room = await alcove.create_room()
    link = room["client_links"][0]
    async with aiohttp.ClientSession() as http:
        therapist = await join(alcove, http, room["therapist_link"], None)
        client = await join(alcove, http, link, "Alex")
        welcome = await next_of(client, "welcome")
        assert (await post(f"{alcove.url}/api/echo/ice", {"token": token_of(link)}))[0] == 200  # waiting: fine
        await therapist.send_json({"type": "admit", "pid": welcome["pid"]})
        await next_of(client, "admitted")
        status, data, _ = await post(f"{alcove.url}/api/echo/ice", {"token": token_of(link)})
        assert (status, data["error"]["code"]) == (409, "not-allowed")
        await therapist.close()
        await client.close()


async def test_echo_is_throttled_per_link(alcove: AlcoveServer) -> None:
    room = await alcove.create_room(type="couple", clients=2)
    first, second = (token_of(link) for link in room["client_links"])
    statuses = [(await post(f"{alcove.url}/api/echo/ice", {"token": first}))[0] for _ in range(7)]
    assert statuses == [200] * 6 + [429]
    status, data, headers = await post(f"{alcove.url}/api/echo/ice", {"token": first})
    assert status == 429 and data["error"]["code"] == "rate-limited" and int(headers["Retry-After"]) >= 1
    assert (await post(f"{alcove.url}/api/echo/ice", {"token": second}))[0] == 200


async def test_echo_turn_credentials_live_only_for_the_test(tmp_path: Path) -> None:
    config = Config(turn_urls=("turn:127.0.0.1:3478?transport=udp",), turn_secret=Secret(TURN_SECRET))
    async with serving(tmp_path / "data", config) as server:
        room = await server.create_room(duration_minutes=50)
        status, data, _ = await post(f"{server.url}/api/echo/ice", {"token": token_of(room["client_links"][0])})
        assert status == 200 and data["expires_in"] == TURN_LIFETIME_S
        [entry] = data["ice_servers"]
        now = server.clock()
        expiry = int(entry["username"].split(":", 1)[0])
        assert now < expiry <= now + TURN_LIFETIME_S  # not the session's end plus a margin
        assert verify_credentials(TURN_SECRET, username=entry["username"], credential=entry["credential"], now=now)
        assert not verify_credentials(TURN_SECRET, username=entry["username"], credential=entry["credential"],
                                      now=now + TURN_LIFETIME_S)


@pytest.mark.media
@pytest.mark.usefixtures("media_namespace")
async def test_echo_call_ends_by_itself(alcove: AlcoveServer) -> None:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from peer.media import SyntheticAudioTrack
    from rtc.ice import aiortc_configuration

    alcove.hub.echo.limit_s = 1.0
    room = await alcove.create_room()
    token = token_of(room["client_links"][0])
    pc = RTCPeerConnection(aiortc_configuration([], relay_only=False))
    pc.addTrack(SyntheticAudioTrack())
    try:
        await pc.setLocalDescription(await pc.createOffer())
        status, data, _ = await post(f"{alcove.url}/api/echo/offer", {"token": token, "sdp": pc.localDescription.sdp})
        assert status == 200, data
        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="answer"))
        assert len(alcove.hub.echo) == 1
        deadline = time.monotonic() + 5
        while len(alcove.hub.echo) and time.monotonic() < deadline:  # noqa: ASYNC110 - the server's own timer
            await asyncio.sleep(0.05)
        assert len(alcove.hub.echo) == 0
    finally:
        await pc.close()
