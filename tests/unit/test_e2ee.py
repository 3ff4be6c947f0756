"""The E2EE key protocol in Python (peer/e2ee.py): admission, SAS, epochs, switch, signed SDP."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from peer.e2ee import (
    EMOJI,
    EPOCH_LIFETIME_MS,
    ClientKeys,
    KeyState,
    NewPerson,
    SecurityCheckFailed,
    TherapistKeys,
    b64d,
    b64e,
    k_auth,
    make_link_fragment,
    parse_link_fragment,
    sas,
    sdp_fingerprints,
    sign_sdp,
    tk_of,
)

pytestmark = pytest.mark.e2ee

ROOM = "r_test-room"
FP1 = "sha-256 " + ":".join(["AB"] * 32)
FP2 = "sha-256 " + ":".join(["CD"] * 32)
SDP = f"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:{FP1}\r\n"
VP8_KEY = bytes.fromhex("5004009d012a8002e001") + os.urandom(200)
VP8_DELTA = bytes.fromhex("b10100") + os.urandom(80)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _admit(t: TherapistKeys, pid: str, *, s_link: bytes | None = None, tk: bytes | None = None) -> ClientKeys:
    link = parse_link_fragment(make_link_fragment("tok", s_link if s_link is not None else t.s_link, tk))
    c = ClientKeys(ROOM, link)
    info = t.check_intro(pid, c.make_intro())
    assert info.mac_ok is (None if t.s_link is None else True)
    c.check_grant(t.make_grant(pid), pid)
    sas_t = t.check_reveal(pid, c.make_reveal())
    assert c.sas() == sas_t
    return c


def _epoch(t: TherapistKeys, clients: dict[str, ClientKeys]) -> int:
    res = t.make_epoch(list(clients))
    done = False
    for pid, c in clients.items():
        ack = c.handle_key(res.message)
        assert isinstance(ack, str)
        done = t.handle_key(pid, ack) is True
    assert done and t.switch_due()
    sw = t.make_switch()
    for c in clients.values():
        assert c.handle_key(sw) is True
    return res.epoch


def _therapist(**kw: Any) -> TherapistKeys:
    return TherapistKeys(ROOM, "p_therapist", s_link=kw.pop("s_link", os.urandom(32)), first_epoch=1, **kw)


def test_link_fragment_and_k_auth() -> None:
    s, tk = os.urandom(32), os.urandom(16)
    link = parse_link_fragment(make_link_fragment("abc.def", s, tk))
    assert (link.token, link.s_link, link.tk) == ("abc.def", s, tk)
    assert parse_link_fragment("#t=xyz") == parse_link_fragment("t=xyz")
    assert parse_link_fragment("#t=xyz").s_link is None
    with pytest.raises(ValueError):
        parse_link_fragment("#s=" + b64e(s))
    with pytest.raises(ValueError):
        parse_link_fragment("#t=x&s=" + b64e(s[:20]))
    short = parse_link_fragment(make_link_fragment("Ab3_" * 5 + "xy", s[:16], tk))  # a short link: 16-byte secret
    assert short.s_link == s[:16] and len(k_auth(short.s_link, ROOM)) == 32
    with pytest.raises(ValueError):
        parse_link_fragment("#t=x&tk=not*b64")
    assert len(k_auth(s, ROOM)) == 32 and k_auth(s, ROOM) != k_auth(s, ROOM + "x")
    assert b64d(b64e(b"\x00\xff\xfe")) == b"\x00\xff\xfe" and "=" not in b64e(b"ab")


def test_full_flow_and_media() -> None:
    t = _therapist()
    a = _admit(t, "p_a", s_link=t.s_link, tk=t.tk)
    b = _admit(t, "p_b", s_link=t.s_link, tk=t.tk)
    assert a.sas() != b.sas()
    sa = a.sas()
    assert len(sa.emoji) == 7 and all(e in EMOJI for e in sa.emoji)
    assert all(1000 <= d <= 9191 for d in sa.decimal)
    epoch = _epoch(t, {"p_a": a, "p_b": b})
    assert a.roster["p_b"][1] == t.current.roster["p_b"] if t.current else False
    assert a.therapist_pid == "p_therapist"
    # Therapist -> client and client -> client media with the right sender index.
    for kind, frame in (("video", VP8_KEY), ("video", VP8_DELTA), ("audio", b"\xfc" + os.urandom(40))):
        prot = t.keystate.encrypt(kind, frame)  # type: ignore[arg-type]
        assert (
            prot is not None
            and prot != frame
            and prot[: 10 if frame is VP8_KEY else 1] == frame[: 10 if frame is VP8_KEY else 1]
        )
        assert a.keystate.decrypt(kind, prot, 0) == frame  # type: ignore[arg-type]
        assert b.keystate.decrypt_from(kind, prot, "p_therapist") == frame  # type: ignore[arg-type]
        # A frame claiming to be from another sender is dropped.
        assert b.keystate.decrypt(kind, prot, a.roster["p_a"][1]) is None  # type: ignore[arg-type]
    pa = a.keystate.encrypt("video", VP8_DELTA)
    assert pa is not None
    assert b.keystate.decrypt_from("video", pa, "p_a") == VP8_DELTA
    assert t.keystate.decrypt_from("video", pa, "p_a") == VP8_DELTA
    assert a.keystate.send_epoch == epoch == b.keystate.send_epoch == t.keystate.send_epoch


def test_no_key_no_send_and_tamper_dropped() -> None:
    ks = KeyState()
    assert ks.encrypt("video", VP8_KEY) is None
    assert ks.counters["dropped"] == 1
    assert ks.encrypt("audio", b"") == b""
    t = _therapist()
    a = _admit(t, "p_a")
    _epoch(t, {"p_a": a})
    prot = bytearray(t.keystate.encrypt("video", VP8_KEY) or b"")
    prot[20] ^= 1
    assert a.keystate.decrypt("video", bytes(prot), 0) is None
    assert a.keystate.counters["failed"] == 1


def test_removed_member_cannot_unwrap_next_epoch() -> None:
    clock = Clock()
    t = _therapist(keystate=KeyState(clock))
    a = _admit(t, "p_a")
    b = _admit(t, "p_b")
    first = _epoch(t, {"p_a": a, "p_b": b})
    t.forget("p_b")
    res = t.make_epoch(["p_a"])
    assert "p_b" not in json.loads(json.loads(res.message)["p"])["wrapped"]
    with pytest.raises(SecurityCheckFailed):
        b.accept_epoch(res.message)
    ack = a.accept_epoch(res.message)
    assert ack is not None and t.check_ack("p_a", ack)
    sw = t.make_switch()
    assert a.accept_switch(sw)
    assert not b.accept_switch(sw)  # b has no such epoch
    frame = t.keystate.encrypt("video", VP8_DELTA)
    assert frame is not None
    assert a.keystate.decrypt("video", frame, 0) == VP8_DELTA
    assert b.keystate.decrypt("video", frame, 0) is None
    # The old epoch is still decryptable for 5 s on the therapist, then dropped.
    old = b.keystate.encrypt("audio", b"\xfcold")
    assert old is not None
    assert first in t.keystate.epochs()
    assert t.keystate.decrypt_from("audio", old, "p_b") == b"\xfcold"  # grace period of the old epoch
    clock.t += 6
    assert first not in t.keystate.epochs()
    old2 = b.keystate.encrypt("audio", b"\xfcold2")
    assert old2 is not None
    assert t.keystate.decrypt("audio", old2, 2) is None
    assert t.keystate.decrypt_from("audio", old2, "p_b") is None


def test_late_joiner_cannot_decrypt_previous_epoch() -> None:
    t = _therapist()
    a = _admit(t, "p_a")
    _epoch(t, {"p_a": a})
    before = t.keystate.encrypt("video", VP8_KEY)
    assert before is not None and a.keystate.decrypt("video", before, 0) == VP8_KEY
    late = _admit(t, "p_late")
    _epoch(t, {"p_a": a, "p_late": late})
    assert late.keystate.decrypt("video", before, 0) is None
    after = t.keystate.encrypt("video", VP8_KEY)
    assert after is not None and late.keystate.decrypt("video", after, 0) == VP8_KEY


def test_replayed_old_epoch_ignored() -> None:
    t = _therapist()
    a = _admit(t, "p_a")
    first = t.make_epoch(["p_a"])
    assert a.accept_epoch(first.message) is not None
    second = t.make_epoch(["p_a"])
    assert a.accept_epoch(second.message) is not None
    assert a.accept_epoch(first.message) is None  # replay: ignored
    assert a.accept_epoch(second.message) is None
    assert a.newest_epoch == second.epoch
    t.make_switch()
    assert a.keystate.switch(second.epoch)
    # A replayed switch to an older epoch does nothing.
    assert not a.keystate.switch(first.epoch)


def _tamper(env_str: str, **changes: Any) -> str:
    env = json.loads(env_str)
    p = json.loads(env["p"])
    p.update(changes)
    env["p"] = json.dumps(p)
    return json.dumps(env)


def test_forged_or_tampered_grant_refused() -> None:
    t = _therapist()
    c = ClientKeys(ROOM, parse_link_fragment(make_link_fragment("x", t.s_link, t.tk)))
    t.check_intro("p_a", c.make_intro())
    grant = t.make_grant("p_a")
    with pytest.raises(SecurityCheckFailed):
        c.check_grant(_tamper(grant, n_t=b64e(os.urandom(16))), "p_a")
    with pytest.raises(SecurityCheckFailed):
        c.check_grant(grant, "p_other")
    with pytest.raises(SecurityCheckFailed):
        c.check_grant(_tamper(grant, room="other"), "p_a")
    with pytest.raises(SecurityCheckFailed):
        c.check_grant("not json", "p_a")
    # A grant by another key (re-signed by a middleman) fails the tk check.
    mitm = TherapistKeys(ROOM, "p_therapist")
    mitm.check_intro("p_a", c.make_intro())
    with pytest.raises(SecurityCheckFailed, match="security check failed"):
        c.check_grant(mitm.make_grant("p_a"), "p_a")
    c.check_grant(grant, "p_a")


def test_tk_mismatch_refused_without_tk_accepted() -> None:
    t = _therapist()
    c = ClientKeys(ROOM, parse_link_fragment(make_link_fragment("x", t.s_link, os.urandom(16))))
    t.check_intro("p_a", c.make_intro())
    with pytest.raises(SecurityCheckFailed):
        c.check_grant(t.make_grant("p_a"), "p_a")
    c2 = ClientKeys(ROOM, parse_link_fragment("#t=admin-made"))
    t.check_intro("p_b", c2.make_intro())
    c2.check_grant(t.make_grant("p_b"), "p_b")
    assert tk_of(t.ik_raw) == t.tk


def test_intro_mac_and_signature() -> None:
    t = _therapist()
    good = ClientKeys(ROOM, parse_link_fragment(make_link_fragment("x", t.s_link)))
    assert t.check_intro("p_a", good.make_intro()).mac_ok is True
    wrong = ClientKeys(ROOM, parse_link_fragment(make_link_fragment("x", os.urandom(32))))
    assert t.check_intro("p_b", wrong.make_intro()).mac_ok is False
    nolink = ClientKeys(ROOM)
    assert t.check_intro("p_c", nolink.make_intro()).mac_ok is False
    with pytest.raises(SecurityCheckFailed):
        t.check_intro("p_d", _tamper(good.make_intro(), ts=1))
    # Once granted, the same pid cannot change its key (v2: before the grant it may, a reload in the queue).
    t.make_grant("p_a")
    with pytest.raises(SecurityCheckFailed):
        t.check_intro("p_a", nolink.make_intro())


def test_reveal_checks_commit() -> None:
    t = _therapist()
    c = ClientKeys(ROOM)
    t.check_intro("p_a", c.make_intro())
    c.check_grant(t.make_grant("p_a"), "p_a")
    c.n_c = os.urandom(16)  # reveals a nonce other than the committed one
    with pytest.raises(SecurityCheckFailed, match="commitment"):
        t.check_reveal("p_a", c.make_reveal())
    other = ClientKeys(ROOM, pid="p_a")
    other.n_t = b"x" * 16
    with pytest.raises(SecurityCheckFailed):
        t.check_reveal("p_a", other.make_reveal())


def test_forged_epoch_and_switch_refused() -> None:
    t = _therapist()
    a = _admit(t, "p_a")
    res = t.make_epoch(["p_a"])
    with pytest.raises(SecurityCheckFailed):
        a.accept_epoch(_tamper(res.message, epoch=res.epoch + 5))
    # Signed by another therapist key (server-made): refused.
    mitm = TherapistKeys(ROOM, "p_therapist", first_epoch=50)
    mitm.check_intro("p_a", a.make_intro())
    mitm.make_grant("p_a")  # v2: epochs go only to granted, revealed clients
    mitm.check_reveal("p_a", a.make_reveal())
    with pytest.raises(SecurityCheckFailed):
        a.accept_epoch(mitm.make_epoch(["p_a"]).message)
    with pytest.raises(SecurityCheckFailed):
        a.accept_switch(_tamper(mitm.make_switch(), room=ROOM))
    assert a.newest_epoch == -1
    ack = a.accept_epoch(res.message)
    assert ack is not None
    with pytest.raises(SecurityCheckFailed):
        t.check_ack("p_a", _tamper(ack, epoch=res.epoch + 1))
    assert t.check_ack("p_a", ack)


def test_mitm_substituting_keys_gives_different_sas() -> None:
    """A server without the link secret substitutes its own intro (to T) and its own grant (to C)."""
    t = TherapistKeys(ROOM, "p_therapist")  # admin-made link: no s, no tk
    c = ClientKeys(ROOM, parse_link_fragment("#t=tok"), pid="p_c")
    c_intro = c.make_intro()
    # The middleman poses as the client to the therapist and as the therapist to the client.
    m_client = ClientKeys(ROOM, pid="p_c")
    m_therapist = TherapistKeys(ROOM, "p_therapist")
    t.check_intro("p_c", m_client.make_intro())  # therapist sees the middleman's intro (mac_ok None: no link)
    m_therapist.check_intro("p_c", c_intro)
    m_client.check_grant(t.make_grant("p_c"), "p_c")
    c.check_grant(m_therapist.make_grant("p_c"), "p_c")
    sas_c_side = m_therapist.check_reveal("p_c", c.make_reveal())
    sas_t_side = t.check_reveal("p_c", m_client.make_reveal())
    assert c.sas() == sas_c_side and m_client.sas() == sas_t_side
    assert c.sas() != sas_t_side  # what the client sees differs from what the therapist sees
    assert c.sas().decimal != sas_t_side.decimal
    # Substituting only one side also changes the codes.
    t2 = TherapistKeys(ROOM, "p_therapist")
    c2 = ClientKeys(ROOM, pid="p_c")
    m2 = TherapistKeys(ROOM, "p_therapist")
    t2.check_intro("p_c", c2.make_intro())
    m2.check_intro("p_c", c2.make_intro())
    c2.check_grant(m2.make_grant("p_c"), "p_c")
    assert c2.sas() == m2.check_reveal("p_c", c2.make_reveal())
    t2.make_grant("p_c")
    assert t2.check_reveal("p_c", c2.make_reveal()) != c2.sas()


def test_sas_derivation() -> None:
    a = sas(b"\x04" * 65, b"\x05" * 65, b"\x01" * 16, b"\x02" * 16, ROOM)
    assert a == sas(b"\x04" * 65, b"\x05" * 65, b"\x01" * 16, b"\x02" * 16, ROOM)
    assert a != sas(b"\x04" * 65, b"\x05" * 65, b"\x01" * 16, b"\x03" * 16, ROOM)
    assert a != sas(b"\x04" * 65, b"\x05" * 65, b"\x01" * 16, b"\x02" * 16, ROOM + "2")
    assert len(EMOJI) == 64 and len({e for e, _ in EMOJI}) == 64


def _session() -> tuple[TherapistKeys, ClientKeys, ClientKeys]:
    t = _therapist()
    a = _admit(t, "p_a", s_link=t.s_link, tk=t.tk)
    b = _admit(t, "p_b", s_link=t.s_link, tk=t.tk)
    _epoch(t, {"p_a": a, "p_b": b})
    return t, a, b


def test_signed_sdp_roundtrip() -> None:
    t, a, b = _session()
    assert sdp_fingerprints(SDP) == [FP1]
    a.verify_sdp("p_therapist", "offer", SDP, t.sign_sdp("p_a", "offer", SDP))
    t.verify_sdp("p_a", "answer", SDP, a.sign_sdp("p_therapist", "answer", SDP))
    b.verify_sdp("p_a", "offer", SDP, a.sign_sdp("p_b", "offer", SDP))
    a.verify_sdp("p_b", "answer", SDP, b.sign_sdp("p_a", "answer", SDP))


def test_signed_sdp_refusals() -> None:
    t, a, b = _session()
    sig = t.sign_sdp("p_a", "offer", SDP)
    swapped = SDP.replace(FP1, FP2)
    with pytest.raises(SecurityCheckFailed):
        a.verify_sdp("p_therapist", "offer", swapped, sig)  # hash mismatch
    # Even with a matching hash, fingerprints must equal the SDP's lines.
    forged = sign_sdp(
        t.ik, room=ROOM, from_pid="p_therapist", to_pid="p_a", epoch=1, sdp_type="offer", seq=99, sdp=SDP
    )
    env = json.loads(forged)
    p = json.loads(env["p"])
    p["sdp_sha256"] = b64e(__import__("hashlib").sha256(swapped.encode()).digest())
    env["p"] = json.dumps(p)
    with pytest.raises(SecurityCheckFailed):
        a.verify_sdp("p_therapist", "offer", swapped, json.dumps(env))  # signature broken
    with pytest.raises(SecurityCheckFailed):
        a.verify_sdp("p_therapist", "offer", SDP, None)  # unsigned
    with pytest.raises(SecurityCheckFailed):
        b.verify_sdp("p_therapist", "offer", SDP, sig)  # addressed to p_a
    with pytest.raises(SecurityCheckFailed):
        a.verify_sdp("p_therapist", "answer", SDP, sig)  # wrong type
    mitm = TherapistKeys(ROOM, "p_therapist")
    with pytest.raises(SecurityCheckFailed):
        a.verify_sdp("p_therapist", "offer", swapped, mitm.sign_sdp("p_a", "offer", swapped))  # wrong key
    with pytest.raises(SecurityCheckFailed):
        a.verify_sdp("p_b", "offer", SDP, t.sign_sdp("p_a", "offer", SDP))  # claims another sender
    a.verify_sdp("p_therapist", "offer", SDP, sig)
    with pytest.raises(SecurityCheckFailed, match="replayed"):
        a.verify_sdp("p_therapist", "offer", SDP, sig)  # replay
    old = sign_sdp(
        t.ik,
        room=ROOM,
        from_pid="p_therapist",
        to_pid="p_a",
        epoch=1,
        sdp_type="offer",
        seq=1000,
        sdp=SDP,
        ts=1,
    )
    with pytest.raises(SecurityCheckFailed, match="stale"):
        a.verify_sdp("p_therapist", "offer", SDP, old)
    with pytest.raises(SecurityCheckFailed):
        t.verify_sdp("p_a", "answer", SDP, ClientKeys(ROOM, pid="p_a").sign_sdp("p_therapist", "answer", SDP))
    # A peer outside the signed roster is refused.
    outsider = ClientKeys(ROOM, pid="p_x")
    with pytest.raises(SecurityCheckFailed):
        a.verify_sdp("p_x", "offer", SDP, outsider.sign_sdp("p_a", "offer", SDP))


def test_sent_back_client_loses_keys() -> None:
    t, a, _ = _session()
    a.reset()
    frame = t.keystate.encrypt("video", VP8_DELTA)
    assert frame is not None and a.keystate.decrypt("video", frame, 0) is None
    assert a.keystate.encrypt("video", VP8_DELTA) is None


def test_therapist_return_reissues_epoch() -> None:
    t, a, b = _session()
    saved = t.export_state()
    old_epoch = a.newest_epoch
    # The therapist reloads: same IK_T, fresh object, public state restored from local storage.
    t2 = TherapistKeys(ROOM, "p_therapist", t.ik, s_link=t.s_link, first_epoch=1)
    t2.import_state(saved)
    assert t2.members["p_a"].sas == a.sas()
    epoch = _epoch(t2, {"p_a": a, "p_b": b})
    assert epoch > old_epoch
    frame = t2.keystate.encrypt("video", VP8_KEY)
    assert frame is not None and a.keystate.decrypt("video", frame, 0) == VP8_KEY
    assert a.roster["p_a"][1] == t.current.roster["p_a"] if t.current else False  # indices kept
    other = TherapistKeys(ROOM, "p_therapist")
    with pytest.raises(ValueError):
        other.import_state(saved)  # another identity


def test_a_client_sent_back_and_admitted_again_accepts_the_therapists_next_offer() -> None:
    t, a, b = _session()
    a.verify_sdp("p_therapist", "offer", SDP, t.sign_sdp("p_a", "offer", SDP))
    t.forget("p_a")
    a.reset()
    t.check_intro("p_a", a.make_intro())
    a.check_grant(t.make_grant("p_a"), "p_a")
    t.check_reveal("p_a", a.make_reveal())
    _epoch(t, {"p_a": a, "p_b": b})
    a.verify_sdp("p_therapist", "offer", SDP, t.sign_sdp("p_a", "offer", SDP))  # not taken for a replay


# --- v2: keys follow the therapist's grants, signed expiry, per-epoch HPKE keys -------------------------------


def _payload(env_str: str) -> dict[str, Any]:
    return json.loads(json.loads(env_str)["p"])


def test_epoch_only_for_granted_and_revealed_clients() -> None:
    """A forged roster (a pid with an intro, never admitted by the therapist) gets no key."""
    t = _therapist()
    a = _admit(t, "p_a")
    ghost = ClientKeys(ROOM, pid="p_ghost")
    t.check_intro("p_ghost", ghost.make_intro())  # the server queued it: its intro verifies
    assert not t.keyable("p_ghost")
    with pytest.raises(SecurityCheckFailed, match="not granted"):
        t.make_epoch(["p_a", "p_ghost"])
    # Granted but its reveal not verified yet: no key either.
    half = ClientKeys(ROOM)
    t.check_intro("p_half", half.make_intro())
    half.check_grant(t.make_grant("p_half"), "p_half")
    assert not t.keyable("p_half")
    with pytest.raises(SecurityCheckFailed):
        t.make_epoch(["p_half"])
    res = t.make_epoch(["p_a"])
    assert set(_payload(res.message)["wrapped"]) == {"p_a"}
    ghost.ik_t = t.ik_raw  # even a ghost that trusts the therapist's key has nothing to unwrap
    assert ghost.accept_epoch(res.message) is None and ghost.newest_epoch == -1  # not listed: nothing installed
    # A client granted a moment ago whose reveal the therapist has not seen yet is simply not keyed yet: the
    # epoch is ignored (no refusal to show), and the next one, with it, is accepted.
    assert half.accept_epoch(res.message) is None and half.awaiting_first_epoch
    assert a.accept_epoch(res.message) is not None
    t.check_reveal("p_half", half.make_reveal())
    assert half.accept_epoch(t.make_epoch(["p_a", "p_half"]).message) is not None


def test_pid_takeover_is_a_new_person() -> None:
    """Drop a granted pid from the roster, queue it again with a new intro, put it back: refused."""
    t = _therapist()
    a = _admit(t, "p_a")
    _epoch(t, {"p_a": a})
    t.forget("p_a")  # the server's roster no longer has it
    attacker = ClientKeys(ROOM, pid="p_a")
    with pytest.raises(NewPerson):
        t.check_intro("p_a", attacker.make_intro())
    assert "p_a" in t.newcomers and not t.keyable("p_a")
    with pytest.raises(SecurityCheckFailed):
        t.make_epoch(["p_a"])  # back in the server's roster: still no key for anyone under p_a
    # The real client, queued again with its own (frozen) key, is the same person: a new Admit lets it in.
    t.check_intro("p_a", a.make_intro())
    assert "p_a" not in t.newcomers
    a.reset()
    a.check_grant(t.make_grant("p_a"), "p_a")
    t.check_reveal("p_a", a.make_reveal())
    res = t.make_epoch(["p_a"])
    assert _payload(res.message)["roster"][1]["ik"] == b64e(a.ik_raw)
    assert a.accept_epoch(res.message) is not None  # its newest HPKE key (the intro's is erased) opens it
    # Only the therapist's explicit new Admit hands the seat to the new person; the old client is then refused.
    t.forget("p_a")
    with pytest.raises(NewPerson):
        t.check_intro("p_a", attacker.make_intro())
    attacker.check_grant(t.make_grant("p_a"), "p_a")
    t.check_reveal("p_a", attacker.make_reveal())
    res2 = t.make_epoch(["p_a"])
    with pytest.raises(SecurityCheckFailed, match="not a member"):
        a.accept_epoch(res2.message)
    assert attacker.accept_epoch(res2.message) is not None


def test_epoch_expiry_is_signed_and_enforced() -> None:
    wall = Clock()
    wall.t = 1_000_000_000_000.0
    t = _therapist(keystate=KeyState(wall=wall))
    a = ClientKeys(ROOM, keystate=KeyState(wall=wall))
    t.check_intro("p_a", a.make_intro())
    a.check_grant(t.make_grant("p_a"), "p_a")
    t.check_reveal("p_a", a.make_reveal())
    now = int(wall.t)
    res = t.make_epoch(["p_a"], now_ms=now)
    p = _payload(res.message)
    assert p["expires_at"] == now + EPOCH_LIFETIME_MS == res.expires_at and p["issued_at"] == now
    # Tampering with the expiry breaks the signature; an expired or too long-lived epoch is refused.
    with pytest.raises(SecurityCheckFailed, match="signature"):
        a.accept_epoch(_tamper(res.message, expires_at=now + 10 * EPOCH_LIFETIME_MS), now_ms=now)
    with pytest.raises(SecurityCheckFailed, match="expired"):
        a.accept_epoch(res.message, now_ms=now + EPOCH_LIFETIME_MS)
    with pytest.raises(SecurityCheckFailed, match="too long"):
        a.accept_epoch(t.make_epoch(["p_a"], now_ms=now + 3 * EPOCH_LIFETIME_MS).message, now_ms=now)
    t.pending = res
    ack = a.accept_epoch(res.message, now_ms=now)
    assert ack is not None and t.check_ack("p_a", ack)
    assert a.accept_switch(t.make_switch())
    assert not t.rekey_due(now + EPOCH_LIFETIME_MS // 2 - 1) and t.rekey_due(now + EPOCH_LIFETIME_MS // 2)
    frame = t.keystate.encrypt("video", VP8_DELTA)
    assert frame is not None and a.keystate.decrypt("video", frame, 0) == VP8_DELTA
    wall.t = now + EPOCH_LIFETIME_MS  # the server withheld every newer epoch: the key is gone at its expiry
    assert a.keystate.encrypt("video", VP8_DELTA) is None  # the sender stops ("reconnecting encryption")
    assert a.keystate.send_expired and a.keystate.counters["expired"] == 1
    assert t.keystate.encrypt("video", VP8_DELTA) is None
    assert a.keystate.decrypt("video", frame, 0) is None  # the receiver dropped the expired epoch
    assert a.keystate.epochs() == []


def test_per_epoch_hpke_keys() -> None:
    """Each ack carries the next HPKE key; the next epoch is wrapped to it; older private keys are erased."""
    t = _therapist()
    a = _admit(t, "p_a")
    intro_dk = a.hpke_keys[0]
    res1 = t.make_epoch(["p_a"])
    ack1 = a.accept_epoch(res1.message)
    assert ack1 is not None
    dk1 = b64d(_payload(ack1)["dk"])
    assert dk1 != intro_dk[0] and a.hpke_keys[-1][0] == dk1
    t.check_ack("p_a", ack1)
    t.make_switch()
    res2 = t.make_epoch(["p_a"])
    sealed = b64d(_payload(res2.message)["wrapped"]["p_a"])
    from peer import e2ee as E

    info = E._epoch_info(ROOM, res2.epoch)
    with pytest.raises(Exception):  # noqa: B017 - a leaked intro key does not open the next epoch
        E._HPKE.decrypt(sealed, intro_dk[1], info=info)
    assert a.accept_epoch(res2.message) is not None
    assert intro_dk[0] not in [raw for raw, _ in a.hpke_keys]  # erased once a newer key worked
    # A lost ack: the therapist wraps to the key it knows, which the client still holds.
    res3 = t.make_epoch(["p_a"])
    ack3 = a.accept_epoch(res3.message)
    assert ack3 is not None
    res4 = t.make_epoch(["p_a"])  # ack3 never arrived
    assert a.accept_epoch(res4.message) is not None
    # The state a therapist keeps across a reload carries the newest key.
    t.check_ack("p_a", a.accept_epoch(t.make_epoch(["p_a"]).message) or "")
    t2 = TherapistKeys(ROOM, "p_therapist", t.ik, s_link=t.s_link, first_epoch=1)
    t2.import_state(t.export_state())
    assert t2.members["p_a"].dk == a.hpke_keys[-1][0]
    assert a.accept_epoch(t2.make_epoch(["p_a"]).message) is not None


def test_signed_roster_carries_the_therapists_names() -> None:
    t = _therapist()
    a = _admit(t, "p_a")
    b = _admit(t, "p_b")
    res = t.make_epoch(["p_a", "p_b"], {"p_therapist": "Dr. T", "p_a": "Ann", "p_b": "B" * 100})
    a.accept_epoch(res.message)
    assert a.names == {"p_therapist": "Dr. T", "p_a": "Ann", "p_b": "B" * 64}
    assert a.sender_of(0) == ("p_therapist", "Dr. T")
    assert a.sender_of(a.roster["p_b"][1]) == ("p_b", "B" * 64)
    assert a.sender_of(15) is None
    with pytest.raises(SecurityCheckFailed):
        b.accept_epoch(_tamper(res.message, roster=[{**e, "name": "Mallory"} for e in _payload(res.message)["roster"]]))


def test_no_periodic_rekey_while_an_epoch_is_pending() -> None:
    """Withheld acks must not keep the therapist from switching: a pending epoch is never replaced by the timer."""
    t = _therapist()
    _admit(t, "p_a")
    res = t.make_epoch(["p_a"], now_ms=1_000)
    half = EPOCH_LIFETIME_MS // 2
    assert t.pending is res and not t.rekey_due(1_000 + 10 * half)
    t.make_switch()
    assert not t.rekey_due(1_000 + half - 1) and t.rekey_due(1_000 + half)


def test_a_therapist_back_with_a_new_pid_is_verified_before_its_next_epoch_and_nobody_else_is() -> None:
    """The therapist stepped out and came back: a new connection (a new pid), the same identity key. Its SDP
    reaches the clients before its next epoch names the new pid; only IK_T may vouch for a pid outside the roster."""
    t, a, b = _session()
    a.reset()  # the grace ran out: back to the waiting room, the old roster still in memory
    sdp = sign_sdp(t.ik, room=ROOM, from_pid="p_t_again", to_pid="p_a", epoch=2, sdp_type="offer", seq=1, sdp=SDP)
    a.verify_sdp("p_t_again", "offer", SDP, sdp)
    outsider = ClientKeys(ROOM, pid="p_x")
    with pytest.raises(SecurityCheckFailed):
        a.verify_sdp("p_x", "offer", SDP, outsider.sign_sdp("p_a", "offer", SDP))
    with pytest.raises(SecurityCheckFailed):  # a member's key does not vouch for an unknown pid either
        a.verify_sdp("p_t_again", "offer", SDP, b.sign_sdp("p_a", "offer", SDP))
