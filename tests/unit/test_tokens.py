"""Tokens per RFC 8725: one algorithm per key, explicit typ, kid rotation, audience, kinds never mixed."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.tokens import KeyRing, Revocations, SigningKey, Tokens
from signaling.effects import RoomId
from signaling.errors import SignalingError
from signaling.room import ResumeClaims, RoomSpec

NOW = time.time()


def make(tmp_path=None) -> Tokens:  # type: ignore[no-untyped-def]
    ring = KeyRing.load_or_create(tmp_path, NOW)
    return Tokens(ring, Revocations(tmp_path / "rev.json" if tmp_path else None), 900, 900)


def room_spec(start: float = NOW) -> RoomSpec:
    return RoomSpec(RoomId("r_abc"), "individual", start, start + 3000, 1)


def test_round_trip_and_claims_per_rfc8725() -> None:
    t = make()
    issued = t.issue_room_token(room_spec(), "client", NOW)
    header = jwt.get_unverified_header(issued.token)
    assert header == {"alg": "EdDSA", "typ": "alcove-room+jwt", "kid": t.ring.current.kid}
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims["aud"] == "alcove-room" and claims["room"] == "r_abc" and claims["role"] == "client"
    assert claims["sub"].startswith("s_") and claims["jti"] == issued.jti
    assert claims["nbf"] == int(NOW - 900)
    adm = t.verify_room_token(issued.token, NOW)
    assert adm.role == "client" and adm.spec.room_id == "r_abc" and adm.token_id == issued.jti


def test_two_active_keys_and_rotation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    t = make(tmp_path)
    assert len(t.ring.keys) >= 2
    old = t.issue_room_token(room_spec(), "client", NOW)
    t.ring.rotate(NOW + 1)
    new = t.issue_room_token(room_spec(), "client", NOW)
    assert jwt.get_unverified_header(new.token)["kid"] != jwt.get_unverified_header(old.token)["kid"]
    t2 = make(tmp_path)  # reloads the ring from disk
    t2.verify_room_token(old.token, NOW)
    t2.verify_room_token(new.token, NOW)
    t2.ring.rotate(NOW + 2)
    t2.ring.rotate(NOW + 3)  # the key that signed `old` is gone now
    with pytest.raises(SignalingError, match="unknown key"):
        t2.verify_room_token(old.token, NOW)


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("header", [
    {"alg": "none", "typ": "alcove-room+jwt"},
    {"alg": "HS256", "typ": "alcove-room+jwt"},
    {"alg": "EdDSA", "typ": "JWT"},
])
def test_algorithm_and_type_confusion_are_refused(header: dict[str, str]) -> None:
    t = make()
    good = t.issue_room_token(room_spec(), "client", NOW).token
    _, payload, sig = good.split(".")
    forged = f"{_b64({**header, 'kid': t.ring.current.kid})}.{payload}.{sig}"
    with pytest.raises(SignalingError) as err:
        t.verify_room_token(forged, NOW)
    assert err.value.code == "token-invalid"


def test_a_foreign_key_with_a_known_kid_is_refused() -> None:
    t = make()
    evil = SigningKey(t.ring.current.kid, Ed25519PrivateKey.generate(), NOW)
    payload = jwt.decode(t.issue_room_token(room_spec(), "therapist", NOW).token,
                         options={"verify_signature": False})
    forged = jwt.encode(payload, evil.private, algorithm="EdDSA",
                        headers={"typ": "alcove-room+jwt", "kid": evil.kid})
    with pytest.raises(SignalingError):
        t.verify_room_token(forged, NOW)


def test_admin_and_room_tokens_are_never_interchangeable() -> None:
    t = make()
    admin = t.issue_admin_token(NOW)
    room = t.issue_room_token(room_spec(), "therapist", NOW).token
    with pytest.raises(SignalingError):
        t.verify_room_token(admin, NOW)
    with pytest.raises(SignalingError):
        t.verify_admin_token(room, NOW)
    resume = t.sign_resume(ResumeClaims("r_abc", "p1", "t1", "client", True, "A"), NOW, 240)
    with pytest.raises(SignalingError):
        t.verify_room_token(resume, NOW)
    assert t.verify_resume(room, NOW) is None
    assert t.verify_resume(resume, NOW) is not None
    assert t.verify_resume(resume, NOW + 300) is None  # expired


def test_window_revocation_and_ended_rooms(tmp_path) -> None:  # type: ignore[no-untyped-def]
    t = make(tmp_path)
    later = t.issue_room_token(room_spec(NOW + 7200), "client", NOW)
    with pytest.raises(SignalingError) as err:
        t.verify_room_token(later.token, NOW)
    assert err.value.code == "room-not-open"
    t.verify_room_token(later.token, NOW + 7200 - 900)  # opens 15 minutes early
    with pytest.raises(SignalingError) as err:
        t.verify_room_token(later.token, NOW + 7200 + 3000 + 900 + 60)
    assert err.value.code == "room-ended"
    tok = t.issue_room_token(room_spec(), "client", NOW)
    t.revocations.revoke_token(tok.jti, tok.expires)
    with pytest.raises(SignalingError) as err:
        make(tmp_path).verify_room_token(tok.token, NOW)  # persisted: survives a restart
    assert err.value.code == "token-revoked"
    other = t.issue_room_token(room_spec(), "therapist", NOW)
    t.revocations.end_room("r_abc", NOW + 5000)
    with pytest.raises(SignalingError) as err:
        make(tmp_path).verify_room_token(other.token, NOW)
    assert err.value.code == "room-ended"


def test_seat_generations_persist_and_resume_credentials_carry_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    t = make(tmp_path)
    t.revocations.set_generation("t_seat", 3, NOW + 100)
    t.revocations.set_generation("t_seat", 2, NOW + 50)  # never goes back
    again = make(tmp_path)  # a restart
    assert again.revocations.generation("t_seat") == 3 and again.revocations.generation("t_other") == 0
    claims = ResumeClaims(room_id="r_abc", pid="p_1", token_id="t_seat", role="client", admitted=True,
                          name="Alex", generation=3)
    assert again.verify_resume(t.sign_resume(claims, NOW, ttl=240), NOW) == claims
    again.revocations.prune(NOW + 100 + 31)
    assert make(tmp_path).revocations.seats == {}


def test_a_resume_credential_without_a_generation_claim_never_matches() -> None:
    t = make()
    token = t._sign("resume", {"sub": "p_1", "jti": "t_x", "iat": int(NOW), "exp": int(NOW + 100), "room": "r_abc",
                               "tok": "t_seat", "role": "client", "adm": True, "name": "Alex"})
    claims = t.verify_resume(token, NOW)
    assert claims is not None and claims.generation == -1


def test_revocation_file_holds_only_opaque_ids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    t = make(tmp_path)
    tok = t.issue_room_token(room_spec(), "client", NOW)
    t.revocations.revoke_token(tok.jti, tok.expires)
    t.revocations.set_generation(tok.jti, 2, tok.expires)
    stored = json.loads((tmp_path / "rev.json").read_text())
    assert stored == {"tokens": {tok.jti: tok.expires}, "rooms": {}, "seats": {tok.jti: [2, tok.expires]}}
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0


def test_tickets_are_single_use_and_short_lived() -> None:
    t = make()
    adm = t.verify_room_token(t.issue_room_token(room_spec(), "client", NOW).token, NOW)
    ticket = t.issue_ticket(adm, NOW)
    assert t.redeem_ticket(ticket, NOW + 1) == adm
    with pytest.raises(SignalingError):
        t.redeem_ticket(ticket, NOW + 2)
    late = t.issue_ticket(adm, NOW)
    with pytest.raises(SignalingError):
        t.redeem_ticket(late, NOW + 31)
