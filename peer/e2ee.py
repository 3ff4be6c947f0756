"""Alcove E2EE key protocol (v2): intro, grant, reveal, SAS, epochs, switch, signed SDP.

The same protocol is implemented in ``web/static/js/e2ee.js``; the two are
checked against each other by ``tests/unit/test_e2ee_interop.py``.  The
protocol is written down in ``docs/security.md``.

Everything that travels through the signaling server is an opaque JSON string
``{"p": "<payload JSON string>", "sig": "<b64url raw r||s>"}`` (the intro also
has ``"mac"``).  Signatures are over the UTF-8 bytes of ``p``, so nobody has
to canonicalise JSON.  Public keys are uncompressed SEC1 points (65 bytes).

Media keys go to :class:`KeyState`, whose ``encrypt``/``decrypt`` callables
are backed by :class:`peer.sframe.FrameEncryptor`/``FrameDecryptor``.  This
module never imports aiortc.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from peer.sframe import FrameDecryptor, FrameEncryptor, FrameKind, SFrameError, epoch_base_key

__all__ = [
    "APP_HOLD_MAX",
    "APP_HOLD_SECONDS",
    "APP_MAX_BODY",
    "EMOJI",
    "PROTOCOL_VERSION",
    "SAS",
    "AppHold",
    "AppMessage",
    "ClientKeys",
    "EpochResult",
    "IntroInfo",
    "KeyState",
    "LinkInfo",
    "NewPerson",
    "SecurityCheckFailed",
    "TherapistKeys",
    "b64d",
    "b64e",
    "k_auth",
    "make_link_fragment",
    "parse_link_fragment",
    "pub_raw",
    "sas",
    "sdp_fingerprints",
    "sign_sdp",
    "tk_of",
    "unwrap_any",
    "verify_sdp",
]

PROTOCOL_VERSION: Final = 2
#: An epoch is good for this long after it is issued (milliseconds); its expiry is signed.
EPOCH_LIFETIME_MS: Final = 10 * 60 * 1000
#: The therapist issues a new epoch this long after the current one (well before its expiry).
REKEY_AFTER_MS: Final = EPOCH_LIFETIME_MS // 2
#: A client refuses an epoch that claims to be good for longer than this from its own clock (milliseconds).
MAX_EPOCH_AHEAD_MS: Final = EPOCH_LIFETIME_MS + 5 * 60 * 1000
#: A client keeps at most this many announced HPKE private keys (the oldest is erased first).
MAX_HPKE_KEYS: Final = 8
#: Longest display name carried in a signed roster (characters).
MAX_NAME: Final = 64
#: Old epoch stays decrypt-only this long after a switch (seconds).
RETIRE_AFTER: Final = 5.0
#: Therapist sends the switch after all acks or after this long (seconds).
SWITCH_TIMEOUT: Final = 1.5
#: Maximum clock difference accepted on signed SDP (milliseconds).
SDP_MAX_SKEW_MS: Final = 5 * 60 * 1000
MAX_MEMBERS: Final = 16  # sender indices 0..15 (therapist 0)

_SALT: Final = b"alcove-e2ee v1"
_SAS_INFO: Final = b"alcove-e2ee sas v1"
_EPOCH_INFO: Final = b"alcove-e2ee epoch"
_APP_INFO: Final = b"alcove-e2ee app"
_APP_PRIVATE_INFO: Final = b"alcove-e2ee app private"
#: An app message's body (JSON, UTF-8) has at most this many bytes.
APP_MAX_BODY: Final = 4096
#: At most this many app messages under an epoch not received yet are held for it …
APP_HOLD_MAX: Final = 32
#: … for at most this long (seconds); then they are refused.
APP_HOLD_SECONDS: Final = 5.0
#: The pairwise secret each epoch wraps for each client next to the epoch secret (``E_n ‖ P_{n,c}``).
_SECRET_LEN: Final = 32
_HPKE: Final = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)

#: The 64 SAS emoji (Matrix SAS list), as (emoji, English name).  Identical in e2ee.js.
EMOJI: Final[tuple[tuple[str, str], ...]] = (
    ("\U0001f436", "Dog"), ("\U0001f431", "Cat"), ("\U0001f981", "Lion"), ("\U0001f40e", "Horse"),
    ("\U0001f984", "Unicorn"), ("\U0001f437", "Pig"), ("\U0001f418", "Elephant"), ("\U0001f430", "Rabbit"),
    ("\U0001f43c", "Panda"), ("\U0001f413", "Rooster"), ("\U0001f427", "Penguin"), ("\U0001f422", "Turtle"),
    ("\U0001f41f", "Fish"), ("\U0001f419", "Octopus"), ("\U0001f98b", "Butterfly"), ("\U0001f337", "Flower"),
    ("\U0001f333", "Tree"), ("\U0001f335", "Cactus"), ("\U0001f344", "Mushroom"), ("\U0001f30f", "Globe"),
    ("\U0001f319", "Moon"), ("\u2601\ufe0f", "Cloud"), ("\U0001f525", "Fire"), ("\U0001f34c", "Banana"),
    ("\U0001f34e", "Apple"), ("\U0001f353", "Strawberry"), ("\U0001f33d", "Corn"), ("\U0001f355", "Pizza"),
    ("\U0001f382", "Cake"), ("\u2764\ufe0f", "Heart"), ("\U0001f600", "Smiley"), ("\U0001f916", "Robot"),
    ("\U0001f3a9", "Hat"), ("\U0001f453", "Glasses"), ("\U0001f527", "Spanner"), ("\U0001f385", "Santa"),
    ("\U0001f44d", "Thumbs Up"), ("\u2602\ufe0f", "Umbrella"), ("\u231b", "Hourglass"), ("\u23f0", "Clock"),
    ("\U0001f381", "Gift"), ("\U0001f4a1", "Light Bulb"), ("\U0001f4d5", "Book"), ("\u270f\ufe0f", "Pencil"),
    ("\U0001f4ce", "Paperclip"), ("\u2702\ufe0f", "Scissors"), ("\U0001f512", "Lock"), ("\U0001f511", "Key"),
    ("\U0001f528", "Hammer"), ("\u260e\ufe0f", "Telephone"), ("\U0001f3c1", "Flag"), ("\U0001f682", "Train"),
    ("\U0001f6b2", "Bicycle"), ("\u2708\ufe0f", "Aeroplane"), ("\U0001f680", "Rocket"), ("\U0001f3c6", "Trophy"),
    ("\u26bd", "Ball"), ("\U0001f3b8", "Guitar"), ("\U0001f3ba", "Trumpet"), ("\U0001f514", "Bell"),
    ("\u2693", "Anchor"), ("\U0001f3a7", "Headphones"), ("\U0001f4c1", "Folder"), ("\U0001f4cc", "Pin"),
)  # fmt: skip


class SecurityCheckFailed(Exception):
    """A signed message or SDP did not verify.  The UI shows "security check failed"."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"security check failed: {detail}" if detail else "security check failed")
        self.detail = detail


class NewPerson(SecurityCheckFailed):
    """An intro with a new identity key for a pid the therapist granted before: a new person.

    It is never keyed under the old grant; only a new Admit (:meth:`TherapistKeys.make_grant`) lets it in.
    """


# ---------------------------------------------------------------------------
# Encodings and primitives
# ---------------------------------------------------------------------------


