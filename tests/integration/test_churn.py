"""Waiting-room churn (issue 10, item 1): clients looping ticket → hello (large intro, resume) → close as fast as
they can must not knock the therapist off. The queue reaches the therapist coalesced (latest state, a few per
second), the ticket throttle bounds connections per link, and media between the admitted people keeps flowing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from peer.participant import Participant
from server.coalesce import RATE
from server.config import Config
from server.throttle import Limits, Rate
from signaling import messages as m

from ..conftest import AlcoveServer, serving
from .test_server_http import token_of

pytestmark = [pytest.mark.media, pytest.mark.integration, pytest.mark.usefixtures("media_namespace")]

CHURN_SECONDS = 3.0
UNLIMITED = Rate(1e9, 1e9)


async def churn(alcove: AlcoveServer, link: str, until: float) -> tuple[int, int]:
    """(sockets that joined and closed, requests refused with 429) for one link until ``until``."""
    joined = refused = 0
    resume = None
    token = token_of(link)
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < until:
            async with http.post(f"{alcove.url}/api/session", json={"token": token}) as r:
                if r.status == 429:
                    refused += 1
                    await asyncio.sleep(0.01)
                    continue
                ticket = (await r.json())["ticket"]
            ws = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
            await ws.send_json({"type": "hello", "v": 1, "ticket": ticket, "name": "Churner", "resume": resume,
                                "intro": "i" * 8192})
            msg = await ws.receive(timeout=5)
            if msg.type == aiohttp.WSMsgType.TEXT and msg.json()["type"] == "welcome":
                resume = msg.json()["resume"]
                joined += 1
            await ws.close()
    return joined, refused


async def _session_under_churn(alcove: AlcoveServer, churners: int) -> tuple[Participant, Participant, int, int]:
    room = await alcove.create_room(type="group", topology="mesh", clients=churners + 1)
    t = await Participant.join(alcove.url, room["therapist_link"], name="Dr. T")
    c = await Participant.join(alcove.url, room["client_links"][0], name="Alex")
    try:
        await t.wait_until(lambda: any(q.pid == c.pid for q in t.queue), 5, "queued")
        await t.admit(c.pid)
        await c.wait_frames(t.pid, video=11, audio=10)
        await t.wait_frames(c.pid, video=11, audio=10)
        before = (t.frames_from(c.pid)["video"], c.frames_from(t.pid)["video"])
        mark = t.mark()
        until = time.monotonic() + CHURN_SECONDS
        results = await asyncio.gather(*(churn(alcove, link, until) for link in room["client_links"][1:]))
        queues = [msg for msg in t.log[mark:] if isinstance(msg, m.Queue)]
        # media kept flowing during the churn, both ways
        during = (t.frames_from(c.pid)["video"], c.frames_from(t.pid)["video"])
        assert during[0] > before[0] + 20 and during[1] > before[1] + 20, (before, during)
        assert t.connected and c.connected, "an admitted participant was disconnected"
        assert not [x for x in t.log if isinstance(x, m.Error)], "the therapist got an error"
        await c.wait_frames(t.pid, video=during[1] + 10)
        await t.wait_frames(c.pid, video=during[0] + 10)
        return t, c, sum(j for j, _ in results), len(queues)
    finally:
        await t.close()
        await c.close()


async def test_churn_without_throttles_reaches_the_therapist_coalesced(tmp_path: Path) -> None:
    """Throttles off: only the coalescing stands between the churn and the therapist."""
    config = Config(limits=Limits(tickets=UNLIMITED, connections=UNLIMITED))
    async with serving(tmp_path / "data", config) as alcove:
        _, _, joined, queues = await _session_under_churn(alcove, churners=4)
        print(f"churn: {joined} joins in {CHURN_SECONDS} s, {queues} queue updates reached the therapist")
        assert joined > 50, f"the churn was too slow to prove anything ({joined} joins)"
        # at most RATE queue updates a second reach the therapist (plus the first of each burst)
        assert queues <= RATE * (CHURN_SECONDS + 1) + 2, (queues, joined)


async def test_churn_with_default_throttles_is_refused_per_link(tmp_path: Path) -> None:
    async with serving(tmp_path / "data") as alcove:
        room = await alcove.create_room(type="couple")
        joined, refused = await churn(alcove, room["client_links"][1], time.monotonic() + 1.0)
        assert joined <= 10 and refused > 0
