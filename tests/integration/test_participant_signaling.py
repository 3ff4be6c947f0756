"""The signaling contract through the Python peer's client (no media): decline, cap, early/late links, the
hard end, extensions and warnings, therapist drop and return, second device, malformed input."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from peer.participant import Participant
from peer.signaling_client import JoinRefused, SignalingClient, token_of
from signaling import messages as m

pytestmark = [pytest.mark.integration]


async def post_session(alcove: Any, link: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{alcove.url}/api/session", json={"token": token_of(link)}) as r:
        return r.status, await r.json()


async def joined(join: Any, link: str, name: str | None = None) -> Participant:
    p: Participant = await join(link, name=name, media=False)
    return p


async def admitted_pair(alcove: Any, join: Any, type: str = "individual", clients: int = 1
                        ) -> tuple[dict[str, Any], Participant, list[Participant]]:
    room = await alcove.create_room(type=type, clients=clients)
    t = await joined(join, room["therapist_link"], "Dr. T")
    cs = []
    for i, link in enumerate(room["client_links"]):
        c = await joined(join, link, f"C{i}")
        await t.wait_until(lambda c=c: any(q.pid == c.pid for q in t.queue), 5, "queued")
        await t.admit(c.pid)
        await c.wait_until(lambda c=c: c.status == "admitted", 5, "admitted")
        cs.append(c)
    return room, t, cs


async def test_decline_with_block_kills_the_token(alcove: Any, join: Any) -> None:
    room = await alcove.create_room(type="individual")
    t = await joined(join, room["therapist_link"], "Dr. T")
    c = await joined(join, room["client_links"][0], "Alex")
    await t.wait_until(lambda: len(t.queue) == 1, 5)
    await t.decline("Alex", "Please use the link for Thursday.", block=True)
    msg = await c.expect("declined")
    assert msg.message == "Please use the link for Thursday."
    assert c.sc is not None and await c.sc.wait_closed() == 4010
    await t.wait_until(lambda: t.queue == [], 5, "queue emptied")
    status, body = await post_session(alcove, room["client_links"][0])
    assert (status, body["error"]["code"]) == (410, "token-revoked")
    with pytest.raises(JoinRefused) as err:
        await joined(join, room["client_links"][0], "Alex")
    assert err.value.code == "token-revoked"


async def test_remove_with_block_revokes_the_token(alcove: Any, join: Any) -> None:
    room, t, (c,) = await admitted_pair(alcove, join)
    mark = t.mark()
    await t.remove(c.pid, block=True)
    await c.expect("removed")
    assert c.sc is not None and await c.sc.wait_closed() == 4011 and c.status == "removed"
    roster = await t.expect("roster", after=mark)
    assert [p.pid for p in roster.participants] == [t.pid]
    status, body = await post_session(alcove, room["client_links"][0])
    assert (status, body["error"]["code"]) == (410, "token-revoked")


async def test_couple_room_refuses_a_third_admission(alcove: Any, join: Any) -> None:
    room, t, cs = await admitted_pair(alcove, join, "couple", clients=2)
    # a third client link for the same room (minted with the server's own keys: the API gives one per seat)
    hub = alcove.hub
    spec = hub.tokens.verify_room_token(await hub.links.resolve(token_of(room["client_links"][0])), alcove.clock()).spec
    third = hub.tokens.issue_room_token(spec, "client", alcove.clock()).token
    c3 = await joined(join, f"{alcove.url}/j/#t={third}", "Third")
    assert c3.status == "waiting"
    await t.wait_until(lambda: len(t.queue) == 1, 5)
    mark = t.mark()
    await t.admit(c3.pid)
    err = await t.expect("error", after=mark)
    assert (err.code, err.ref) == ("room-full", "admit")
    await asyncio.sleep(0.1)
    assert c3.status == "waiting" and c3.connected
    assert sorted(t.roster) == sorted([t.pid] + [c.pid for c in cs])


async def test_early_link_and_late_link(alcove: Any) -> None:
    start = datetime.fromtimestamp(alcove.clock() + 2 * 3600, UTC).isoformat()
    early = await alcove.create_room(type="individual", start=start)
    status, body = await post_session(alcove, early["client_links"][0])
    assert status == 425 and body["error"]["code"] == "room-not-open"
    assert body["error"]["opens_at"] == early["opens_at"]
    with pytest.raises(JoinRefused) as err:
        await SignalingClient.open(alcove.url, early["client_links"][0], name="Alex")
    assert (err.value.code, err.value.status, err.value.opens_at) == ("room-not-open", 425, early["opens_at"])

    late = await alcove.create_room(type="individual", duration_minutes=50)
    await alcove.advance(50 * 60 + 1)
    status, body = await post_session(alcove, late["client_links"][0])
    assert (status, body["error"]["code"]) == (410, "room-ended")


async def test_hard_end_closes_everyone(alcove: Any, join: Any) -> None:
    room = await alcove.create_room(type="couple", clients=2, duration_minutes=50)
    t = await joined(join, room["therapist_link"], "Dr. T")
    a = await joined(join, room["client_links"][0], "A")
    b = await joined(join, room["client_links"][1], "B")
    await t.wait_until(lambda: len(t.queue) == 2, 5)
    await t.admit("A")  # B stays in the waiting room
    await a.wait_until(lambda: a.status == "admitted", 5)
    await alcove.advance(50 * 60 + 1)
    for p in (t, a, b):
        ended = await p.expect("session-ended")
        assert ended.reason == "time"
        assert p.sc is not None and await p.sc.wait_closed() == 1000
        assert p.status == "ended"
    for link in [room["therapist_link"], *room["client_links"]]:
        status, body = await post_session(alcove, link)
        assert (status, body["error"]["code"]) == (410, "room-ended")


async def test_extend_and_warnings(alcove: Any, join: Any) -> None:
    _, t, (c,) = await admitted_pair(alcove, join)
    await alcove.advance(40.5 * 60)
    assert (await c.expect("warning")).minutes == 10
    mark = c.mark()
    await alcove.advance(4.5 * 60)
    w5 = await c.expect("warning", after=mark)
    assert w5.minutes == 5
    ends = w5.ends_at

    mark, tmark = c.mark(), t.mark()
    await t.extend(5)
    time5 = await c.expect("time", after=mark)
    assert (time5.extended_minutes, time5.overrun_left_minutes) == (5, 10)
    assert (await t.expect("time", after=tmark)).ends_at == time5.ends_at
    assert _ts(time5.ends_at) - _ts(ends) == 300
    # the end moved 5 minutes out: the 5-minute warning comes again, once
    mark = c.mark()
    await alcove.advance(4 * 60)
    await asyncio.sleep(0.1)
    assert not [x for x in c.log[mark:] if isinstance(x, m.Warning)]
    await alcove.advance(60)
    again = await c.expect("warning", after=mark)
    assert again.minutes == 5 and again.ends_at == time5.ends_at

    mark = c.mark()
    await t.extend(10)
    time15 = await c.expect("time", after=mark)
    assert (time15.extended_minutes, time15.overrun_left_minutes) == (15, 0)
    tmark = t.mark()
    await t.extend(5)
    err = await t.expect("error", after=tmark)
    assert (err.code, err.ref) == ("extend-limit", "extend")
    assert t.ends_at == time15.ends_at


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def test_therapist_drop_return_and_grace(alcove: Any, join: Any) -> None:
    _, t, (a, b) = await admitted_pair(alcove, join, "couple", clients=2)
    tpid = t.pid
    marks = [a.mark(), b.mark()]
    await t.drop_signaling()
    for p, mark in zip((a, b), marks, strict=True):
        msg = await p.expect("therapist", after=mark)
        assert msg.status == "reconnecting"
        # (the roster is not re-sent when the therapist drops, unlike for a client: see the report)
        assert p.status == "admitted" and tpid in p.roster
    # the therapist returns with its resume credential: host again, no admission
    welcome = await t.reconnect()
    assert (welcome.pid, welcome.role, welcome.status, welcome.therapist) == (tpid, "therapist", "admitted", "present")
    for p in (a, b):
        await p.wait_until(lambda p=p: p.therapist == "present" and p.roster[tpid].connected, 5, "present")
    await t.wait_until(lambda: set(t.roster) == {tpid, a.pid, b.pid}, 5)

    # it drops again and does not come back within the grace: clients go back to the waiting room
    await t.drop_signaling()
    await a.wait_until(lambda: a.therapist == "reconnecting", 5)
    marks = [a.mark(), b.mark()]
    await alcove.advance(121)
    for p, mark in zip((a, b), marks, strict=True):
        msg = await p.expect("waiting", after=mark)
        assert msg.reason == "therapist-away"
        await p.wait_until(lambda p=p: p.status == "waiting" and p.therapist == "absent", 5)
        assert p.roster == {}


async def test_second_device_refused_and_first_kept(alcove: Any, join: Any) -> None:
    room = await alcove.create_room(type="individual")
    t = await joined(join, room["therapist_link"], "Dr. T")
    first = await joined(join, room["client_links"][0], "Alex")
    with pytest.raises(JoinRefused) as err:
        await SignalingClient.open(alcove.url, room["client_links"][0], name="Alex on phone")
    assert (err.value.code, err.value.close_code) == ("device-in-use", 4007)
    with pytest.raises(JoinRefused) as err:
        await SignalingClient.open(alcove.url, room["therapist_link"], name="Dr. T again")
    assert err.value.code == "device-in-use"
    # the queue is state, coalesced to a few updates per second: wait for the latest
    await t.wait_until(lambda: [(q.pid, q.name, q.connected) for q in t.queue] == [(first.pid, "Alex", True)], 5)
    assert first.connected and t.connected
    await t.admit(first.pid)
    await first.wait_until(lambda: first.status == "admitted", 5)


async def test_bad_messages_are_refused_and_change_nothing(alcove: Any, join: Any) -> None:
    room = await alcove.create_room(type="couple", clients=2)
    t = await joined(join, room["therapist_link"], "Dr. T")
    c = await SignalingClient.open(alcove.url, room["client_links"][0], name="Alex")
    try:
        await t.wait_until(lambda: len(t.queue) == 1, 5)
        cases: list[tuple[Any, str, str | None]] = [
            ("this is not json", "bad-json", None),
            ("[1, 2]", "bad-json", None),
            ('{"type": "teleport"}', "unknown-type", None),
            ('{"type": "admit"}', "invalid-message", "admit"),
            ('{"type": "extend", "minutes": 7}', "invalid-message", "extend"),
            ('{"type": "leave", "extra": 1}', "invalid-message", "leave"),
            (m.Admit(pid=c.pid), "not-allowed", "admit"),
            (m.End(), "not-allowed", "end"),
            (m.Offer(to=t.pid, sdp="v=0\r\n"), "not-allowed", "offer"),
            (m.Key(to=None, data="x"), "not-allowed", "key"),
            (m.Hello(v=1, ticket="x", name="again"), "not-allowed", "hello"),
        ]
        tmark = t.mark()
        for raw, code, ref in cases:
            await c.send(raw)
            err = await c.next("error", timeout=3)
            assert (err.code, err.ref) == (code, ref), raw
        # the therapist's out-of-scope messages: unknown peers
        await t.admit("p_nobody")
        assert (await t.expect("error", after=tmark)).code == "unknown-peer"
        await asyncio.sleep(0.1)
        assert not c.closed
        assert [x for x in c.drain() if not isinstance(x, m.Waiting)] == []
        assert [q.pid for q in t.queue] == [c.pid] and t.status == "admitted" and t.ends_at == room["ends_at"]
        # oversized: the socket is closed with 1009, nothing else changes
        big = await SignalingClient.open(alcove.url, room["client_links"][1], name="Big")
        await t.wait_until(lambda: len(t.queue) == 2, 5)
        await big.send('{"type": "leave", "x": "' + "a" * (70 * 1024) + '"}')
        assert await big.wait_closed() == 1009
        await big.close()
        await t.wait_until(lambda: {q.pid: q.connected for q in t.queue} == {c.pid: True, big.pid: False}, 5,
                           "big shown disconnected")
        assert t.ends_at == room["ends_at"] and not c.closed
    finally:
        await c.close()