def b64e(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    """Strict inverse of :func:`b64e` (raises ``ValueError``)."""
    if not isinstance(text, str) or any(c not in _B64_ALPHABET for c in text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    out = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64e(out) != text:
        raise ValueError("non-canonical base64url")
    return out


_B64_ALPHABET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _now_ms() -> int:
    return int(time.time() * 1000)


def pub_raw(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> bytes:
    """Uncompressed SEC1 encoding (65 bytes) of a P-256 public key."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _load_pub(raw: bytes) -> ec.EllipticCurvePublicKey:
    if len(raw) != 65 or raw[0] != 0x04:
        raise SecurityCheckFailed("bad public key")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise SecurityCheckFailed("bad public key") from None


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def tk_of(ik_raw: bytes) -> bytes:
    """The link's ``tk``: first 16 bytes of SHA-256(raw IK_T)."""
    return _sha256(ik_raw)[:16]


def _hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def k_auth(s_link: bytes, room: str) -> bytes:
    """``K_auth = HKDF-SHA256(ikm=S_link, salt="alcove-e2ee v1", info="auth"||room, 32)``."""
    return _hkdf(s_link, _SALT, b"auth" + room.encode("utf-8"), 32)


def _sign(priv: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(priv.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _verify(pub_raw_bytes: bytes, sig: bytes, data: bytes) -> bool:
    if len(sig) != 64:
        return False
    pub = _load_pub(pub_raw_bytes)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _envelope(priv: ec.EllipticCurvePrivateKey, payload: Mapping[str, Any]) -> dict[str, Any]:
    p = _dumps(payload)
    return {"p": p, "sig": b64e(_sign(priv, p.encode("utf-8")))}


def _parse_envelope(data: str | Mapping[str, Any]) -> tuple[str, bytes, dict[str, Any], Mapping[str, Any]]:
    """Split an envelope into (p, sig, payload, envelope) without verifying it."""
    try:
        env: Any = json.loads(data) if isinstance(data, str) else data
        if not isinstance(env, Mapping):
            raise ValueError
        p = env["p"]
        sig = b64d(env["sig"])
        if not isinstance(p, str):
            raise ValueError
        payload = json.loads(p)
        if not isinstance(payload, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise SecurityCheckFailed("malformed message") from None
    return p, sig, payload, env


def _open(
    data: str | Mapping[str, Any], room: str, kind: str, signer: bytes | None
) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """Verify an envelope's signature (by ``signer``; None = by the payload's own ``ik``) and v/room/t."""
    p, sig, payload, env = _parse_envelope(data)
    if payload.get("v") != PROTOCOL_VERSION or payload.get("room") != room or payload.get("t") != kind:
        raise SecurityCheckFailed(f"wrong version, room or kind for {kind}")
    if signer is None:
        try:
            signer = b64d(payload["ik"])
        except (KeyError, ValueError, TypeError):
            raise SecurityCheckFailed("missing key") from None
    if not _verify(signer, sig, p.encode("utf-8")):
        raise SecurityCheckFailed(f"bad signature on {kind}")
    return payload, env


def message_kind(data: str | Mapping[str, Any]) -> str | None:
    """The ``t`` of an envelope's payload (unverified!), for dispatching ``key`` messages."""
    try:
        _, _, payload, _ = _parse_envelope(data)
    except SecurityCheckFailed:
        return None
    t = payload.get("t")
    return t if isinstance(t, str) else None


def _b64field(payload: Mapping[str, Any], name: str, length: int | None = None) -> bytes:
    try:
        out = b64d(payload[name])
    except (KeyError, ValueError, TypeError):
        raise SecurityCheckFailed(f"bad field {name}") from None
    if length is not None and len(out) != length:
        raise SecurityCheckFailed(f"bad length of {name}")
    return out


def _int_field(payload: Mapping[str, Any], name: str) -> int:
    v = payload.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise SecurityCheckFailed(f"bad field {name}")
    return v


def _str_field(payload: Mapping[str, Any], name: str) -> str:
    v = payload.get(name)
    if not isinstance(v, str) or not v:
        raise SecurityCheckFailed(f"bad field {name}")
    return v


# ---------------------------------------------------------------------------
# Link fragment
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkInfo:
    token: str
    s_link: bytes | None = None  # 16 bytes (32 in older links)
    tk: bytes | None = None  # 16 bytes


def parse_link_fragment(fragment: str) -> LinkInfo:
    """Parse ``#t=<token or seat id>&s=<b64 16 B, 32 B in older links>&tk=<b64 16 B>`` (``s``/``tk`` optional).
    Raises ``ValueError``."""
    frag = fragment[1:] if fragment.startswith("#") else fragment
    fields = dict(parse_qsl(frag, keep_blank_values=True))
    token = fields.get("t", "")
    if not token:
        raise ValueError("the link has no token")
    s = b64d(fields["s"]) if fields.get("s") else None
    tk = b64d(fields["tk"]) if fields.get("tk") else None
    if s is not None and len(s) not in (16, 32):
        raise ValueError("bad link secret")
    if tk is not None and len(tk) != 16:
        raise ValueError("bad therapist key hash")
    return LinkInfo(token, s, tk)


def make_link_fragment(token: str, s_link: bytes | None = None, tk: bytes | None = None) -> str:
    """Inverse of :func:`parse_link_fragment` (returns ``#t=…&s=…&tk=…``)."""
    out = f"#t={token}"
    if s_link is not None:
        out += f"&s={b64e(s_link)}"
    if tk is not None:
        out += f"&tk={b64e(tk)}"
    return out


# ---------------------------------------------------------------------------
# SAS
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SAS:
    emoji: tuple[tuple[str, str], ...]  # 7 x (emoji, name)
    decimal: tuple[int, int, int]  # each 1000..9191

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(EMOJI.index(e) for e in self.emoji)


def sas(ik_p: bytes, ik_t: bytes, n_c: bytes, n_t: bytes, room: str) -> SAS:
    """HKDF-SHA256(ikm=IK_P||IK_T||n_C||n_T, salt=empty, info="alcove-e2ee sas v1"||room, 6 bytes)."""
    out = _hkdf(ik_p + ik_t + n_c + n_t, None, _SAS_INFO + room.encode("utf-8"), 6)
    v = int.from_bytes(out, "big")  # 48 bits
    emoji = tuple(EMOJI[(v >> (42 - 6 * i)) & 0x3F] for i in range(7))
    d = tuple(((v >> (35 - 13 * i)) & 0x1FFF) + 1000 for i in range(3))
    return SAS(emoji, (d[0], d[1], d[2]))


# ---------------------------------------------------------------------------
# Signed SDP
# ---------------------------------------------------------------------------


def sdp_fingerprints(sdp: str) -> list[str]:
    """The values of every ``a=fingerprint:`` line, in order (e.g. ``"sha-256 AB:CD:…"``)."""
    out = []
    for line in sdp.split("\n"):
        line = line.removesuffix("\r")
        if line.startswith("a=fingerprint:"):
            out.append(line[len("a=fingerprint:") :])
    return out


def sign_sdp(
    ik: ec.EllipticCurvePrivateKey,
    *,
    room: str,
    from_pid: str,
    to_pid: str,
    epoch: int,
    sdp_type: str,
    seq: int,
    sdp: str,
    ts: int | None = None,
) -> str:
    """The ``offer/answer.sig`` envelope for ``sdp``."""
    if sdp_type not in ("offer", "answer"):
        raise ValueError("sdp_type must be offer or answer")
    payload = {
        "v": PROTOCOL_VERSION,
        "t": "sdp",
        "room": room,
        "from": from_pid,
        "to": to_pid,
        "epoch": epoch,
        "type": sdp_type,
        "seq": seq,
        "ts": _now_ms() if ts is None else ts,
        "sdp_sha256": b64e(_sha256(sdp.encode("utf-8"))),
        "fingerprints": sdp_fingerprints(sdp),
    }
    return _dumps(_envelope(ik, payload))


def verify_sdp(
    sig: str | Mapping[str, Any] | None,
    sdp: str,
    *,
    ik: bytes,
    room: str,
    from_pid: str,
    to_pid: str,
    sdp_type: str | None = None,
    last_seq: int = -1,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Verify a signed SDP; returns the payload (use its ``seq`` as the next ``last_seq``).

    Raises :class:`SecurityCheckFailed`; call it BEFORE ``setRemoteDescription``.
    """
    if sig is None:
        raise SecurityCheckFailed("unsigned SDP")
    payload, _ = _open(sig, room, "sdp", ik)
    if payload.get("from") != from_pid or payload.get("to") != to_pid:
        raise SecurityCheckFailed("SDP for another peer")
    if payload.get("type") not in ("offer", "answer") or (
        sdp_type is not None and payload["type"] != sdp_type
    ):
        raise SecurityCheckFailed("wrong SDP type")
    seq = _int_field(payload, "seq")
    if seq <= last_seq:
        raise SecurityCheckFailed("replayed SDP")
    ts = payload.get("ts")
    now = _now_ms() if now_ms is None else now_ms
    if not isinstance(ts, int) or abs(ts - now) >= SDP_MAX_SKEW_MS:
        raise SecurityCheckFailed("stale SDP")
    if not hmac.compare_digest(_b64field(payload, "sdp_sha256", 32), _sha256(sdp.encode("utf-8"))):
        raise SecurityCheckFailed("SDP was modified")
    if payload.get("fingerprints") != sdp_fingerprints(sdp):
        raise SecurityCheckFailed("DTLS fingerprint mismatch")
    return payload


# ---------------------------------------------------------------------------
# KeyState: which SFrame keys to use
# ---------------------------------------------------------------------------


class KeyState:
    """Glue between the key protocol and SFrame.

    Epochs are installed decrypt-only (:meth:`install`), become the sending
    epoch on :meth:`switch`, and older epochs are dropped :data:`RETIRE_AFTER`
    seconds after the switch.  An epoch installed with an expiry (``expires_at``,
    ms on ``wall``) is dropped at that instant: nothing is sent or decrypted with it
    afterwards (:attr:`send_expired` tells the UI to show "reconnecting encryption").
    ``encrypt``/``decrypt`` are thread-safe and return ``None`` when a frame must
    not be sent / must be dropped.  ``clock`` (seconds) and ``wall`` (ms since the
    Unix epoch) are injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] | None = None) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._wall = wall if wall is not None else (lambda: time.time() * 1000)
        self.encryptor = FrameEncryptor()
        self.decryptor = FrameDecryptor()
        # epoch -> (base_key, own send idx or None, {pid: idx})
        self._epochs: dict[int, tuple[bytes, int | None, dict[str, int]]] = {}
        self._retire_at: dict[int, float] = {}
        self._expires_at: dict[int, float] = {}
        self.send_epoch: int | None = None
        self.send_expired = False
        """True once the sending epoch expired and no newer one was switched to: nothing is sent."""
        self.on_switch: list[Callable[[int], None]] = []  # e.g. force a keyframe
        self.counters = {"encrypted": 0, "decrypted": 0, "failed": 0, "dropped": 0, "expired": 0}

    # -- key management --------------------------------------------------
    def install(self, epoch: int, base_key: bytes, roster: Mapping[str, int], send_idx: int | None,
                expires_at: float | None = None) -> None:
        """Install ``epoch`` decrypt-only for every roster idx (``roster`` = {pid: idx}) until ``expires_at``."""
        with self._lock:
            if epoch in self._epochs or (expires_at is not None and expires_at <= self._wall()):
                return
            for idx in sorted(set(roster.values())):
                self.decryptor.add_key(epoch, idx, base_key)
            self._epochs[epoch] = (base_key, send_idx, dict(roster))
            if expires_at is not None:
                self._expires_at[epoch] = expires_at

    def switch(self, epoch: int) -> bool:
        """Start sending with ``epoch``; older epochs stay decrypt-only for 5 s. False if unknown/old."""
        with self._lock:
            entry = self._epochs.get(epoch)
            if entry is None or (self.send_epoch is not None and epoch <= self.send_epoch):
                return False
            base_key, send_idx, _ = entry
            if send_idx is None:
                self.encryptor.clear()
            else:
                self.encryptor.set_key(epoch, send_idx, base_key)
            self.send_epoch = epoch
            self.send_expired = False
            deadline = self._clock() + RETIRE_AFTER
            for old in self._epochs:
                if old < epoch:
                    self._retire_at.setdefault(old, deadline)
            callbacks = list(self.on_switch)
        for cb in callbacks:
            cb(epoch)
        return True

    def retire(self, epoch: int) -> None:
        with self._lock:
            self._retire_locked(epoch)

    def _retire_locked(self, epoch: int) -> None:
        self.decryptor.remove_epoch(epoch)
        self._epochs.pop(epoch, None)
        self._retire_at.pop(epoch, None)
        self._expires_at.pop(epoch, None)
        if epoch == self.send_epoch:
            self.encryptor.clear()

    def _retire_due(self) -> None:
        if self._retire_at:
            now = self._clock()
            for epoch, t in list(self._retire_at.items()):
                if t <= now:
                    self._retire_locked(epoch)
        if self._expires_at:
            wall = self._wall()
            for epoch, t in list(self._expires_at.items()):
                if t <= wall:
                    if epoch == self.send_epoch:
                        self.send_expired = True
                    self._retire_locked(epoch)

    def expire_due(self) -> bool:
        """Drop the epochs past their expiry now; True when the sending epoch has expired."""
        with self._lock:
            self._retire_due()
            return self.send_expired

    def clear(self) -> None:
        """Forget every key (removed / sent back to the waiting room): nothing is sent or decrypted."""
        with self._lock:
            self.encryptor.clear()
            for epoch in list(self._epochs):
                self._retire_locked(epoch)
            self.send_epoch = None
            self.send_expired = False

    def epochs(self) -> list[int]:
        with self._lock:
            self._retire_due()
            return sorted(self._epochs)

    def _indices_of(self, pid: str) -> list[int]:
        with self._lock:
            out: list[int] = []
            for epoch in sorted(self._epochs, reverse=True):
                idx = self._epochs[epoch][2].get(pid)
                if idx is not None and idx not in out:
                    out.append(idx)
            return out

    # -- media -------------------------------------------------------------
    def encrypt(self, kind: FrameKind, frame: bytes) -> bytes | None:
        """Protect one encoded frame; ``None`` = do not send (no key, counter exhausted)."""
        with self._lock:
            self._retire_due()
            if self.send_expired:
                self.counters["expired"] += 1
                return None
        if not frame:
            return b""
        try:
            out = self.encryptor.protect(kind, frame)
        except SFrameError:
            with self._lock:
                self.counters["dropped"] += 1
            return None
        with self._lock:
            self.counters["encrypted"] += 1
        return out

    def decrypt(self, kind: FrameKind, data: bytes, from_idx: int | None) -> bytes | None:
        """Unprotect one frame from sender ``from_idx``; ``None`` = drop it (never pass ciphertext on)."""
        with self._lock:
            self._retire_due()
        if not data:
            return b""
        out = self.decryptor.unprotect(kind, data, from_idx)
        with self._lock:
            self.counters["decrypted" if out is not None else "failed"] += 1
        return out

    def decrypt_from(self, kind: FrameKind, data: bytes, pid: str) -> bytes | None:
        """Like :meth:`decrypt`, with the sender given by pid (looked up in the signed rosters)."""
        with self._lock:
            self._retire_due()
        idxs = self._indices_of(pid)
        if not idxs:
            with self._lock:
                self.counters["failed"] += 1
            return None
        for i, idx in enumerate(idxs):
            if i + 1 < len(idxs):
                out = self.decryptor.unprotect(kind, data, idx)
                if out is not None:
                    with self._lock:
                        self.counters["decrypted"] += 1
                    return out
            else:
                return self.decrypt(kind, data, idx)
        return None  # pragma: no cover


# ---------------------------------------------------------------------------
# App messages (chat, safety, state, …): sealed under the epoch, signed by the sender
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AppMessage:
    """A verified, decrypted app message: who sent it (signed roster), its body, and whether it was private."""

    from_pid: str
    body: dict[str, Any]
    private: bool


def app_epoch_of(data: str) -> int | None:
    """The epoch an ``app.data`` claims (unverified: only to decide whether to wait for it), or None."""
    try:
        _, _, payload, _ = _parse_envelope(data)
        return _int_field(payload, "epoch")
    except SecurityCheckFailed:
        return None


class AppHold:
    """App messages under an epoch this participant does not hold yet, waiting for it: at most ``limit`` of them,
    each at most ``seconds``; ``now`` (seconds, any monotonic clock) always comes from the caller."""

    def __init__(self, limit: int = APP_HOLD_MAX, seconds: float = APP_HOLD_SECONDS) -> None:
        self.limit = limit
        self.seconds = seconds
        self._held: list[tuple[float, str, str]] = []  # (deadline, from pid, data), in arrival order

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, from_pid: str, data: str, now: float) -> bool:
        """Hold one; False (not held: refuse it) when ``limit`` are already waiting."""
        if len(self._held) >= self.limit:
            return False
        self._held.append((now + self.seconds, from_pid, data))
        return True

    def release(self, still_early: Callable[[str], bool]) -> list[tuple[str, str]]:
        """Remove and return, in arrival order, every held ``(from pid, data)`` whose epoch is not ``still_early``
        (it came, or it is older now): the caller opens or ignores them as it would have on arrival."""
        out = [(f, d) for _, f, d in self._held if not still_early(d)]
        self._held = [h for h in self._held if still_early(h[2])]
        return out

    def expired(self, now: float) -> list[tuple[str, str]]:
        """The messages whose time is up (removed), in arrival order."""
        out = [(f, d) for t, f, d in self._held if t <= now]
        self._held = [h for h in self._held if h[0] > now]
        return out

    def next_deadline(self) -> float | None:
        return min((t for t, _, _ in self._held), default=None)


def _epoch4(epoch: int) -> bytes:
    return epoch.to_bytes(4, "big")


def app_group_key(secret: bytes, room: str, epoch: int) -> bytes:
    """``HKDF(E_n, salt="alcove-e2ee v1", info="alcove-e2ee app" ‖ room ‖ n (4 bytes BE), 32)``: AES-256-GCM."""
    return _hkdf(secret, _SALT, _APP_INFO + room.encode("utf-8") + _epoch4(epoch), 32)


def app_private_key(pairwise: bytes, room: str, epoch: int, pid: str) -> bytes:
    """``HKDF(P_{n,c}, salt, info="alcove-e2ee app private" ‖ room ‖ 0x00 ‖ client pid ‖ n (4 bytes BE), 32)``."""
    return _hkdf(pairwise, _SALT, _APP_PRIVATE_INFO + room.encode("utf-8") + b"\0" + pid.encode("utf-8")
                 + _epoch4(epoch), 32)


def _app_aad(room: str, from_pid: str, to: str | None, epoch: int, seq: int) -> bytes:
    return f"alcove-e2ee app v1|{room}|{from_pid}|{to or ''}|{epoch}|{seq}".encode()


@dataclass
class _AppEpoch:
    group: bytes  # the key of messages to everyone
    private: dict[str, bytes]  # client pid -> the key of its private messages with the therapist
    members: frozenset[str]  # the pids of this epoch's signed roster (therapist included)


class _AppChannel:
    """App messages over the epochs (docs/security.md §10): shared by :class:`TherapistKeys` and :class:`ClientKeys`.

    Sealed with AES-256-GCM under a key derived from the epoch secret (to everyone) or from the client's pairwise
    secret of that epoch (therapist ↔ one client), signed by the sender's identity key over the exact bytes of the
    payload, with a sequence number per sender and epoch against replay. Accepted under any epoch the key state
    still holds (the previous one during its decrypt-only window).
    """

    room: str
    ik: ec.EllipticCurvePrivateKey
    keystate: KeyState

    def _app_init(self) -> None:
        self.app_epochs: dict[int, _AppEpoch] = {}
        self._app_seq = 0
        self._app_last: dict[tuple[str, int], int] = {}
        self._app_since: int | None = None
        """The first epoch with app keys since this participant became a member (admission / first epoch)."""
        self._app_newest = -1

    def _app_add(self, epoch: int, keys: _AppEpoch) -> None:
        self.app_epochs[epoch] = keys
        if self._app_since is None:
            self._app_since = epoch
        self._app_newest = max(self._app_newest, epoch)

    def _app_clear(self) -> None:
        """No member any more (sent back): every app key is gone, and the next membership starts afresh."""
        self.app_epochs.clear()
        self._app_last.clear()
        self._app_since = None
        self._app_newest = -1

    def app_disposition(self, epoch: int) -> Literal["open", "hold", "ignore"]:
        """What to do with an app message claiming ``epoch`` (unverified): ``open`` it now (verified there, and
        refused when no key of that epoch is held any more), ``hold`` it for an epoch not received yet (newer than
        every one this participant has, or none yet since its admission), or ``ignore`` it: sent under an epoch
        older than this participant's membership, before it was a member (no key, nothing to show)."""
        if epoch in self._app_live():
            return "open"
        if self._app_since is None or epoch > self._app_newest:
            return "hold"
        if epoch < self._app_since:
            return "ignore"
        return "open"

    # -- hooks of the two roles ---------------------------------------------------
    @property
    def _me(self) -> str | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _app_signer(self, pid: str, epoch: _AppEpoch) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def _app_private_peer(self, from_pid: str) -> str:  # pragma: no cover - overridden
        """The client pid whose pairwise key protects a private message from ``from_pid`` to us."""
        raise NotImplementedError

    def _app_send_private(self, to: str) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------
    def _app_live(self) -> dict[int, _AppEpoch]:
        live = set(self.keystate.epochs())
        for epoch in [e for e in self.app_epochs if e not in live]:
            del self.app_epochs[epoch]
        for key in [k for k in self._app_last if k[1] not in live]:
            del self._app_last[key]
        return self.app_epochs

    def can_send_app(self) -> bool:
        """True when there is a sending epoch with app keys (a key to send with)."""
        epoch = self.keystate.send_epoch
        return epoch is not None and not self.keystate.expire_due() and epoch in self._app_live()

    def make_app(self, body: Mapping[str, Any], to: str | None = None) -> str | None:
        """The ``app.data`` for ``body`` (a JSON object with a string ``k``), or None without a key yet.

        ``to``: None (everyone admitted) or one pid (the therapist: a client of the epoch; a client: the therapist).
        Raises ValueError for a body that is not an object with ``k``, over :data:`APP_MAX_BODY`, or a ``to``
        this role may not send to privately.
        """
        if not isinstance(body, Mapping) or not isinstance(body.get("k"), str):
            raise ValueError("an app message body is a JSON object with a string k")
        plain = _dumps(dict(body)).encode("utf-8")
        if len(plain) > APP_MAX_BODY:
            raise ValueError(f"an app message body has at most {APP_MAX_BODY} bytes")
        me = self._me
        if me is None or not self.can_send_app():
            return None
        epoch = self.keystate.send_epoch
        assert epoch is not None
        keys = self.app_epochs[epoch]
        key = keys.group if to is None else keys.private.get(self._app_send_private(to))
        if key is None:
            raise ValueError("no private key for that participant in this epoch")
        self._app_seq += 1
        seq = self._app_seq
        iv = os.urandom(12)
        ct = AESGCM(key).encrypt(iv, plain, _app_aad(self.room, me, to, epoch, seq))
        payload = {"v": PROTOCOL_VERSION, "t": "app", "room": self.room, "from": me, "to": to, "epoch": epoch,
                   "seq": seq, "iv": b64e(iv), "ct": b64e(ct)}
        return _dumps(_envelope(self.ik, payload))

    def open_app(self, from_pid: str, data: str) -> AppMessage:
        """Verify and decrypt an ``app`` message the server relayed ``from_pid``; raises SecurityCheckFailed.

        Refused: malformed, another room, a sender other than the relayed one or outside the signed roster, a bad
        signature, an epoch we hold no key of (too old, retired, expired), a replay, a private message for someone
        else or between two clients, a ciphertext that does not decrypt, a body that is not an object with ``k``.
        """
        p, sig, payload, _ = _parse_envelope(data)
        if payload.get("v") != PROTOCOL_VERSION or payload.get("room") != self.room or payload.get("t") != "app":
            raise SecurityCheckFailed("wrong version, room or kind for app")
        sender = payload.get("from")
        if sender != from_pid or not isinstance(sender, str):
            raise SecurityCheckFailed("app message signed for another sender")
        epoch = _int_field(payload, "epoch")
        seq = _int_field(payload, "seq")
        to = payload.get("to")
        if to is not None and not isinstance(to, str):
            raise SecurityCheckFailed("bad field to")
        keys = self._app_live().get(epoch)
        if keys is None:
            raise SecurityCheckFailed("app message under an epoch without a key")
        if sender not in keys.members:
            raise SecurityCheckFailed("app message from outside the signed roster")
        if not _verify(self._app_signer(sender, keys), sig, p.encode("utf-8")):
            raise SecurityCheckFailed("bad signature on app")
        if seq <= self._app_last.get((sender, epoch), 0):
            raise SecurityCheckFailed("replayed app message")
        if to is None:
            key = keys.group
        else:
            if to != self._me:
                raise SecurityCheckFailed("private app message for someone else")
            key = keys.private.get(self._app_private_peer(sender), b"")
        iv = _b64field(payload, "iv", 12)
        ct = _b64field(payload, "ct")
        try:
            plain = AESGCM(key).decrypt(iv, ct, _app_aad(self.room, sender, to, epoch, seq))
            body = json.loads(plain.decode("utf-8"))
        except Exception:  # InvalidTag, a missing key (ValueError), bad UTF-8 or JSON
            raise SecurityCheckFailed("app message does not decrypt") from None
        if not isinstance(body, dict) or not isinstance(body.get("k"), str):
            raise SecurityCheckFailed("malformed app message")
        self._app_last[(sender, epoch)] = seq
        return AppMessage(sender, body, to is not None)


# ---------------------------------------------------------------------------
# Therapist side
# ---------------------------------------------------------------------------


@dataclass
class IntroInfo:
    """A verified intro (the MAC is reported, not enforced: the UI shows it)."""

    ik: bytes
    dk: bytes
    commit: bytes
    ts: int
    mac_ok: bool | None  # None: the therapist has no link secret for this room


@dataclass
class _Member:
    intro: IntroInfo
    n_t: bytes | None = None  # set by the therapist's own Admit (make_grant)
    n_c: bytes | None = None  # set once the reveal verified
    sas: SAS | None = None
    last_sdp_seq: int = -1
    dk: bytes = b""  # the HPKE public key the next epoch is wrapped to (the intro's, then each ack's)
    ack_epoch: int = -1  # the newest epoch whose ack brought ``dk``

    def __post_init__(self) -> None:
        if not self.dk:
            self.dk = self.intro.dk

    @property
    def keyable(self) -> bool:
        """Granted by the therapist's Admit and its reveal verified: only then it gets epoch keys."""
        return self.n_t is not None and self.n_c is not None


@dataclass
class EpochResult:
    epoch: int
    message: str  # the signed epoch envelope (send as key data with to: null)
    roster: dict[str, int]  # pid -> idx
    waiting_acks: set[str] = field(default_factory=set)
    started: float = 0.0
    issued_at: int = 0  # ms since the Unix epoch (signed)
    expires_at: int = 0  # ms since the Unix epoch (signed)


def _check_intro(room: str, intro: str | Mapping[str, Any], s_link: bytes | None) -> IntroInfo:
    payload, env = _open(intro, room, "intro", None)
    ik = _b64field(payload, "ik", 65)
    dk = _b64field(payload, "dk", 65)
    _load_pub(dk)
    commit = _b64field(payload, "commit", 32)
    ts = _int_field(payload, "ts")
    mac_ok: bool | None = None
    if s_link is not None:
        mac = env.get("mac")
        try:
            mac_b = b64d(mac) if isinstance(mac, str) else b""
        except ValueError:
            mac_b = b""
        want = hmac.new(k_auth(s_link, room), env["p"].encode("utf-8"), hashlib.sha256).digest()
        mac_ok = hmac.compare_digest(mac_b, want)
    return IntroInfo(ik, dk, commit, ts, mac_ok)


class TherapistKeys(_AppChannel):
    """The key authority: IK_T, grants, reveals, epochs, switches, signed SDP and app messages for the therapist."""

    def __init__(
        self,
        room: str,
        pid: str,
        ik: ec.EllipticCurvePrivateKey | None = None,
        *,
        s_link: bytes | None = None,
        first_epoch: int | None = None,
        keystate: KeyState | None = None,
        epoch_lifetime_ms: int = EPOCH_LIFETIME_MS,
    ) -> None:
        self.room = room
        self.pid = pid
        self.epoch_lifetime_ms = epoch_lifetime_ms
        self.ik = ik if ik is not None else ec.generate_private_key(ec.SECP256R1())
        self.ik_raw = pub_raw(self.ik)
        self.tk = tk_of(self.ik_raw)
        self.s_link = s_link
        self.keystate = keystate if keystate is not None else KeyState()
        self.members: dict[str, _Member] = {}
        self.frozen: dict[str, bytes] = {}
        """pid -> the IK_P the therapist granted in this session (frozen: a new key is a new person)."""
        self.newcomers: dict[str, IntroInfo] = {}
        """pid -> a new person's verified intro for a granted pid, waiting for a new Admit."""
        self._last_dk: dict[str, tuple[bytes, int]] = {}  # pid -> (dk, ack_epoch) of a forgotten member
        # Epoch numbers must grow across therapist reloads: start at the Unix time in seconds.
        self._next_epoch = first_epoch if first_epoch is not None else max(1, int(time.time()))
        self._indices: dict[str, int] = {}
        self.pending: EpochResult | None = None
        self.current: EpochResult | None = None
        self._sdp_seq: dict[str, int] = {}
        self._app_init()

    # -- app messages (docs/security.md §10) ------------------------------------
    @property
    def _me(self) -> str | None:
        return self.pid

    def _app_signer(self, pid: str, epoch: _AppEpoch) -> bytes:
        member = self.members.get(pid)
        if member is None or not member.keyable:
            raise SecurityCheckFailed("app message from a client this therapist does not key")
        return member.intro.ik

    def _app_private_peer(self, from_pid: str) -> str:
        return from_pid

    def _app_send_private(self, to: str) -> str:
        return to

    # -- admission ---------------------------------------------------------
    def check_intro(self, pid: str, intro: str | Mapping[str, Any]) -> IntroInfo:
        """Verify a waiting client's intro (from the ``queue``) and remember it for ``pid``.

        The server's queue is only a hint: a pid the therapist granted keeps its identity key for the session.
        A different key for it raises :class:`NewPerson` (kept in :attr:`newcomers`; only a new Admit lets it
        in). A pid not granted yet may change its intro (a reload in the waiting room).
        """
        info = _check_intro(self.room, intro, self.s_link)
        frozen = self.frozen.get(pid)
        if frozen is not None and frozen != info.ik:
            self.newcomers[pid] = info
            raise NewPerson(f"a new person with the seat of {pid}: needs a new Admit")
        old = self.members.get(pid)
        if old is None or (old.n_t is None and old.intro != info):
            member = _Member(info)
            if frozen is not None and pid in self._last_dk:
                # the same person again (sent back, then in the queue): its newest HPKE key, not the intro's
                member.dk, member.ack_epoch = self._last_dk[pid]
            self.members[pid] = member
        self.newcomers.pop(pid, None)
        return info

    def make_grant(self, pid: str) -> str:
        """The ``admit.grant`` for ``pid`` (after :meth:`check_intro`): the therapist's Admit.

        For a pid in :attr:`newcomers` this is the new Admit of that new person: it replaces the identity
        granted before (which gets no key from now on).
        """
        newcomer = self.newcomers.pop(pid, None)
        if newcomer is not None:
            self.members[pid] = _Member(newcomer)
        member = self.members.get(pid)
        if member is None:
            raise SecurityCheckFailed("no verified intro for this client")
        if self.frozen.get(pid) != member.intro.ik:
            self._last_dk.pop(pid, None)
        self.frozen[pid] = member.intro.ik
        member.n_t = os.urandom(16)
        member.n_c = None
        member.sas = None
        payload = {
            "v": PROTOCOL_VERSION,
            "t": "grant",
            "room": self.room,
            "pid": pid,
            "ik_t": b64e(self.ik_raw),
            "n_t": b64e(member.n_t),
            "ts": _now_ms(),
        }
        return _dumps(_envelope(self.ik, payload))

    def check_reveal(self, pid: str, data: str | Mapping[str, Any]) -> SAS:
        """Verify the client's reveal (``key`` from ``pid``); returns the SAS to show."""
        member = self.members.get(pid)
        if member is None or member.n_t is None:
            raise SecurityCheckFailed("reveal without grant")
        payload, _ = _open(data, self.room, "reveal", member.intro.ik)
        if payload.get("pid") != pid:
            raise SecurityCheckFailed("reveal for another client")
        n_c = _b64field(payload, "n_c", 16)
        if not hmac.compare_digest(_sha256(n_c + member.intro.ik), member.intro.commit):
            raise SecurityCheckFailed("commitment mismatch")
        member.n_c = n_c
        member.sas = sas(member.intro.ik, self.ik_raw, n_c, member.n_t, self.room)
        return member.sas

    def forget(self, pid: str) -> None:
        """Drop a removed client (the next epoch will not include it).

        Its frozen identity stays: the same person comes back through the waiting room and a new Admit; a
        different key for the pid is a new person (:class:`NewPerson`).
        """
        member = self.members.pop(pid, None)
        if member is not None and self.frozen.get(pid) == member.intro.ik:
            self._last_dk[pid] = (member.dk, member.ack_epoch)
        self.newcomers.pop(pid, None)
        self._indices.pop(pid, None)
        # _sdp_seq is kept: a client sent back and admitted again keeps its ClientKeys, whose "last seq seen
        # from the therapist" must keep growing (otherwise our next offer/answer looks replayed to it).

    # -- therapist return (page reload) --------------------------------------
    def export_state(self) -> str:
        """Public session state to keep across a therapist reload (no secrets: keys are public halves).

        Store it locally (never on the server); after the reload, :meth:`import_state` it into a new
        TherapistKeys with the same IK_T and issue a new epoch to everyone still admitted.
        """
        members = {
            pid: {
                "ik": b64e(m.intro.ik),
                "dk": b64e(m.intro.dk),
                "commit": b64e(m.intro.commit),
                "ts": m.intro.ts,
                "mac_ok": m.intro.mac_ok,
                "n_t": b64e(m.n_t) if m.n_t is not None else None,
                "n_c": b64e(m.n_c) if m.n_c is not None else None,
                "dk_next": b64e(m.dk),
                "ack_epoch": m.ack_epoch,
            }
            for pid, m in self.members.items()
        }
        state = {
            "v": PROTOCOL_VERSION,
            "room": self.room,
            "ik_t": b64e(self.ik_raw),
            "next_epoch": self._next_epoch,
            "indices": dict(self._indices),
            "members": members,
            "frozen": {pid: b64e(ik) for pid, ik in self.frozen.items()},
            "last_dk": {pid: [b64e(dk), n] for pid, (dk, n) in self._last_dk.items()},
        }
        return _dumps(state)

    def import_state(self, data: str) -> None:
        """Restore :meth:`export_state` output (same room and IK_T only)."""
        try:
            state = json.loads(data)
            if (
                state["v"] != PROTOCOL_VERSION
                or state["room"] != self.room
                or b64d(state["ik_t"]) != self.ik_raw
            ):
                raise ValueError("state of another room or identity")
            for pid, m in state["members"].items():
                info = IntroInfo(b64d(m["ik"]), b64d(m["dk"]), b64d(m["commit"]), int(m["ts"]), m["mac_ok"])
                member = _Member(info)
                member.n_t = b64d(m["n_t"]) if m["n_t"] else None
                member.n_c = b64d(m["n_c"]) if m["n_c"] else None
                member.dk = b64d(m["dk_next"])
                _load_pub(member.dk)
                member.ack_epoch = int(m["ack_epoch"])
                if member.n_t is not None and member.n_c is not None:
                    member.sas = sas(info.ik, self.ik_raw, member.n_c, member.n_t, self.room)
                self.members[str(pid)] = member
            self._indices.update({str(k): int(v) for k, v in state["indices"].items()})
            self.frozen.update({str(k): b64d(v) for k, v in state["frozen"].items()})
            self._last_dk.update({str(k): (b64d(v[0]), int(v[1])) for k, v in state["last_dk"].items()})
            self._next_epoch = max(self._next_epoch, int(state["next_epoch"]))
        except (KeyError, TypeError, ValueError, AttributeError, SecurityCheckFailed) as e:
            raise ValueError(f"bad therapist state: {e}") from None

    # -- epochs --------------------------------------------------------------
    def _assign(self, pids: list[str]) -> dict[str, int]:
        for pid in list(self._indices):
            if pid not in pids:
                del self._indices[pid]
        used = set(self._indices.values())
        for pid in pids:
            if pid not in self._indices:
                free = next((i for i in range(1, MAX_MEMBERS) if i not in used), None)
                if free is None:
                    raise ValueError("too many members for one epoch")
                self._indices[pid] = free
                used.add(free)
        return {pid: self._indices[pid] for pid in pids}

    def keyable(self, pid: str) -> bool:
        """True when ``pid`` was granted by the therapist's Admit and its reveal verified."""
        member = self.members.get(pid)
        return member is not None and member.keyable

    def make_epoch(
        self,
        pids: Iterable[str],
        names: Mapping[str, str] | None = None,
        *,
        now_ms: int | None = None,
    ) -> EpochResult:
        """A new epoch for the granted clients ``pids`` (everyone else gets no key).

        Every pid must have been granted by :meth:`make_grant` and its reveal verified
        (:meth:`keyable`), whatever the server's roster says. ``names`` (pid -> display name as the
        therapist's console knows them, the therapist's own under its pid) go into the signed roster.
        Installs it decrypt-only in :attr:`keystate`; send ``result.message`` as ``key`` data with
        ``to: null``, collect acks, then :meth:`make_switch`.
        """
        members = list(dict.fromkeys(pids))
        for pid in members:
            if not self.keyable(pid):
                raise SecurityCheckFailed(f"not granted by the therapist: {pid}")
        names = names or {}
        epoch = self._next_epoch
        self._next_epoch += 1
        secret = os.urandom(_SECRET_LEN)
        pairwise = {pid: os.urandom(_SECRET_LEN) for pid in members}
        idx = self._assign(members)
        roster = [{"pid": self.pid, "ik": b64e(self.ik_raw), "idx": 0, "name": _name(names.get(self.pid))}] + [
            {"pid": pid, "ik": b64e(self.members[pid].intro.ik), "idx": idx[pid], "name": _name(names.get(pid))}
            for pid in members
        ]
        info = _epoch_info(self.room, epoch)
        # Each slot carries E_n ‖ P_{n,c}: the epoch secret and this client's pairwise secret (private messages).
        wrapped = {pid: b64e(_HPKE.encrypt(secret + pairwise[pid], _load_pub(self.members[pid].dk), info=info))
                   for pid in members}
        issued_at = _now_ms() if now_ms is None else now_ms
        expires_at = issued_at + self.epoch_lifetime_ms
        payload = {
            "v": PROTOCOL_VERSION,
            "t": "epoch",
            "room": self.room,
            "epoch": epoch,
            "roster": roster,
            "issued_at": issued_at,
            "expires_at": expires_at,
            "wrapped": wrapped,
        }
        result = EpochResult(
            epoch,
            _dumps(_envelope(self.ik, payload)),
            {self.pid: 0, **idx},
            set(members),
            time.monotonic(),
            issued_at,
            expires_at,
        )
        self.keystate.install(epoch, epoch_base_key(secret, self.room), result.roster, 0, expires_at)
        self._app_add(epoch, _AppEpoch(
            app_group_key(secret, self.room, epoch),
            {pid: app_private_key(pairwise[pid], self.room, epoch, pid) for pid in members},
            frozenset(result.roster),
        ))
        self.pending = result
        return result

    def rekey_due(self, now_ms: int | None = None) -> bool:
        """True when the current epoch is older than :data:`REKEY_AFTER_MS` (scaled to the lifetime).

        Never while an epoch is pending (waiting for acks or the switch timeout): withheld acks cannot keep the
        therapist from ever switching by having the timer replace the pending epoch again and again.
        """
        if self.pending is not None:
            return False
        cur = self.current
        if cur is None:
            return False
        now = _now_ms() if now_ms is None else now_ms
        return now - cur.issued_at >= self.epoch_lifetime_ms * REKEY_AFTER_MS // EPOCH_LIFETIME_MS

    def check_ack(self, pid: str, data: str | Mapping[str, Any]) -> bool:
        """Verify an ack; True once every member of the pending epoch has acked."""
        member = self.members.get(pid)
        if member is None:
            raise SecurityCheckFailed("ack from an unknown client")
        payload, _ = _open(data, self.room, "ack", member.intro.ik)
        if payload.get("pid") != pid:
            raise SecurityCheckFailed("ack for another client")
        epoch = _int_field(payload, "epoch")
        dk_next = _b64field(payload, "dk", 65)
        _load_pub(dk_next)
        issued = {r.epoch for r in (self.pending, self.current) if r is not None}
        if epoch in issued and epoch > member.ack_epoch:
            member.dk, member.ack_epoch = dk_next, epoch  # the next epoch is wrapped to the new key
        if self.pending is None or epoch != self.pending.epoch:
            return False  # a late ack for an older epoch: ignore
        self.pending.waiting_acks.discard(pid)
        return not self.pending.waiting_acks

    def switch_due(self, now: float | None = None) -> bool:
        """True when the pending epoch should be switched to (all acks, or 1.5 s passed)."""
        if self.pending is None:
            return False
        t = time.monotonic() if now is None else now
        return not self.pending.waiting_acks or t - self.pending.started >= SWITCH_TIMEOUT

    def make_switch(self) -> str:
        """The signed switch for the pending epoch (key data, ``to: null``); switches our own sender."""
        if self.pending is None:
            raise ValueError("no pending epoch")
        epoch = self.pending.epoch
        payload = {"v": PROTOCOL_VERSION, "t": "switch", "room": self.room, "epoch": epoch, "ts": _now_ms()}
        self.current, self.pending = self.pending, None
        self.keystate.switch(epoch)
        return _dumps(_envelope(self.ik, payload))

    def handle_key(self, from_pid: str, data: str) -> SAS | bool | None:
        """Dispatch a ``key`` message from a client: reveal -> SAS, ack -> all-acked flag."""
        kind = message_kind(data)
        if kind == "reveal":
            return self.check_reveal(from_pid, data)
        if kind == "ack":
            return self.check_ack(from_pid, data)
        raise SecurityCheckFailed("unexpected key message")

    # -- SDP -----------------------------------------------------------------
    @property
    def epoch(self) -> int:
        cur = self.current or self.pending
        return cur.epoch if cur is not None else 0

    def sign_sdp(self, to_pid: str, sdp_type: str, sdp: str) -> str:
        seq = self._sdp_seq.get(to_pid, 0) + 1
        self._sdp_seq[to_pid] = seq
        return sign_sdp(
            self.ik,
            room=self.room,
            from_pid=self.pid,
            to_pid=to_pid,
            epoch=self.epoch,
            sdp_type=sdp_type,
            seq=seq,
            sdp=sdp,
        )

    def verify_sdp(self, from_pid: str, sdp_type: str, sdp: str, sig: str | None) -> None:
        """Verify a client's offer/answer with the IK_P from its intro; raises SecurityCheckFailed."""
        member = self.members.get(from_pid)
        if member is None:
            raise SecurityCheckFailed("SDP from an unknown client")
        if member.n_t is None:
            raise SecurityCheckFailed("SDP from a client this therapist did not admit")
        payload = verify_sdp(
            sig,
            sdp,
            ik=member.intro.ik,
            room=self.room,
            from_pid=from_pid,
            to_pid=self.pid,
            sdp_type=sdp_type,
            last_seq=member.last_sdp_seq,
        )
        member.last_sdp_seq = payload["seq"]


def _name(value: str | None) -> str:
    return (value or "")[:MAX_NAME]


def _epoch_info(room: str, epoch: int) -> bytes:
    return _EPOCH_INFO + room.encode("utf-8") + epoch.to_bytes(4, "big")


def unwrap_any(data: str | Mapping[str, Any], room: str,
               private_keys: Iterable[ec.EllipticCurvePrivateKey]) -> bytes | None:
    """What an outsider can open of an epoch message: every wrapped slot tried with every key (no checks).

    The epoch secret, or None. For probes and tests (a ghost must open nothing); never used to accept an epoch.
    """
    try:
        _, _, payload, _ = _parse_envelope(data)
        epoch = _int_field(payload, "epoch")
        wrapped = payload.get("wrapped")
        slots = [b64d(v) for v in wrapped.values()] if isinstance(wrapped, dict) else []
    except (SecurityCheckFailed, ValueError, TypeError):
        return None
    if epoch >= 1 << 32:
        return None
    info = _epoch_info(room, epoch)
    for key in private_keys:
        for sealed in slots:
            try:
                return _HPKE.decrypt(sealed, key, info=info)
            except Exception:  # any failure means "cannot open"
                continue
    return None


# ---------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------


class ClientKeys(_AppChannel):
    """A client's ephemeral keys and its view of the therapist-signed state."""

    def __init__(
        self,
        room: str,
        link: LinkInfo | None = None,
        *,
        pid: str | None = None,
        keystate: KeyState | None = None,
    ) -> None:
        self.room = room
        self.pid = pid  # set from the server's welcome
        self.link = link
        self.ik = ec.generate_private_key(ec.SECP256R1())
        self.ik_raw = pub_raw(self.ik)
        dk = ec.generate_private_key(ec.SECP256R1())
        self.dk_raw = pub_raw(dk)  # DK_P of the intro (public)
        self.n_c = os.urandom(16)
        self.keystate = keystate if keystate is not None else KeyState()
        self.ik_t: bytes | None = None
        self.n_t: bytes | None = None
        self.therapist_pid: str | None = None
        self.newest_epoch = -1
        # True from a grant (or a return to the waiting room) until an epoch is accepted: an epoch that does not
        # list this client at all then only means the therapist has not keyed it yet (it is ignored, not refused).
        self.awaiting_first_epoch = True
        self.expires_at = 0  # the newest epoch's signed expiry (ms)
        self.roster: dict[str, tuple[bytes, int]] = {}  # pid -> (ik, idx) of the newest epoch
        self.names: dict[str, str] = {}  # pid -> display name, from the newest signed roster
        # The HPKE keys announced to the therapist (the intro's, then one per ack), oldest first. Older ones
        # are erased as soon as an epoch unwraps with a newer one.
        self.hpke_keys: list[tuple[bytes, ec.EllipticCurvePrivateKey]] = [(self.dk_raw, dk)]
        self._sdp_seq: dict[str, int] = {}
        self._last_seq: dict[str, int] = {}
        self._app_init()

    # -- app messages (docs/security.md §10) ------------------------------------
    @property
    def _me(self) -> str | None:
        return self.pid

    def _app_signer(self, pid: str, epoch: _AppEpoch) -> bytes:
        entry = self.roster.get(pid)  # the newest signed roster
        if entry is None:
            raise SecurityCheckFailed("app message from outside the signed roster")
        return entry[0]

    def _app_private_peer(self, from_pid: str) -> str:
        if from_pid != self.therapist_pid or self.pid is None:
            raise SecurityCheckFailed("private app message from another client")
        return self.pid

    def _app_send_private(self, to: str) -> str:
        if to != self.therapist_pid or self.pid is None:
            raise ValueError("a client sends private app messages to the therapist only")
        return self.pid

    def make_intro(self) -> str:
        """The ``hello.intro`` string."""
        payload = {
            "v": PROTOCOL_VERSION,
            "t": "intro",
            "room": self.room,
            "ik": b64e(self.ik_raw),
            "dk": b64e(self.hpke_keys[-1][0]),
            "commit": b64e(_sha256(self.n_c + self.ik_raw)),
            "ts": _now_ms(),
        }
        env = _envelope(self.ik, payload)
        s = self.link.s_link if self.link is not None else None
        env["mac"] = (
            b64e(hmac.new(k_auth(s, self.room), env["p"].encode("utf-8"), hashlib.sha256).digest())
            if s is not None
            else None
        )
        return _dumps(env)

    def check_grant(self, grant: str | Mapping[str, Any] | None, pid: str | None = None) -> None:
        """Verify the ``admitted.grant``; raises :class:`SecurityCheckFailed`."""
        if pid is not None:
            self.pid = pid
        if grant is None:
            raise SecurityCheckFailed("no grant")
        _, _, unverified, _ = _parse_envelope(grant)
        ik_t = _b64field(unverified, "ik_t", 65)
        payload, _ = _open(grant, self.room, "grant", ik_t)
        if self.link is not None and self.link.tk is not None:
            if not hmac.compare_digest(tk_of(ik_t), self.link.tk):
                raise SecurityCheckFailed("therapist key does not match the link")
        if self.ik_t is not None and self.ik_t != ik_t:
            raise SecurityCheckFailed("therapist key changed")
        if self.pid is None or payload.get("pid") != self.pid:
            raise SecurityCheckFailed("grant for another client")
        self.ik_t = ik_t
        self.n_t = _b64field(payload, "n_t", 16)
        self.awaiting_first_epoch = True

    def make_reveal(self) -> str:
        if self.n_t is None:
            raise ValueError("no grant yet")
        payload = {
            "v": PROTOCOL_VERSION,
            "t": "reveal",
            "room": self.room,
            "pid": self.pid,
            "n_c": b64e(self.n_c),
        }
        return _dumps(_envelope(self.ik, payload))

    def sas(self) -> SAS:
        if self.ik_t is None or self.n_t is None:
            raise ValueError("no grant yet")
        return sas(self.ik_raw, self.ik_t, self.n_c, self.n_t, self.room)

    def accept_epoch(self, data: str | Mapping[str, Any], now_ms: int | None = None) -> str | None:
        """Install a therapist-signed epoch; returns the ack to send, or None if it is old (ignored).

        Raises :class:`SecurityCheckFailed` for forged, malformed or expired epochs, or
        when this client is not in it (removed).  ``now_ms``: this client's clock.
        """
        if self.ik_t is None:
            raise SecurityCheckFailed("epoch before grant")
        payload, _ = _open(data, self.room, "epoch", self.ik_t)
        epoch = _int_field(payload, "epoch")
        if epoch <= self.newest_epoch:
            return None
        if epoch >= 1 << 32:
            raise SecurityCheckFailed("epoch out of range")
        now = _now_ms() if now_ms is None else now_ms
        expires_at = _int_field(payload, "expires_at")
        if expires_at <= now:
            raise SecurityCheckFailed("expired epoch")
        if expires_at > now + MAX_EPOCH_AHEAD_MS:
            raise SecurityCheckFailed("epoch valid for too long")
        roster_in = payload.get("roster")
        wrapped = payload.get("wrapped")
        if not isinstance(roster_in, list) or not isinstance(wrapped, dict):
            raise SecurityCheckFailed("bad epoch")
        roster: dict[str, tuple[bytes, int]] = {}
        names: dict[str, str] = {}
        seen_idx: set[int] = set()
        therapist_pid: str | None = None
        for entry in roster_in:
            if not isinstance(entry, dict):
                raise SecurityCheckFailed("bad roster")
            pid = _str_field(entry, "pid")
            ik = _b64field(entry, "ik", 65)
            idx = _int_field(entry, "idx")
            name = entry.get("name")
            if idx >= MAX_MEMBERS or idx in seen_idx or pid in roster or not isinstance(name, str):
                raise SecurityCheckFailed("bad roster")
            seen_idx.add(idx)
            roster[pid] = (ik, idx)
            names[pid] = name
            if idx == 0:
                if ik != self.ik_t:
                    raise SecurityCheckFailed("roster names another therapist key")
                therapist_pid = pid
        if therapist_pid is None:
            raise SecurityCheckFailed("roster without therapist")
        if self.pid not in roster and self.awaiting_first_epoch:
            return None  # not keyed yet (admitted a moment ago, reveal not seen): not for us, not an attack
        if (
            self.pid not in roster
            or roster[self.pid][0] != self.ik_raw
            or not isinstance(wrapped.get(self.pid), str)
        ):
            raise SecurityCheckFailed("not a member of this epoch")
        try:
            sealed = b64d(wrapped[self.pid])
        except ValueError:
            raise SecurityCheckFailed("cannot unwrap the epoch key") from None
        secret, used = None, -1
        for i in range(len(self.hpke_keys) - 1, -1, -1):  # newest first
            try:
                secret = _HPKE.decrypt(sealed, self.hpke_keys[i][1], info=_epoch_info(self.room, epoch))
            except Exception:
                continue
            used = i
            break
        if secret is None:
            raise SecurityCheckFailed("cannot unwrap the epoch key")
        if len(secret) != 2 * _SECRET_LEN:
            raise SecurityCheckFailed("bad epoch key")
        secret, pairwise = secret[:_SECRET_LEN], secret[_SECRET_LEN:]
        # Per-epoch HPKE keys: the therapist has the key that worked, so every older one is erased; the ack
        # announces a fresh one for the next epoch.
        del self.hpke_keys[:used]
        nxt = ec.generate_private_key(ec.SECP256R1())
        self.hpke_keys.append((pub_raw(nxt), nxt))
        del self.hpke_keys[:-MAX_HPKE_KEYS]
        self.newest_epoch = epoch
        self.awaiting_first_epoch = False
        self.expires_at = expires_at
        self.roster = roster
        self.names = names
        self.therapist_pid = therapist_pid
        self.keystate.install(
            epoch,
            epoch_base_key(secret, self.room),
            {p: i for p, (_, i) in roster.items()},
            roster[self.pid][1],
            expires_at,
        )
        self._app_add(epoch, _AppEpoch(
            app_group_key(secret, self.room, epoch),
            {self.pid: app_private_key(pairwise, self.room, epoch, self.pid)},
            frozenset(roster),
        ))
        ack = {"v": PROTOCOL_VERSION, "t": "ack", "room": self.room, "pid": self.pid, "epoch": epoch,
               "dk": b64e(self.hpke_keys[-1][0])}
        return _dumps(_envelope(self.ik, ack))

    def sender_of(self, idx: int) -> tuple[str, str] | None:
        """(pid, name) of the signed roster's member with sender index ``idx`` (from a frame's KID)."""
        for pid, (_, i) in self.roster.items():
            if i == idx:
                return pid, self.names.get(pid, "")
        return None

    def accept_switch(self, data: str | Mapping[str, Any]) -> bool:
        """Apply a therapist-signed switch; False if old or for an epoch we do not have."""
        if self.ik_t is None:
            raise SecurityCheckFailed("switch before grant")
        payload, _ = _open(data, self.room, "switch", self.ik_t)
        return self.keystate.switch(_int_field(payload, "epoch"))

    def handle_key(self, data: str, now_ms: int | None = None) -> str | bool | None:
        """Dispatch ``key`` data from the therapist: epoch -> ack string (or None), switch -> bool."""
        kind = message_kind(data)
        if kind == "epoch":
            return self.accept_epoch(data, now_ms)
        if kind == "switch":
            return self.accept_switch(data)
        raise SecurityCheckFailed("unexpected key message")

    def reset(self) -> None:
        """Sent back to the waiting room: forget media and app keys (a re-admission brings a new grant/epoch)."""
        self.keystate.clear()
        self._app_clear()
        self.n_t = None
        self.awaiting_first_epoch = True

    # -- SDP -----------------------------------------------------------------
    def _ik_of(self, pid: str) -> bytes:
        if self.ik_t is not None and pid == self.therapist_pid:
            return self.ik_t
        entry = self.roster.get(pid)
        if entry is not None:
            return entry[0]
        if self.ik_t is not None:
            # Outside the signed roster only the therapist can be a peer: before the first epoch, or back with a
            # new connection (a new pid) before its next epoch. Anyone else's SDP fails this signature check.
            return self.ik_t
        raise SecurityCheckFailed("SDP from a peer outside the signed roster")

    def sign_sdp(self, to_pid: str, sdp_type: str, sdp: str) -> str:
        if self.pid is None:
            raise ValueError("no pid yet")
        seq = self._sdp_seq.get(to_pid, 0) + 1
        self._sdp_seq[to_pid] = seq
        return sign_sdp(
            self.ik,
            room=self.room,
            from_pid=self.pid,
            to_pid=to_pid,
            epoch=max(self.newest_epoch, 0),
            sdp_type=sdp_type,
            seq=seq,
            sdp=sdp,
        )

    def verify_sdp(self, from_pid: str, sdp_type: str, sdp: str, sig: str | None) -> None:
        """Verify an offer/answer from ``from_pid`` (therapist: IK_T from the grant; others: the roster)."""
        if self.pid is None:
            raise SecurityCheckFailed("no pid yet")
        payload = verify_sdp(
            sig,
            sdp,
            ik=self._ik_of(from_pid),
            room=self.room,
            from_pid=from_pid,
            to_pid=self.pid,
            sdp_type=sdp_type,
            last_seq=self._last_seq.get(from_pid, -1),
        )
        self._last_seq[from_pid] = payload["seq"]
