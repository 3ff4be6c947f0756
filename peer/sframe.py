"""SFrame (RFC 9605) for Alcove media frames.

Two layers live here:

* The RFC 9605 layer: header encoding (section 4.3), cipher suites 1-5
  (section 4.5), ``derive_key_salt`` (section 4.4.2) and the low-level
  ``protect``/``unprotect`` that match the RFC's Appendix C vectors.
* The Alcove layer (suite 4, AES_128_GCM_SHA256_128 only): the epoch base
  key, the KID layout, the clear-prefix rule for VP8/Opus frames and the
  thread-safe ``FrameEncryptor``/``FrameDecryptor``.

See ``docs/security.md`` for the rationale.  This module only
depends on ``cryptography`` and must never import aiortc.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

__all__ = [
    "ALCOVE_SUITE",
    "MAX_CTR",
    "MAX_SEND_CTR",
    "REPLAY_WINDOW",
    "CipherSuite",
    "FrameDecryptor",
    "FrameEncryptor",
    "FrameKind",
    "SFrameCounterExhausted",
    "SFrameError",
    "clear_prefix_len",
    "decode_header",
    "derive_key_salt",
    "encode_header",
    "epoch_base_key",
    "make_kid",
    "make_nonce",
    "parse_kid",
    "protect",
    "protect_frame",
    "unprotect",
    "unprotect_frame",
]

FrameKind = Literal["audio", "video"]

MAX_U64: Final = (1 << 64) - 1
MAX_CTR: Final = MAX_U64
#: The Alcove sender refuses to encrypt once CTR reaches this value (asks for a rekey).
MAX_SEND_CTR: Final = 1 << 32
#: Size of the per-KID anti-replay window (frames).
REPLAY_WINDOW: Final = 128
#: The only suite Alcove negotiates (AES_128_GCM_SHA256_128).
ALCOVE_SUITE: Final = 4

STREAM_MIC: Final = 0
STREAM_CAMERA: Final = 1
STREAM_SCREEN_VIDEO: Final = 2
STREAM_SCREEN_AUDIO: Final = 3
_STREAM_KIND: Final[dict[int, FrameKind]] = {
    STREAM_MIC: "audio",
    STREAM_CAMERA: "video",
    STREAM_SCREEN_VIDEO: "video",
    STREAM_SCREEN_AUDIO: "audio",
}
_DEFAULT_STREAM: Final[dict[str, int]] = {"audio": STREAM_MIC, "video": STREAM_CAMERA}

_KEY_LABEL: Final = b"SFrame 1.0 Secret key "
_SALT_LABEL: Final = b"SFrame 1.0 Secret salt "
_BASE_KEY_LABEL: Final = b"SFrame 1.0 Base Key"
_ALCOVE_SALT: Final = b"alcove-e2ee v1"


class SFrameError(Exception):
    """Any SFrame failure: malformed header, bad parameters, authentication failure."""


class SFrameCounterExhausted(SFrameError):
    """The sender's counter reached its limit; a new epoch (rekey) is required."""


# ---------------------------------------------------------------------------
# Header (RFC 9605 section 4.3)
# ---------------------------------------------------------------------------


