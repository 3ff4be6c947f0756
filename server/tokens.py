"""Room, admin and resume tokens (PyJWT, RFC 8725), websocket tickets and revocation.

- One algorithm per key (EdDSA, Ed25519), an explicit ``typ`` per token kind, a ``kid`` naming one of at least
  two active keys (rotation), a fixed ``aud`` per kind, exact ``room``, opaque ``sub``, ``nbf``/``exp`` from the
  room window, ``jti`` (one device per token) and a 30 s leeway.
- A token of one kind is never accepted as another: the ``typ`` header and the ``aud`` claim both differ.
- Keys and revocations (opaque ids and times only) live in the data directory; nothing of a session does.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signaling.errors import SignalingError
from signaling.room import Admission, ResumeClaims, RoomSpec
from signaling.safety import SafetySettings

ISSUER: Final = "alcove"
ALG: Final = "EdDSA"
LEEWAY: Final = 30
TICKET_TTL: Final = 30.0
MAX_TICKETS_PER_LINK: Final = 4
ROOM_TYP, ADMIN_TYP, RESUME_TYP = "alcove-room+jwt", "alcove-admin+jwt", "alcove-resume+jwt"
ROOM_AUD, ADMIN_AUD, RESUME_AUD = "alcove-room", "alcove-admin", "alcove-resume"
Kind = Literal["room", "admin", "resume"]
_KINDS: Final[dict[str, tuple[str, str]]] = {
    "room": (ROOM_TYP, ROOM_AUD), "admin": (ADMIN_TYP, ADMIN_AUD), "resume": (RESUME_TYP, RESUME_AUD)}


def new_id(prefix: str, nbytes: int = 12) -> str:
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey
    created: float

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def to_json(self) -> dict[str, Any]:
        pem = self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()
        return {"kid": self.kid, "alg": ALG, "created": self.created, "private_pem": pem}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SigningKey:
        if data.get("alg") != ALG:
            raise ValueError("unsupported key algorithm")
        key = serialization.load_pem_private_key(data["private_pem"].encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 key")
        return cls(data["kid"], key, float(data["created"]))

    @classmethod
    def generate(cls, now: float) -> SigningKey:
        return cls(new_id("k", 6), Ed25519PrivateKey.generate(), now)


class NotOpenYet(SignalingError):
    """``room-not-open`` from a token whose signature was checked: ``opens_at`` (epoch seconds) is trustworthy."""

    def __init__(self, opens_at: float, role: str = "") -> None:
        super().__init__("room-not-open", "this session is not open yet")
        self.opens_at = opens_at
        self.role = role


class KeyRing:
    """The signing keys. The newest signs; every key in the ring verifies (at least two: rotation)."""

    def __init__(self, keys: list[SigningKey], path: Path | None = None) -> None:
        if not keys:
            raise ValueError("a key ring needs a key")
        self.keys = sorted(keys, key=lambda k: k.created)
        self.path = path

    @classmethod
    def load_or_create(cls, data_dir: Path | None, now: float | None = None) -> KeyRing:
        now = time.time() if now is None else now
        path = data_dir / "keys.json" if data_dir else None
        if path and path.exists():
            raw = json.loads(path.read_text())
            return cls([SigningKey.from_json(k) for k in raw["keys"]], path)
        ring = cls([SigningKey.generate(now - 1), SigningKey.generate(now)], path)
        ring.save()
        return ring

    def save(self) -> None:
        if self.path:
            write_private(self.path, json.dumps({"keys": [k.to_json() for k in self.keys]}, indent=1))

    def rotate(self, now: float, keep: int = 2) -> SigningKey:
        """Add a new signing key and keep the ``keep`` newest (tokens signed by a dropped key stop working)."""
        key = SigningKey.generate(now)
        self.keys = [*self.keys, key][-max(keep, 2):]
        self.save()
        return key

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def find(self, kid: str) -> SigningKey | None:
        return next((k for k in self.keys if k.kid == kid), None)


class Revocations:
    """Revoked token ids, ended rooms and seats' admission generations, each until its tokens would expire anyway.
    Opaque ids and numbers only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.tokens: dict[str, float] = {}
        self.rooms: dict[str, float] = {}
        self.seats: dict[str, tuple[int, float]] = {}  # token id -> (admission generation, until)
        if path and path.exists():
            raw = json.loads(path.read_text())
            self.tokens = {str(k): float(v) for k, v in raw.get("tokens", {}).items()}
            self.rooms = {str(k): float(v) for k, v in raw.get("rooms", {}).items()}
            self.seats = {str(k): (int(v[0]), float(v[1])) for k, v in raw.get("seats", {}).items()}

    def set_generation(self, jti: str, generation: int, until: float) -> None:
        """A seat left the session: resume credentials of older generations no longer admit (also after a restart)."""
        old = self.seats.get(jti, (0, 0.0))
        self.seats[jti] = (max(generation, old[0]), max(until, old[1]))
        self._save()

    def generation(self, jti: str) -> int:
        return self.seats.get(jti, (0, 0.0))[0]

    def revoke_token(self, jti: str, until: float) -> None:
        self.tokens[jti] = max(until, self.tokens.get(jti, 0.0))
        self._save()

    def end_room(self, room_id: str, until: float) -> None:
        self.rooms[room_id] = max(until, self.rooms.get(room_id, 0.0))
        self._save()

    def is_revoked(self, jti: str, room_id: str) -> bool:
        return jti in self.tokens or room_id in self.rooms

    def prune(self, now: float) -> None:
        before = len(self.tokens) + len(self.rooms) + len(self.seats)
        self.tokens = {k: v for k, v in self.tokens.items() if v + LEEWAY >= now}
        self.rooms = {k: v for k, v in self.rooms.items() if v + LEEWAY >= now}
        self.seats = {k: v for k, v in self.seats.items() if v[1] + LEEWAY >= now}
        if len(self.tokens) + len(self.rooms) + len(self.seats) != before:
            self._save()

    def _save(self) -> None:
        if self.path:
            write_private(self.path, json.dumps({"tokens": self.tokens, "rooms": self.rooms,
                                                  "seats": {k: list(v) for k, v in self.seats.items()}}))


