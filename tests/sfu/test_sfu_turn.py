"""The SFU gets TURN credentials of its own (an SFU host behind NAT), refreshed before they expire."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from server.config import Config, Secret
from tests.conftest import AlcoveServer, FakeClock

pytestmark = [pytest.mark.sfu, pytest.mark.turn]


async def test_sfu_workers_receive_fresh_turn_credentials(tmp_path: Path) -> None:
    config = Config(turn_urls=("turn:127.0.0.1:3478?transport=udp",), turn_secret=Secret("s3cret"),
                    media_workers=1, media_loopback=True)
    alcove = AlcoveServer(tmp_path / "data", FakeClock(), config)
    await alcove.start()
    try:
        room = await alcove.create_room("family")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{alcove.url}/api/session",
                                 json={"token": room["therapist_link"].split("#t=")[1]}) as r:
                ticket = (await r.json())["ticket"]
            ws = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
            await ws.send_json({"type": "hello", "v": 1, "ticket": ticket})
            async with asyncio.timeout(30):
                while alcove.hub.media is None:  # the SFU starts with the first admitted member  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            first = alcove.hub.media.config.ice_servers
            assert first and first[0]["urls"] == ["turn:127.0.0.1:3478?transport=udp"]
            await alcove.advance(3 * 3600 + 51 * 60)  # ten minutes before the 4-hour credentials expire
            second = alcove.hub.media.config.ice_servers
            assert second[0]["username"] != first[0]["username"]
            assert int(second[0]["username"].split(":")[0]) > int(first[0]["username"].split(":")[0])
            await ws.close()
    finally:
        await alcove.stop()