def _min_len(value: int) -> int:
    return max(1, (value.bit_length() + 7) // 8)


def encode_header(kid: int, ctr: int) -> bytes:
    """Encode an SFrame header with the minimal encoding of ``kid`` and ``ctr``."""
    if not 0 <= kid <= MAX_U64:
        raise SFrameError(f"KID out of range: {kid}")
    if not 0 <= ctr <= MAX_U64:
        raise SFrameError(f"CTR out of range: {ctr}")
    config = 0
    tail = b""
    if kid < 8:
        config |= kid << 4
    else:
        n = _min_len(kid)
        config |= 0x80 | ((n - 1) << 4)
        tail += kid.to_bytes(n, "big")
    if ctr < 8:
        config |= ctr
    else:
        n = _min_len(ctr)
        config |= 0x08 | (n - 1)
        tail += ctr.to_bytes(n, "big")
    return bytes([config]) + tail


def decode_header(data: bytes) -> tuple[int, int, int]:
    """Decode the header at the start of ``data``.

    Returns ``(kid, ctr, header_length)``.  Raises :class:`SFrameError` if the
    data is too short.
    """
    if len(data) < 1:
        raise SFrameError("empty SFrame header")
    config = data[0]
    pos = 1
    if config & 0x80:
        n = ((config >> 4) & 0x07) + 1
        if len(data) < pos + n:
            raise SFrameError("truncated SFrame header (KID)")
        kid = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    else:
        kid = (config >> 4) & 0x07
    if config & 0x08:
        n = (config & 0x07) + 1
        if len(data) < pos + n:
            raise SFrameError("truncated SFrame header (CTR)")
        ctr = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    else:
        ctr = config & 0x07
    return kid, ctr, pos


# ---------------------------------------------------------------------------
# Cipher suites (RFC 9605 section 4.5)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CipherSuite:
    """Parameters of one RFC 9605 cipher suite."""

    suite_id: int
    hash_name: Literal["sha256", "sha512"]
    nk: int  # key length (for CTR+HMAC: enc key || auth key)
    nn: int  # nonce length
    nt: int  # tag length
    ctr_hmac: bool
    enc_key_len: int  # AES key length

    def hash(self) -> hashes.HashAlgorithm:
        return hashes.SHA256() if self.hash_name == "sha256" else hashes.SHA512()

    @property
    def nh(self) -> int:
        return 32 if self.hash_name == "sha256" else 64


SUITES: Final[dict[int, CipherSuite]] = {
    1: CipherSuite(1, "sha256", 48, 12, 10, True, 16),
    2: CipherSuite(2, "sha256", 48, 12, 8, True, 16),
    3: CipherSuite(3, "sha256", 48, 12, 4, True, 16),
    4: CipherSuite(4, "sha256", 16, 12, 16, False, 16),
    5: CipherSuite(5, "sha512", 32, 12, 16, False, 32),
}


def get_suite(suite: int) -> CipherSuite:
    try:
        return SUITES[suite]
    except KeyError:
        raise SFrameError(f"unsupported cipher suite {suite}") from None


def _hkdf_extract(hash_alg: hashes.HashAlgorithm, salt: bytes, ikm: bytes) -> bytes:
    # RFC 5869: an empty salt means HashLen zero bytes, which gives the same HMAC.
    h = crypto_hmac.HMAC(salt if salt else b"\x00" * hash_alg.digest_size, hash_alg)
    h.update(ikm)
    return h.finalize()


def _hkdf_expand(hash_alg: hashes.HashAlgorithm, prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(algorithm=hash_alg, length=length, info=info).derive(prk)


@dataclass(frozen=True)
class KeySalt:
    """Result of :func:`derive_key_salt`, with the intermediate secret."""

    secret: bytes
    key: bytes
    salt: bytes
    key_label: bytes
    salt_label: bytes


def derive_key_salt(suite: int, kid: int, base_key: bytes) -> KeySalt:
    """RFC 9605 section 4.4.2: ``sframe_key``/``sframe_salt`` for one KID."""
    cs = get_suite(suite)
    if not 0 <= kid <= MAX_U64:
        raise SFrameError(f"KID out of range: {kid}")
    h = cs.hash()
    secret = _hkdf_extract(h, b"", base_key)
    suffix = kid.to_bytes(8, "big") + suite.to_bytes(2, "big")
    key_label = _KEY_LABEL + suffix
    salt_label = _SALT_LABEL + suffix
    key = _hkdf_expand(h, secret, key_label, cs.nk)
    salt = _hkdf_expand(h, secret, salt_label, cs.nn)
    return KeySalt(secret, key, salt, key_label, salt_label)


def make_nonce(salt: bytes, ctr: int) -> bytes:
    """nonce = salt XOR CTR (CTR big-endian, left-padded to the nonce length)."""
    if not 0 <= ctr <= MAX_U64:
        raise SFrameError(f"CTR out of range: {ctr}")
    return (int.from_bytes(salt, "big") ^ ctr).to_bytes(len(salt), "big")


def _ctr_hmac_tag(cs: CipherSuite, auth_key: bytes, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
    h = crypto_hmac.HMAC(auth_key, cs.hash())
    h.update(len(aad).to_bytes(8, "big"))
    h.update(len(ct).to_bytes(8, "big"))
    h.update(cs.nt.to_bytes(8, "big"))
    h.update(nonce)
    h.update(aad)
    h.update(ct)
    return h.finalize()[: cs.nt]


def _aes_ctr(enc_key: bytes, nonce: bytes, data: bytes) -> bytes:
    ctx = Cipher(algorithms.AES(enc_key), modes.CTR(nonce + b"\x00\x00\x00\x00")).encryptor()
    return ctx.update(data) + ctx.finalize()


def aead_encrypt(suite: int, key: bytes, nonce: bytes, aad: bytes, pt: bytes) -> bytes:
    """The suite's AEAD: returns ciphertext || tag."""
    cs = get_suite(suite)
    if len(key) != cs.nk or len(nonce) != cs.nn:
        raise SFrameError("bad key or nonce length")
    if cs.ctr_hmac:
        enc_key, auth_key = key[: cs.enc_key_len], key[cs.enc_key_len :]
        ct = _aes_ctr(enc_key, nonce, pt)
        return ct + _ctr_hmac_tag(cs, auth_key, nonce, aad, ct)
    return AESGCM(key).encrypt(nonce, pt, aad)


def aead_decrypt(suite: int, key: bytes, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
    """Inverse of :func:`aead_encrypt`; raises :class:`SFrameError` on failure."""
    cs = get_suite(suite)
    if len(key) != cs.nk or len(nonce) != cs.nn:
        raise SFrameError("bad key or nonce length")
    if len(ct) < cs.nt:
        raise SFrameError("ciphertext shorter than the tag")
    if cs.ctr_hmac:
        enc_key, auth_key = key[: cs.enc_key_len], key[cs.enc_key_len :]
        body, tag = ct[: -cs.nt], ct[-cs.nt :]
        if not hmac.compare_digest(tag, _ctr_hmac_tag(cs, auth_key, nonce, aad, body)):
            raise SFrameError("authentication failed")
        return _aes_ctr(enc_key, nonce, body)
    try:
        return AESGCM(key).decrypt(nonce, ct, aad)
    except InvalidTag:
        raise SFrameError("authentication failed") from None


def protect(
    suite: int, key: bytes, salt: bytes, kid: int, ctr: int, metadata: bytes, plaintext: bytes
) -> bytes:
    """RFC 9605 section 4.4.3 encryption: returns header || ciphertext || tag."""
    header = encode_header(kid, ctr)
    nonce = make_nonce(salt, ctr)
    return header + aead_encrypt(suite, key, nonce, header + metadata, plaintext)


def unprotect(suite: int, key: bytes, salt: bytes, metadata: bytes, data: bytes) -> tuple[int, int, bytes]:
    """RFC 9605 section 4.4.4 decryption of header || ciphertext || tag.

    Returns ``(kid, ctr, plaintext)``.  The caller is responsible for having
    chosen ``key``/``salt`` for the KID in the header; use :func:`decode_header`
    first to look it up.
    """
    kid, ctr, hlen = decode_header(data)
    header = data[:hlen]
    nonce = make_nonce(salt, ctr)
    return kid, ctr, aead_decrypt(suite, key, nonce, header + metadata, data[hlen:])


# ---------------------------------------------------------------------------
# Alcove layer (suite 4)
# ---------------------------------------------------------------------------


def epoch_base_key(epoch_secret: bytes, room_id: str) -> bytes:
    """``base_key = HKDF-Expand(HKDF-Extract(salt="alcove-e2ee v1"||room, E_n), "SFrame 1.0 Base Key", 16)``."""
    h = hashes.SHA256()
    prk = _hkdf_extract(h, _ALCOVE_SALT + room_id.encode("utf-8"), epoch_secret)
    return _hkdf_expand(h, prk, _BASE_KEY_LABEL, 16)


def make_kid(stream: int, sender_index: int, epoch: int) -> int:
    """``KID = (stream << 8) | (sender_index << 4) | (epoch mod 16)``."""
    if not 0 <= stream <= 3:
        raise SFrameError(f"stream out of range: {stream}")
    if not 0 <= sender_index <= 15:
        raise SFrameError(f"sender_index out of range: {sender_index}")
    if epoch < 0:
        raise SFrameError(f"epoch out of range: {epoch}")
    return (stream << 8) | (sender_index << 4) | (epoch % 16)


def parse_kid(kid: int) -> tuple[int, int, int]:
    """Inverse of :func:`make_kid`: ``(stream, sender_index, epoch mod 16)``."""
    if not 0 <= kid < 0x400:
        raise SFrameError(f"not an Alcove KID: {kid}")
    return kid >> 8, (kid >> 4) & 0x0F, kid & 0x0F


def clear_prefix_len(kind: FrameKind, frame: bytes) -> int:
    """Length of the clear prefix of an (unencrypted or encrypted) frame.

    VP8: 10 bytes for a keyframe (bit 0 of byte 0 is 0), otherwise 3.
    Opus: 1 byte (TOC).  The first byte is always clear, so the receiver
    gets the same answer as the sender.  Empty frames have no prefix.
    """
    if not frame:
        return 0
    if kind == "video":
        return 10 if frame[0] & 0x01 == 0 else 3
    if kind == "audio":
        return 1
    raise SFrameError(f"unknown frame kind {kind!r}")


def protect_frame(kind: FrameKind, key: bytes, salt: bytes, kid: int, ctr: int, frame: bytes) -> bytes:
    """Alcove wire format: ``clear_prefix || header || ciphertext+tag`` (AAD = header || clear_prefix)."""
    if not frame:
        return b""
    n = min(clear_prefix_len(kind, frame), len(frame))
    prefix = frame[:n]
    return prefix + protect(ALCOVE_SUITE, key, salt, kid, ctr, prefix, frame[n:])


_TAG_LEN: Final = 16  # suite 4


def _split_candidates(kind: FrameKind, data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Possible ``(prefix_len, kid, ctr, header_len)`` splits of a protected frame.

    The normal case is the full prefix.  A frame shorter than its prefix was
    sent as ``frame || header || tag`` (empty plaintext), so shorter prefixes
    are tried only when the remaining bytes are exactly one header plus a tag.
    Authentication decides between candidates (the AAD covers the split).
    """
    full = clear_prefix_len(kind, data)
    tag_len = _TAG_LEN
    size = len(data)
    for n in range(full, 0, -1):
        if size <= n:
            continue
        try:
            kid, ctr, hlen = decode_header(data[n : n + 17])
        except SFrameError:
            continue
        rest = size - n - hlen
        if (n == full and rest >= tag_len) or (n < full and rest == tag_len):
            yield n, kid, ctr, hlen


def unprotect_frame(kind: FrameKind, key: bytes, salt: bytes, data: bytes) -> tuple[int, int, bytes]:
    """Inverse of :func:`protect_frame` for one known key; returns ``(kid, ctr, frame)``.

    Raises :class:`SFrameError` on any failure.  (The KID in the header is
    not checked here; :class:`FrameDecryptor` does the key lookup.)
    """
    if not data:
        return 0, 0, b""
    for n, kid, ctr, hlen in _split_candidates(kind, data):
        prefix = data[:n]
        try:
            pt = aead_decrypt(
                ALCOVE_SUITE, key, make_nonce(salt, ctr), data[n : n + hlen] + prefix, data[n + hlen :]
            )
        except SFrameError:
            continue
        return kid, ctr, prefix + pt
    raise SFrameError("frame did not authenticate")


@dataclass
class _KidKey:
    epoch: int
    sender_index: int
    stream: int
    kid: int
    key: bytes
    salt: bytes
    aead: AESGCM
    salt_int: int = 0
    kid_config: int = 0
    kid_bytes: bytes = b""

    def __post_init__(self) -> None:
        self.salt_int = int.from_bytes(self.salt, "big")
        if self.kid < 8:
            self.kid_config, self.kid_bytes = self.kid << 4, b""
        else:
            n = _min_len(self.kid)
            self.kid_config, self.kid_bytes = 0x80 | ((n - 1) << 4), self.kid.to_bytes(n, "big")

    def nonce(self, ctr: int) -> bytes:
        return (self.salt_int ^ ctr).to_bytes(12, "big")

    def header(self, ctr: int) -> bytes:
        """``encode_header(self.kid, ctr)``, with the KID part computed once."""
        if ctr < 8:
            return bytes((self.kid_config | ctr,)) + self.kid_bytes
        n = (ctr.bit_length() + 7) >> 3
        return bytes((self.kid_config | 0x08 | (n - 1),)) + self.kid_bytes + ctr.to_bytes(n, "big")


def _kid_key(epoch: int, sender_index: int, stream: int, base_key: bytes) -> _KidKey:
    kid = make_kid(stream, sender_index, epoch)
    ks = derive_key_salt(ALCOVE_SUITE, kid, base_key)
    return _KidKey(epoch, sender_index, stream, kid, ks.key, ks.salt, AESGCM(ks.key))


def _check_base_key(base_key: bytes) -> None:
    if len(base_key) != 16:
        raise SFrameError("base key must be 16 bytes")


def _stream_for(kind: FrameKind, stream: int | None) -> int:
    if kind not in _DEFAULT_STREAM:
        raise SFrameError(f"unknown frame kind {kind!r}")
    if stream is None:
        return _DEFAULT_STREAM[kind]
    if _STREAM_KIND.get(stream) != kind:
        raise SFrameError(f"stream {stream} does not carry {kind}")
    return stream


class FrameEncryptor:
    """Per-sender SFrame encryptor (suite 4).

    Counters are kept per ``(epoch, KID)`` for the lifetime of the object, so a
    repeated ``set_key`` for the same epoch (a transform restart) continues
    them; they never repeat inside an epoch.  Fails closed: without a key, or
    once CTR reaches 2^32, :meth:`protect` raises and nothing is sent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._sender_index = 0
        self._keys: dict[int, _KidKey] = {}
        self._counters: dict[tuple[int, int], int] = {}
        self.frames = 0

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def set_key(self, epoch: int, sender_index: int, base_key: bytes) -> None:
        """Switch sending to ``epoch``. Epochs never go backwards."""
        _check_base_key(base_key)
        keys = {s: _kid_key(epoch, sender_index, s, base_key) for s in _STREAM_KIND}
        with self._lock:
            if self._epoch is not None and epoch < self._epoch:
                raise SFrameError(f"epoch {epoch} is older than the current epoch {self._epoch}")
            if self._epoch is not None and epoch == self._epoch and sender_index != self._sender_index:
                raise SFrameError("sender_index cannot change inside an epoch")
            # Counters of older epochs are no longer needed (epochs only increase).
            self._counters = {k: v for k, v in self._counters.items() if k[0] >= epoch}
            self._epoch = epoch
            self._sender_index = sender_index
            self._keys = keys

    def clear(self) -> None:
        """Forget the sending key (subsequent protect() calls fail)."""
        with self._lock:
            self._keys = {}

    def protect(self, kind: FrameKind, frame: bytes, stream: int | None = None) -> bytes:
        if not frame:
            return b""
        s = _stream_for(kind, stream)
        with self._lock:
            kk = self._keys.get(s)
            if kk is None:
                raise SFrameError("no sending key")
            slot = (kk.epoch, kk.kid)
            ctr = self._counters.get(slot, 0)
            if ctr >= MAX_SEND_CTR:
                raise SFrameCounterExhausted("SFrame counter exhausted; rekey required")
            self._counters[slot] = ctr + 1
            self.frames += 1
        n = min(clear_prefix_len(kind, frame), len(frame))
        prefix = frame[:n]
        header = kk.header(ctr)
        return prefix + header + kk.aead.encrypt(kk.nonce(ctr), frame[n:], header + prefix)


@dataclass
class _ReplayWindow:
    highest: int = -1
    bitmap: int = 0  # bit i set = (highest - i) seen

    def check(self, ctr: int) -> bool:
        if ctr > self.highest:
            return True
        diff = self.highest - ctr
        if diff >= REPLAY_WINDOW:
            return False
        return not (self.bitmap >> diff) & 1

    def mark(self, ctr: int) -> None:
        if ctr > self.highest:
            shift = ctr - self.highest
            self.bitmap = (
                ((self.bitmap << shift) | 1) & ((1 << REPLAY_WINDOW) - 1) if shift < REPLAY_WINDOW else 1
            )
            self.highest = ctr
        else:
            self.bitmap |= 1 << (self.highest - ctr)


@dataclass
class _RingEntry:
    epoch: int
    sender_index: int
    keys: dict[int, _KidKey]
    windows: dict[int, _ReplayWindow] = field(default_factory=dict)


class FrameDecryptor:
    """SFrame receiver: key ring by KID, per-KID replay window, drop on failure.

    ``unprotect`` returns the plaintext frame, or ``None`` on any failure
    (unknown KID, wrong sender, wrong stream kind, bad tag, replay, malformed
    input).  It never returns ciphertext.  Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (sender_index, epoch mod 16) -> entry
        self._ring: dict[tuple[int, int], _RingEntry] = {}
        self.failures = 0
        self.decrypted = 0

    def add_key(self, epoch: int, sender_index: int, base_key: bytes) -> None:
        """Install a key. It replaces any epoch with the same low 4 bits for this sender."""
        _check_base_key(base_key)
        keys = {s: _kid_key(epoch, sender_index, s, base_key) for s in _STREAM_KIND}
        with self._lock:
            slot = (sender_index, epoch % 16)
            old = self._ring.get(slot)
            if old is not None and old.epoch > epoch:
                raise SFrameError(f"epoch {epoch} is older than installed epoch {old.epoch}")
            if old is not None and old.epoch == epoch and old.keys[0].key == keys[0].key:
                return  # idempotent: keep the replay state
            self._ring[slot] = _RingEntry(epoch, sender_index, keys)

    def remove_epoch(self, epoch: int) -> None:
        """Retire an epoch (all senders)."""
        with self._lock:
            for slot in [k for k, e in self._ring.items() if e.epoch == epoch]:
                del self._ring[slot]

    def remove_sender(self, sender_index: int) -> None:
        with self._lock:
            for slot in [k for k in self._ring if k[0] == sender_index]:
                del self._ring[slot]

    def epochs(self) -> set[int]:
        with self._lock:
            return {e.epoch for e in self._ring.values()}

    def _fail(self) -> None:
        with self._lock:
            self.failures += 1

    def unprotect(
        self, kind: FrameKind, data: bytes, expected_sender_index: int | None = None
    ) -> bytes | None:
        if not data:
            return b""
        for n, kid, ctr, hlen in _split_candidates(kind, data):
            if kid >= 0x400 or ctr >= MAX_SEND_CTR:
                continue
            stream, sender_index, epoch_low = parse_kid(kid)
            if _STREAM_KIND[stream] != kind:
                continue
            if expected_sender_index is not None and sender_index != expected_sender_index:
                continue
            with self._lock:
                entry = self._ring.get((sender_index, epoch_low))
                window = entry.windows.get(kid) if entry is not None else None
                if entry is None or (window is not None and not window.check(ctr)):
                    continue
            kk = entry.keys[stream]
            prefix = data[:n]
            header = data[n : n + hlen]
            try:
                pt = kk.aead.decrypt(kk.nonce(ctr), data[n + hlen :], header + prefix)
            except InvalidTag:
                continue
            with self._lock:
                # Re-check under the lock: the key may have been retired, or a
                # concurrent call may have accepted the same CTR meanwhile.
                if self._ring.get((sender_index, epoch_low)) is not entry:
                    continue
                window = entry.windows.setdefault(kid, _ReplayWindow())
                if not window.check(ctr):
                    continue
                window.mark(ctr)
                self.decrypted += 1
            return prefix + pt
        self._fail()
        return None
