"""Two instances on Redis behind nginx: one room, its participants on different instances, one owner."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from peer.participant import Participant
from peer.signaling_client import JoinRefused, SignalingClient

from .conftest import ADMIN_KEY, ClusterHarness

pytestmark = [pytest.mark.integration, pytest.mark.redis]


async def admitted_pair(cluster: ClusterHarness, media: bool = False, **room: Any
                        ) -> tuple[dict[str, Any], Participant, Participant]:
    info = await cluster.create_room(**room)
    t = await Participant.join(cluster.url, info["therapist_link"], name="Dr. T", media=media)
    c = await Participant.join(cluster.url, info["client_links"][0], name="Alex", media=media)
    await t.wait_until(lambda: any(q.pid == c.pid for q in t.queue), 5, "queued")
    await t.admit(c.pid)
    await c.wait_until(lambda: c.status == "admitted", 5, "admitted")
    return info, t, c


async def test_participants_on_two_instances_share_one_room(cluster2: ClusterHarness) -> None:
    info, t, c = await admitted_pair(cluster2)
    try:
        census = await cluster2.census()
        # nginx spread the two sockets: one instance owns the room, the other relays a socket to it
        assert sorted(x["owned"] for x in census.values()) == [0, 1], census
        assert sorted(x["relayed"] for x in census.values()) == [0, 1], census
        assert sorted(x["remote"] for x in census.values()) == [0, 1], census
        await t.wait_until(lambda: c.pid in t.roster, 5, "the client in the therapist's roster")
        await c.wait_until(lambda: t.pid in c.roster, 5, "the therapist in the client's roster")
    finally:
        await c.close()
        await t.close()


async def test_a_ticket_is_single_use_across_instances(cluster2: ClusterHarness) -> None:
    info = await cluster2.create_room()
    link = info["client_links"][0]
    token = link.split("#t=", 1)[1]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{cluster2.instances[0].url}/api/session", json={"token": token}) as r:
            assert r.status == 200
            ticket = (await r.json())["ticket"]
        results = []
        for inst in cluster2.instances:  # the ticket, taken on instance a, redeemed on b then on a
            async with http.ws_connect(f"{inst.url.replace('http', 'ws', 1)}/ws",
                                       headers={"Origin": cluster2.url}) as ws:
                await ws.send_json({"type": "hello", "v": 1, "ticket": ticket, "name": "Alex"})
                first = await ws.receive_json(timeout=5)
                results.append(first["type"] if first["type"] != "error" else first["code"])
    assert results == ["welcome", "ticket-invalid"], results


async def test_a_second_device_on_another_instance_is_refused(cluster2: ClusterHarness) -> None:
    info = await cluster2.create_room()
    link = info["client_links"][0]
    first = await SignalingClient.open(cluster2.instances[0].url, link, name="Alex")
    try:
        with pytest.raises(JoinRefused) as refused:
            await SignalingClient.open(cluster2.instances[1].url, link, name="Alex")
        assert refused.value.code == "device-in-use"
    finally:
        await first.close()


async def test_a_revocation_on_one_instance_holds_on_the_other(cluster2: ClusterHarness) -> None:
    info = await cluster2.create_room()
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{cluster2.instances[0].url}/api/rooms/{info['room_id']}",
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
            assert r.status == 200
    with pytest.raises(JoinRefused) as refused:
        await SignalingClient.open(cluster2.instances[1].url, info["client_links"][0], name="Alex")
    assert refused.value.code == "room-ended"
