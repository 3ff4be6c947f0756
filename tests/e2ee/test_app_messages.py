"""End-to-end encrypted app messages between aiortc participants through the real server and a hostile one.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/e2ee/test_app_messages.py'
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.e2ee import b64d, b64e
from peer.participant import Participant
from tests.e2ee.test_aiortc_e2ee import admit, e2ee_links, switched
from tools.hostile import HostileProxy

pytestmark = [pytest.mark.e2ee, pytest.mark.integration]

PLANTED = "planted-7f3a-chat"


@pytest.fixture
async def trio() -> AsyncIterator[Any]:
    """``await trio(alcove)``: a recording hostile proxy, a therapist and two admitted clients joined through it."""
    proxies: list[HostileProxy] = []
    joined: list[Participant] = []

    async def start(alcove: Any) -> tuple[HostileProxy, Participant, Participant, Participant]:
        server = await HostileProxy(alcove.url, record=True).start()
        proxies.append(server)
        ik = ec.generate_private_key(ec.SECP256R1())
        room = await alcove.create_room(type="couple", clients=2)
        t_link, c_links = e2ee_links(room, ik)
        t = await Participant.join(server.url, t_link, name="Dr. T", therapist_ik=ik, media=False)
        joined.append(t)
        cs = []
        for i, link in enumerate(c_links):
            c = await Participant.join(server.url, link, name=f"C{i}", media=False)
            joined.append(c)
            cs.append(c)
        for c in cs:
            await admit(t, c)
        await switched(t, *cs)
        return server, t, cs[0], cs[1]

    yield start
    for p in joined:
        await p.close()
    for proxy in proxies:
        await proxy.stop()


async def test_both_kinds_both_ways_and_the_relay_never_carries_the_plaintext(alcove: Any, trio: Any) -> None:
    server, t, c1, c2 = await trio(alcove)
    assert t.send_app({"k": "chat", "text": f"to all {PLANTED}"})
    assert (await c1.wait_app(lambda a: a[1].get("text") == f"to all {PLANTED}")) == (
        t.pid, {"k": "chat", "text": f"to all {PLANTED}"}, False)
    await c2.wait_app(lambda a: a[1].get("text") == f"to all {PLANTED}")
    assert c1.send_app({"k": "chat", "text": f"from c1 {PLANTED}"})
    assert (await t.wait_app(lambda a: a[0] == c1.pid))[2] is False
    await c2.wait_app(lambda a: a[0] == c1.pid)
    assert t.send_app({"k": "chat", "text": f"private {PLANTED}"}, to=c1.pid)
    assert (await c1.wait_app(lambda a: a[2])) == (t.pid, {"k": "chat", "text": f"private {PLANTED}"}, True)
    assert c1.send_app({"k": "chat", "text": f"reply {PLANTED}"}, to=t.pid)
    assert (await t.wait_app(lambda a: a[2]))[0] == c1.pid
    await t.wait_until(lambda: len(server.apps_seen) >= 6, 5, "relayed")
    assert not any(a[2] for a in c2.app_messages), "c2 saw a private message"
    assert server.recorded and not any(PLANTED in frame for frame in server.recorded)
    assert [r for p in (t, c1, c2) for r in p.refusals] == []


async def test_a_hostile_server_is_refused_every_time(alcove: Any, trio: Any) -> None:
    server, t, c1, c2 = await trio(alcove)
    assert t.send_app({"k": "chat", "text": "private"}, to=c1.pid)
    await c1.wait_app(lambda a: a[2])
    private = next(msg for to, msg in server.apps_seen if to == c1.pid)
    # a private message relayed to a third member
    assert await server.inject(c2.pid, private)
    await c2.wait_until(lambda: len(c2.e2ee_glue.refused("app")) == 1, 5, "refused private for c1")
    # a replay
    assert await server.inject(c1.pid, private)
    await c1.wait_until(lambda: len(c1.e2ee_glue.refused("app")) == 1, 5, "refused replay")
    assert "replayed" in str(c1.e2ee_glue.refused("app")[0]["detail"])
    # a tampered ciphertext
    assert t.send_app({"k": "chat", "text": "all"})
    await c2.wait_app(lambda a: a[1].get("text") == "all")
    everyone = next(msg for to, msg in reversed(server.apps_seen) if to == c2.pid)
    env = json.loads(everyone["data"])
    payload = json.loads(env["p"])
    ct = bytearray(b64d(payload["ct"]))
    ct[-1] ^= 1
    payload["ct"], payload["seq"] = b64e(bytes(ct)), payload["seq"] + 100
    env["p"] = json.dumps(payload)
    assert await server.inject(c2.pid, {**everyone, "data": json.dumps(env)})
    await c2.wait_until(lambda: len(c2.e2ee_glue.refused("app")) == 2, 5, "refused tampered")
    # a pid outside the signed roster (the server forges the sender)
    assert await server.inject(c2.pid, {**everyone, "from": "p_ghost"})
    await c2.wait_until(lambda: len(c2.e2ee_glue.refused("app")) == 3, 5, "refused ghost")
    # a client-to-client private message: the server refuses it, and so would the receiver
    with pytest.raises(ValueError):
        c1.send_app({"k": "chat", "text": "psst"}, to=c2.pid)
    c1.keys._app_send_private = lambda _to: c1.pid  # a modified client seals one anyway
    assert c1.send_app({"k": "chat", "text": "psst"}, to=c2.pid)
    await c1.wait_until(lambda: any(e.code == "not-allowed" for e in c1.errors), 5, "server refused")
    forged = {"type": "app", "from": c1.pid, "data": c1.keys.make_app({"k": "chat", "text": "psst"}, to=c2.pid)}
    assert await server.inject(c2.pid, forged)
    await c2.wait_until(lambda: len(c2.e2ee_glue.refused("app")) == 4, 5, "refused client-to-client")
    details = [str(r["detail"]) for r in c2.e2ee_glue.refused("app")]
    assert ["someone else" in details[0], "decrypt" in details[1] or "signature" in details[1],
            "another sender" in details[2], "another client" in details[3]] == [True] * 4, details
    assert not any(body.get("text") == "psst" or a_private for _, body, a_private in c2.app_messages)
