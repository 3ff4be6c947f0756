"""End-to-end encrypted app messages in Python (peer/e2ee.py, docs/security.md §10): sealing, roster, replay."""

from __future__ import annotations

import json
import os

import pytest

from peer.e2ee import (
    APP_MAX_BODY,
    AppMessage,
    ClientKeys,
    KeyState,
    SecurityCheckFailed,
    TherapistKeys,
    b64d,
    b64e,
    unwrap_any,
)

from .test_e2ee import ROOM, Clock, _admit, _epoch

pytestmark = pytest.mark.e2ee


def _room(n: int = 2, clock: Clock | None = None) -> tuple[TherapistKeys, dict[str, ClientKeys]]:
    ks = (lambda: KeyState(clock)) if clock is not None else KeyState
    t = TherapistKeys(ROOM, "p_t", s_link=os.urandom(32), first_epoch=1, keystate=ks())
    clients = {}
    for i in range(1, n + 1):
        c = _admit(t, f"p_c{i}")
        c.keystate = ks()
        clients[f"p_c{i}"] = c
    _epoch(t, clients)
    return t, clients


def _tamper(data: str, **changes: object) -> str:
    env = json.loads(data)
    payload = json.loads(env["p"])
    payload.update(changes)
    env["p"] = json.dumps(payload)
    return json.dumps(env)


def test_to_everyone_both_ways_and_the_sender_is_the_signed_one() -> None:
    t, cs = _room()
    c1, c2 = cs["p_c1"], cs["p_c2"]
    data = t.make_app({"k": "chat", "text": "Bună ziua"})
    assert data is not None and "Bună" not in data
    assert c1.open_app("p_t", data) == AppMessage("p_t", {"k": "chat", "text": "Bună ziua"}, False)
    assert c2.open_app("p_t", data).body["text"] == "Bună ziua"
    back = c1.make_app({"k": "chat", "text": "hello"})
    assert back is not None
    assert t.open_app("p_c1", back) == AppMessage("p_c1", {"k": "chat", "text": "hello"}, False)
    assert c2.open_app("p_c1", back).from_pid == "p_c1"


def test_no_key_yet_means_nothing_is_sent() -> None:
    t = TherapistKeys(ROOM, "p_t", s_link=os.urandom(32), first_epoch=1)
    assert t.make_app({"k": "chat", "text": "x"}) is None
    c = ClientKeys(ROOM, None, pid="p_c1")
    assert c.make_app({"k": "chat", "text": "x"}) is None


def test_a_private_message_is_unreadable_by_another_member_holding_the_epoch_secret() -> None:
    t, cs = _room()
    c1, c2 = cs["p_c1"], cs["p_c2"]
    data = t.make_app({"k": "chat", "text": "only for you"}, to="p_c1")
    assert data is not None
    assert c1.open_app("p_t", data) == AppMessage("p_t", {"k": "chat", "text": "only for you"}, True)
    with pytest.raises(SecurityCheckFailed, match="someone else"):
        c2.open_app("p_t", data)  # relayed to a third member
    # even when c2 pretends to be c1, the group key it holds does not open a private message
    c2.pid = "p_c1"
    with pytest.raises(SecurityCheckFailed, match="decrypt"):
        c2.open_app("p_t", data)
    reply = c1.make_app({"k": "chat", "text": "thanks"}, to="p_t")
    assert reply is not None and t.open_app("p_c1", reply).private


def test_client_to_client_private_is_refused_on_both_ends() -> None:
    _t, cs = _room()
    c1, c2 = cs["p_c1"], cs["p_c2"]
    with pytest.raises(ValueError):
        c1.make_app({"k": "chat", "text": "psst"}, to="p_c2")
    # a modified client seals one anyway with its own pairwise key: the receiver refuses it
    forged = _seal_as(c1, {"k": "chat", "text": "psst"}, to="p_c2")
    with pytest.raises(SecurityCheckFailed, match="another client"):
        c2.open_app("p_c1", forged)


def _seal_as(c: ClientKeys, body: dict[str, object], to: str) -> str:
    """What a modified client could send: its own pairwise key, addressed to another client."""
    c._app_send_private = lambda _to: c.pid  # type: ignore[method-assign]
    try:
        data = c.make_app(body, to=to)
    finally:
        del c._app_send_private  # type: ignore[attr-defined]
    assert data is not None
    return data


