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
    _, t, c = await admitted_pair(cluster2)
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


PLANTED = "Zephyrine Quillfeather"


async def redis_dump(url: str) -> list[tuple[str, bytes, int]]:
    """Every key in Redis: (key, value, TTL in ms)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        found = []
        async for key in client.scan_iter(count=1000):
            kind = (await client.type(key)).decode()
            assert kind == "string", (key, kind)  # only opaque ids, numbers and sealed blobs
            found.append((key.decode(), await client.get(key) or b"", await client.pttl(key)))
        return found
    finally:
        await client.aclose()


async def test_nothing_personal_in_redis_and_every_key_expires(cluster2: ClusterHarness, media_namespace: None
                                                              ) -> None:
    info = await cluster2.create_room(host=PLANTED)
    t = await Participant.join(cluster2.url, info["therapist_link"], name="Dr. T", media=True)
    c = await Participant.join(cluster2.url, info["client_links"][0], name=PLANTED, media=True)
    async with aiohttp.ClientSession() as http, http.post(  # a ticket taken and never used: sealed in Redis
            f"{cluster2.url}/api/session", json={"token": info["therapist_link"].split("#t=")[1]}) as r:
        assert r.status == 200
    dumps = []
    try:
        await t.wait_until(lambda: any(q.pid == c.pid for q in t.queue), 5, "queued")
        await t.admit(c.pid)
        await c.wait_until(lambda: c.status == "admitted", 5, "admitted")
        await t.wait_until(lambda: t.mesh.frames_from(c.pid).get("video", 0) > 5, 20, "video from the client")
        dumps.append(await redis_dump(cluster2.redis.url))
        secrets_ = [info["therapist_link"].split("#t=")[1], *(x.split("#t=")[1] for x in info["client_links"]),
                    c.resume_credential or "", t.resume_credential or ""]
        await t.remove(c.pid, block=True)  # a revocation and a seat generation land in Redis
        await c.wait_until(lambda: not c.connected, 5, "removed")
        await t.leave()
    finally:
        await c.close()
        await t.close()
    dumps.append(await redis_dump(cluster2.redis.url))
    kinds = {key.split(":")[1] for dump in dumps for key, _, _ in dump}
    assert {"own", "inst", "rev", "gen", "tk", "seat", "adm"} <= kinds, kinds
    needles = [PLANTED, "Zephyrine", "Dr. T", "v=0", "candidate", "127.0.0.1", "a=fingerprint", *secrets_]
    for dump in dumps:
        for key, value, ttl in dump:
            assert ttl > 0, f"{key} has no expiry"
            for needle in needles:
                assert needle.encode() not in value and needle not in key, f"{key} holds something personal"
    for key, value, _ in dumps[0]:
        if key.startswith("alc:own:"):
            assert key == f"alc:own:{info['room_id']}" and value.startswith(b"i_")


async def test_three_instances_one_room_three_participants(cluster_factory: Any) -> None:
    cluster: ClusterHarness = await cluster_factory(3)
    info = await cluster.create_room(type="couple", topology="mesh")
    t = await Participant.join(cluster.url, info["therapist_link"], name="Dr. T", media=False)
    clients = [await Participant.join(cluster.url, link, name=f"C{i}", media=False)
               for i, link in enumerate(info["client_links"])]
    try:
        census = await cluster.census()
        # nginx (least connections) put one socket on each instance: one owns the room, two relay to it
        assert sorted(x["owned"] for x in census.values()) == [0, 0, 1], census
        assert sorted(x["relayed"] for x in census.values()) == [0, 1, 1], census
        for c in clients:
            await t.wait_until(lambda c=c: any(q.pid == c.pid for q in t.queue), 5, "queued")
            await t.admit(c.pid)
            await c.wait_until(lambda c=c: c.status == "admitted", 5, "admitted")
        everyone = {t.pid, *(c.pid for c in clients)}
        for p in (t, *clients):
            await p.wait_until(lambda p=p: set(p.roster) == everyone, 5, "the whole roster")
    finally:
        for p in (t, *clients):
            await p.close()


async def test_a_short_link_made_on_one_instance_works_on_the_other(cluster2: ClusterHarness) -> None:
    a, b = cluster2.instances
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{a.url}/api/rooms", json={"type": "couple"}, headers=auth) as r:
            assert r.status == 201
            info = await r.json()
        seat = info["client_links"][0].split("#t=")[1]
        assert len(seat) == 22  # a seat id, not a token
        async with http.post(f"{b.url}/api/session", json={"token": seat}) as r:
            assert r.status == 200 and (await r.json())["room"]["id"] == info["room_id"]
        for inst in (a, b):  # the admin's list, on either instance
            async with http.get(f"{inst.url}/api/rooms", headers=auth) as r:
                assert [x["room_id"] for x in (await r.json())["rooms"]] == [info["room_id"]]
    # one device per link, across instances
    first = await SignalingClient.open(a.url, info["client_links"][0], name="Alex")
    try:
        with pytest.raises(JoinRefused) as refused:
            await SignalingClient.open(b.url, info["client_links"][0], name="Alex")
        assert refused.value.code == "device-in-use"
    finally:
        await first.close()
    # revoked on b, refused on a, and the list says so on a
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{b.url}/api/rooms/{info['room_id']}/links/2", headers=auth) as r:
            assert r.status == 200
        async with http.post(f"{a.url}/api/session", json={"token": info["client_links"][1].split("#t=")[1]}) as r:
            assert r.status == 410 and (await r.json())["error"]["code"] == "token-revoked"
        async with http.get(f"{a.url}/api/rooms", headers=auth) as r:
            assert [x["revoked"] for x in (await r.json())["rooms"][0]["links"]] == [False, False, True]
