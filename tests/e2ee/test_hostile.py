"""A hostile server (tools/hostile.py) against aiortc participants: keys follow the therapist's grants, never the
server's roster, and a withheld switch discloses nothing after the epoch's expiry.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/e2ee/test_hostile.py'
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.e2ee import ClientKeys, KeyState, TherapistKeys, message_kind
from peer.participant import Participant
from tests.e2ee.test_aiortc_e2ee import SAMPLE_VP8, admit, e2ee_links, switched
from tools.hostile import HostileProxy

pytestmark = [pytest.mark.e2ee, pytest.mark.media, pytest.mark.integration,
              pytest.mark.usefixtures("media_namespace")]


@pytest.fixture
async def hostile() -> AsyncIterator[Any]:
    """``await hostile(alcove, clients=…)``: a hostile proxy in front of the server, a therapist and clients
    joined through it (``lifetime_ms``: the therapist's epoch lifetime; ``colluding``: client indices whose keys
    never expire, like a removed member that keeps every key it had)."""
    proxies: list[HostileProxy] = []
    joined: list[Participant] = []

    async def start(alcove: Any, *, clients: int = 2, lifetime_ms: int | None = None,
                    colluding: tuple[int, ...] = ()) -> tuple[HostileProxy, Participant, list[Participant]]:
        server = await HostileProxy(alcove.url).start()
        proxies.append(server)
        ik = ec.generate_private_key(ec.SECP256R1())
        room = await alcove.create_room(type="individual" if clients == 1 else "couple", clients=clients)
        t_link, c_links = e2ee_links(room, ik)
        extra = {"epoch_lifetime_ms": lifetime_ms} if lifetime_ms else {}
        t = await Participant.join(server.url, t_link, name="Dr. T", therapist_ik=ik, **extra)
        joined.append(t)
        cs = []
        for i, link in enumerate(c_links):
            opts: dict[str, Any] = {}
            if i in colluding:
                opts["keystate_factory"] = lambda: KeyState(wall=lambda: 0.0)  # its clock never reaches an expiry
            c = await Participant.join(server.url, link, name=f"C{i}", **opts)
            joined.append(c)
            cs.append(c)
        return server, t, cs

    yield start
    for p in joined:
        await p.close()
    for proxy in proxies:
        await proxy.stop()


def epochs_of(server: HostileProxy) -> list[str]:
    return [data for _, data in server.keys_seen if message_kind(data) == "epoch"]


def wrapped_to(data: str) -> set[str]:
    return set(json.loads(json.loads(data)["p"])["wrapped"])


async def test_a_forged_roster_gets_no_key(alcove: Any, hostile: Any) -> None:
    server, t, (a, b) = await hostile(alcove)
    await admit(t, a)
    await switched(t, a)
    keys = t.keys
    assert isinstance(keys, TherapistKeys) and t.state.room is not None
    # The server queues a ghost with a valid intro, then puts it in the roster: the therapist never admitted it.
    ghost = ClientKeys(t.state.room.id, pid="p_ghost")
    server.extra_queue.append({"pid": "p_ghost", "name": "Ghost", "since": "2026-01-01T00:00:00Z",
                               "connected": True, "intro": ghost.make_intro()})
    await server.resend(t.pid)
    await t.wait_until(lambda: "p_ghost" in t.intros, 5, "the ghost's intro verified")
    server.extra_queue.clear()
    server.extra_roster.append({"pid": "p_ghost", "role": "client", "name": "Ghost", "connected": True})
    await server.resend(t.pid)
    await t.wait_until(lambda: any(r["what"] == "unkeyed" and r["pid"] == "p_ghost" for r in t.refusals), 5,
                       "the ghost refused a key")
    # A real admission makes a new epoch while the ghost sits in the forged roster: it is not in it.
    await admit(t, b)
    await switched(t, a, b)
    assert keys.current is not None and "p_ghost" not in keys.current.roster
    ghost.ik_t = keys.ik_raw  # even knowing the therapist's key, it has nothing to unwrap
    assert epochs_of(server)
    for data in epochs_of(server):
        assert "p_ghost" not in wrapped_to(data)
        assert ghost.accept_epoch(data) is None  # not listed, never keyed: nothing to install
    assert ghost.keystate.epochs() == []
    await a.wait_frames(b.pid, video=5, timeout=15)  # the real members go on


async def test_a_pid_takeover_is_refused_and_shown_to_both_sides(alcove: Any, hostile: Any) -> None:
    server, t, (a, b) = await hostile(alcove)
    await admit(t, a)
    await admit(t, b)
    first = await switched(t, a, b)
    keys = t.keys
    assert isinstance(keys, TherapistKeys) and t.state.room is not None and a.pid is not None
    # Drop a's pid from the therapist's roster, queue it again with a new intro, put it back.
    server.hidden.add(a.pid)
    await server.resend(t.pid)
    await t.wait_until(lambda: a.pid not in keys.members, 5, "a forgotten")
    attacker = ClientKeys(t.state.room.id, pid=a.pid)
    server.extra_queue.append({"pid": a.pid, "name": "C0", "since": "2026-01-01T00:00:00Z", "connected": True,
                               "intro": attacker.make_intro()})
    await server.resend(t.pid)
    await t.wait_until(lambda: a.pid in t.new_people, 5, "shown as a new person")
    server.extra_queue.clear()
    server.hidden.clear()
    await server.resend(t.pid)
    # The attacker replays a's grant (a valid credential for that pid) and sends its own reveal.
    attacker.check_grant(server.grants[a.pid], a.pid)
    assert await server.inject(t.pid, {"type": "key", "from": a.pid, "data": attacker.make_reveal()})
    await t.wait_until(lambda: any(r["what"] == "reveal" and r["pid"] == a.pid for r in t.refusals), 5,
                       "the attacker's reveal refused")
    assert any(r["what"] == "new-person" and r["pid"] == a.pid for r in t.refusals)
    # The therapist keyed only b from then on: a sees (and records) that it was left out; the attacker too.
    await t.wait_until(lambda: keys.current is not None and keys.current.epoch > first, 5, "rekeyed")
    assert keys.current is not None and a.pid not in keys.current.roster
    await a.wait_until(lambda: any(r["what"] == "epoch" for r in a.refusals), 5, "a's refusal recorded")
    assert "not a member" in next(r["detail"] or "" for r in a.refusals if r["what"] == "epoch")
    for data in epochs_of(server):
        if json.loads(json.loads(data)["p"])["epoch"] > first:
            assert attacker.accept_epoch(data) is None  # not listed, never keyed: nothing to install
    assert attacker.keystate.epochs() == []


async def test_a_withheld_switch_leaves_the_removed_member_nothing_after_the_expiry(alcove: Any,
                                                                                    hostile: Any) -> None:
    server, t, (a, b) = await hostile(alcove, lifetime_ms=8000, colluding=(1,))
    await admit(t, a)
    await admit(t, b)
    first = await switched(t, a, b)
    keys = t.keys
    assert isinstance(keys, TherapistKeys) and keys.current is not None and a.pid is not None
    assert a.keystate is not None and b.keystate is not None
    # The server keeps a on the epoch b holds: every later epoch and switch to a is withheld; b is removed.
    server.withhold(a.pid, "epoch", "switch")
    await t.remove(b.pid)
    await t.wait_until(lambda: keys.current is not None and keys.current.epoch > first, 5, "rekeyed without b")
    assert isinstance(a.keys, ClientKeys)
    expires_at = a.keys.expires_at
    # Until the expiry, a still sends under the old epoch (and a colluding b could read it) ...
    frame = a.keystate.encrypt("video", SAMPLE_VP8)
    if time.time() * 1000 < expires_at - 200:
        assert frame is not None and b.keystate.decrypt_from("video", frame, a.pid) == SAMPLE_VP8
    # ... and from the expiry on it sends nothing, and shows "reconnecting encryption".
    await a.wait_until(lambda: a.encryption_state == "reconnecting", 12, "reconnecting encryption")
    assert time.time() * 1000 >= expires_at
    assert a.keystate.encrypt("video", SAMPLE_VP8) is None
    expired_before = a.keystate.counters["expired"]
    await a.wait_until(lambda: a.keystate is not None and a.keystate.counters["expired"] > expired_before + 10, 5,
                       "its media sender drops frames")
    # (on a loaded machine the therapist's own epoch may lapse between rekeys: it then sends nothing either)
    await t.wait_until(lambda: t.encryption_state == "ok", 10, "the therapist sending under a live epoch")
    after = t.keystate.encrypt("video", SAMPLE_VP8) if t.keystate is not None else None
    assert after is not None and b.keystate.decrypt_from("video", after, t.pid) is None
    assert server.withheld and all(pid == a.pid for pid, _ in server.withheld)
    # The server stops withholding: the therapist's periodic rekey brings a back.
    server.release(a.pid)
    await a.wait_until(lambda: a.encryption_state == "ok", 10, "encryption back")