def test_replay_tamper_wrong_sender_and_outsider_are_refused() -> None:
    t, cs = _room()
    c1, c2 = cs["p_c1"], cs["p_c2"]
    data = t.make_app({"k": "chat", "text": "once"})
    assert data is not None
    c1.open_app("p_t", data)
    with pytest.raises(SecurityCheckFailed, match="replayed"):
        c1.open_app("p_t", data)
    with pytest.raises(SecurityCheckFailed, match="another sender"):
        c2.open_app("p_c1", data)  # the server stamps another sender
    env = json.loads(data)
    payload = json.loads(env["p"])
    ct = bytearray(b64d(payload["ct"]))
    ct[0] ^= 1
    with pytest.raises(SecurityCheckFailed, match="signature"):
        c2.open_app("p_t", _tamper(data, ct=b64e(bytes(ct))))
    # an outsider (not in the signed roster) signs its own
    ghost = ClientKeys(ROOM, None, pid="p_ghost")
    ghost_env = {"p": json.dumps({**payload, "from": "p_ghost", "seq": 99}), "sig": env["sig"]}
    with pytest.raises(SecurityCheckFailed, match="outside the signed roster"):
        c2.open_app("p_ghost", json.dumps(ghost_env))
    assert ghost.make_app({"k": "chat"}) is None


def test_a_member_cannot_forge_another_members_message() -> None:
    t, cs = _room()
    c1, c2 = cs["p_c1"], cs["p_c2"]
    data = c1.make_app({"k": "chat", "text": "mine"})
    assert data is not None
    # c2 re-signs c1's payload with its own key: the signature is checked with c1's signed key
    env = json.loads(data)
    forged = json.dumps({"p": env["p"], "sig": json.loads(c2.make_app({"k": "x"}) or "{}")["sig"]})
    with pytest.raises(SecurityCheckFailed, match="signature"):
        t.open_app("p_c1", forged)


def test_the_previous_epoch_is_accepted_during_its_window_then_refused() -> None:
    clock = Clock()
    t, cs = _room(clock=clock)
    c1 = cs["p_c1"]
    old = t.make_app({"k": "chat", "text": "old"})
    old2 = t.make_app({"k": "chat", "text": "old2"})
    _epoch(t, cs)
    assert old is not None and c1.open_app("p_t", old).body["text"] == "old"
    clock.t += 6  # past the decrypt-only window of the previous epoch
    with pytest.raises(SecurityCheckFailed, match="without a key"):
        c1.open_app("p_t", old2 or "")
    new = t.make_app({"k": "chat", "text": "new"})
    assert new is not None and c1.open_app("p_t", new).body["text"] == "new"


def test_a_removed_member_is_refused_and_a_sent_back_client_has_no_key() -> None:
    t, cs = _room()
    c1, c2 = cs["p_c1"], cs["p_c2"]
    t.forget("p_c2")
    late = c2.make_app({"k": "chat", "text": "still here"})
    assert late is not None
    with pytest.raises(SecurityCheckFailed, match="does not key"):
        t.open_app("p_c2", late)
    c2.reset()
    assert c2.make_app({"k": "chat", "text": "x"}) is None
    assert c1.make_app({"k": "chat"}) is not None


def test_bodies_are_objects_with_a_kind_and_at_most_4_kib() -> None:
    t, _ = _room(1)
    with pytest.raises(ValueError):
        t.make_app({"text": "no kind"})
    with pytest.raises(ValueError):
        t.make_app({"k": "chat", "text": "x" * APP_MAX_BODY})
    assert t.make_app({"k": "chat", "text": "x" * (APP_MAX_BODY - 30)}) is not None


def test_each_slot_wraps_the_epoch_secret_and_the_clients_own_pairwise_secret() -> None:
    t, cs = _room()
    res = t.make_epoch(list(cs))
    opened = [unwrap_any(res.message, ROOM, [k for _, k in c.hpke_keys]) for c in cs.values()]
    assert all(o is not None and len(o) == 64 for o in opened)
    a, b = opened
    assert a is not None and b is not None and a[:32] == b[:32] and a[32:] != b[32:]