@dataclass(frozen=True)
class RoomToken:
    token: str
    role: str
    jti: str
    expires: float


class Tokens:
    """Issues and verifies every token kind, and redeems single-use websocket tickets."""

    def __init__(self, ring: KeyRing, revocations: Revocations, early_join: float, overrun_cap: float) -> None:
        self.ring = ring
        self.revocations = revocations
        self.early_join = early_join
        self.overrun_cap = overrun_cap
        self._tickets: dict[str, tuple[Admission, float]] = {}

    # ---------------------------------------------------------------- signing

    def _sign(self, kind: Kind, claims: dict[str, Any]) -> str:
        typ, aud = _KINDS[kind]
        key = self.ring.current
        payload = {"iss": ISSUER, "aud": aud, **claims}
        return jwt.encode(payload, key.private, algorithm=ALG, headers={"typ": typ, "kid": key.kid})

    def _verify(self, kind: Kind, token: str, now: float, *, check_times: bool = True) -> dict[str, Any]:
        typ, aud = _KINDS[kind]
        if not isinstance(token, str) or len(token) > 4096:
            raise SignalingError("token-invalid", "this link is not valid")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SignalingError("token-invalid", "this link is not valid") from None
        if header.get("alg") != ALG or header.get("typ") != typ:
            raise SignalingError("token-invalid", "this is not a token of the right kind")
        key = self.ring.find(str(header.get("kid", "")))
        if key is None:
            raise SignalingError("token-invalid", "this link was signed by an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.public, algorithms=[ALG], audience=aud, issuer=ISSUER, leeway=LEEWAY,
                options={"require": ["exp", "iat", "jti", "sub"], "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False})
        except jwt.PyJWTError:
            raise SignalingError("token-invalid", "this link is not valid") from None
        if check_times and now > float(claims["exp"]) + LEEWAY:
            raise SignalingError("token-invalid", "this token has expired")
        return claims

    # ---------------------------------------------------------------- room tokens

    def issue_room_token(self, spec: RoomSpec, role: str, now: float) -> RoomToken:
        jti = new_id("t")
        nbf = spec.starts_at - self.early_join
        exp = spec.ends_at + self.overrun_cap
        claims = {
            "sub": new_id("s"), "room": spec.room_id, "role": role, "jti": jti, "iat": int(now),
            "nbf": int(nbf), "exp": int(exp) + 1,
            "ses": {"type": spec.type, "start": spec.starts_at, "end": spec.ends_at, "seats": spec.seats,
                    "topo": spec.topology, "host": spec.host, "safety": spec.safety.claims()},
        }
        return RoomToken(self._sign("room", claims), role, jti, float(int(exp) + 1))

    def verify_room_token(self, token: str, now: float) -> Admission:
        """Raises ``SignalingError`` with room-not-open / room-ended / token-revoked / token-invalid."""
        claims = self._verify("room", token, now, check_times=False)
        try:
            ses = claims["ses"]
            role = claims["role"]
            if role not in ("therapist", "client"):
                raise ValueError(role)
            spec = RoomSpec(room_id=str(claims["room"]), type=ses["type"], starts_at=float(ses["start"]),  # type: ignore[arg-type]
                            ends_at=float(ses["end"]), seats=int(ses["seats"]), topology=ses.get("topo", "mesh"),
                            host=str(ses.get("host", "")), safety=SafetySettings.from_claims(ses.get("safety")))
            nbf, exp = float(claims["nbf"]), float(claims["exp"])
        except (KeyError, TypeError, ValueError):
            raise SignalingError("token-invalid", "this link is not valid") from None
        if self.revocations.is_revoked(str(claims["jti"]), spec.room_id):
            if spec.room_id in self.revocations.rooms:
                raise SignalingError("room-ended", "this session has ended")
            raise SignalingError("token-revoked", "this link was revoked")
        if now + LEEWAY < nbf:
            raise NotOpenYet(spec.starts_at - self.early_join, role)
        if now - LEEWAY > exp:
            raise SignalingError("room-ended", "this session has ended")
        return Admission(spec=spec, role=role, token_id=str(claims["jti"]), token_expires=exp)

    # ---------------------------------------------------------------- admin tokens

    def issue_admin_token(self, now: float, ttl: float = 8 * 3600) -> str:
        return self._sign("admin", {"sub": new_id("a"), "jti": new_id("t"), "iat": int(now),
                                    "nbf": int(now), "exp": int(now + ttl)})

    def verify_admin_token(self, token: str, now: float) -> dict[str, Any]:
        claims = self._verify("admin", token, now)
        if str(claims["jti"]) in self.revocations.tokens:
            raise SignalingError("token-revoked", "this admin token was revoked")
        return claims

    # ---------------------------------------------------------------- resume credentials

    def sign_resume(self, claims: ResumeClaims, now: float, ttl: float) -> str:
        return self._sign("resume", {
            "sub": claims.pid, "jti": new_id("t", 6), "iat": int(now), "exp": int(now + ttl),
            "room": claims.room_id, "tok": claims.token_id, "role": claims.role, "adm": claims.admitted,
            "gen": claims.generation, "name": claims.name})

    def verify_resume(self, credential: str, now: float) -> ResumeClaims | None:
        try:
            c = self._verify("resume", credential, now)
            return ResumeClaims(room_id=str(c["room"]), pid=str(c["sub"]), token_id=str(c["tok"]),
                                role=c["role"], admitted=bool(c["adm"]), name=str(c["name"]),
                                generation=int(c.get("gen", -1)))  # no generation: never admits by itself
        except (SignalingError, KeyError, TypeError, ValueError):
            return None

    # ---------------------------------------------------------------- tickets

    def issue_ticket(self, admission: Admission, now: float) -> str:
        self._tickets = {t: v for t, v in self._tickets.items() if v[1] > now}
        # At most a few outstanding tickets per link: a new one retires the oldest.
        mine = [t for t, v in self._tickets.items() if v[0].token_id == admission.token_id]
        for old in mine[:max(0, len(mine) - MAX_TICKETS_PER_LINK + 1)]:
            del self._tickets[old]
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = (admission, now + TICKET_TTL)
        return ticket

    def redeem_ticket(self, ticket: str, now: float) -> Admission:
        entry = self._tickets.pop(ticket, None)
        if entry is None or entry[1] < now:
            raise SignalingError("ticket-invalid", "the ticket is unknown, used or expired")
        admission = entry[0]
        self.check_revoked(admission)
        return admission

    def check_revoked(self, admission: Admission) -> None:
        """Ended or revoked since the ticket was taken: ``room-ended`` / ``token-revoked``."""
        if admission.spec.room_id in self.revocations.rooms:
            raise SignalingError("room-ended", "this session has ended")
        if self.revocations.is_revoked(admission.token_id, admission.spec.room_id):
            raise SignalingError("token-revoked", "this link was revoked")
