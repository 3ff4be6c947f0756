"""RFC 9605 vectors and the Alcove SFrame layer (peer/sframe.py)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer import sframe
from peer.sframe import (
    MAX_SEND_CTR,
    FrameDecryptor,
    FrameEncryptor,
    SFrameCounterExhausted,
    SFrameError,
    clear_prefix_len,
    decode_header,
    derive_key_salt,
    encode_header,
    epoch_base_key,
    make_kid,
    make_nonce,
    parse_kid,
    protect,
    protect_frame,
    unprotect,
    unprotect_frame,
)

pytestmark = pytest.mark.e2ee

DATA = Path(__file__).resolve().parents[1] / "data"
VECTORS: dict[str, Any] = json.loads((DATA / "sframe-rfc9605.json").read_text(encoding="utf-8"))
MAX64 = (1 << 64) - 1


def _flip(data: bytes, index: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[index] ^= 1 << bit
    return bytes(b)


def _id(v: dict[str, Any]) -> str:
    return f"suite{v['cipher_suite']}"


# --------------------------------------------------------------------------- vectors


def test_vector_file_is_the_published_copy() -> None:
    digest = hashlib.sha256((DATA / "sframe-rfc9605.json").read_bytes()).hexdigest()
    assert digest == "b8d35efd41749567427cb9ae52d9a7362904154978ff6a5fb20c0258a8ffdec1"
    assert len(VECTORS["header"]) == 289
    assert len(VECTORS["aes_ctr_hmac"]) == 3
    assert len(VECTORS["sframe"]) == 5


@pytest.mark.parametrize("v", VECTORS["header"], ids=lambda v: f"kid{v['kid']}-ctr{v['ctr']}")
def test_header_vectors(v: dict[str, Any]) -> None:
    encoded = bytes.fromhex(v["encoded"])
    assert encode_header(v["kid"], v["ctr"]) == encoded
    assert decode_header(encoded) == (v["kid"], v["ctr"], len(encoded))
    assert decode_header(encoded + b"\xaa\xbb") == (v["kid"], v["ctr"], len(encoded))
    for cut in range(len(encoded)):
        with pytest.raises(SFrameError):
            decode_header(encoded[:cut])


def test_header_limits() -> None:
    h = encode_header(MAX64, MAX64)
    assert h == b"\xff" + b"\xff" * 16
    assert decode_header(h) == (MAX64, MAX64, 17)
    for kid, ctr in [(MAX64 + 1, 0), (0, MAX64 + 1), (-1, 0), (0, -1)]:
        with pytest.raises(SFrameError):
            encode_header(kid, ctr)
    with pytest.raises(SFrameError):
        decode_header(bytes.fromhex("9001"))


@pytest.mark.parametrize("v", VECTORS["aes_ctr_hmac"], ids=_id)
def test_aes_ctr_hmac_vectors(v: dict[str, Any]) -> None:
    suite = v["cipher_suite"]
    cs = sframe.get_suite(suite)
    key = bytes.fromhex(v["key"])
    assert key[: cs.enc_key_len].hex() == v["enc_key"]
    assert key[cs.enc_key_len :].hex() == v["auth_key"]
    nonce, aad, pt, ct = (bytes.fromhex(v[k]) for k in ("nonce", "aad", "pt", "ct"))
    assert sframe.aead_encrypt(suite, key, nonce, aad, pt) == ct
    assert len(ct) == len(pt) + cs.nt
    assert sframe.aead_decrypt(suite, key, nonce, aad, ct) == pt
    with pytest.raises(SFrameError):
        sframe.aead_decrypt(suite, key, nonce, aad, _flip(ct, -1))
    with pytest.raises(SFrameError):
        sframe.aead_decrypt(suite, key, nonce, _flip(aad, 0), ct)
    with pytest.raises(SFrameError):
        sframe.aead_decrypt(suite, key, nonce, aad, ct[: cs.nt - 1])


@pytest.mark.parametrize("v", VECTORS["sframe"], ids=_id)
def test_sframe_vectors(v: dict[str, Any]) -> None:
    suite, kid, ctr = v["cipher_suite"], v["kid"], v["ctr"]
    base_key, metadata, pt, ct = (bytes.fromhex(v[k]) for k in ("base_key", "metadata", "pt", "ct"))
    ks = derive_key_salt(suite, kid, base_key)
    assert ks.key_label.hex() == v["sframe_key_label"]
    assert ks.salt_label.hex() == v["sframe_salt_label"]
    assert ks.secret.hex() == v["sframe_secret"]
    assert ks.key.hex() == v["sframe_key"]
    assert ks.salt.hex() == v["sframe_salt"]
    assert make_nonce(ks.salt, ctr).hex() == v["nonce"]
    header = encode_header(kid, ctr)
    assert (header + metadata).hex() == v["aad"]
    assert protect(suite, ks.key, ks.salt, kid, ctr, metadata, pt) == ct
    assert unprotect(suite, ks.key, ks.salt, metadata, ct) == (kid, ctr, pt)
    # Negative cases: flipped tag bit, flipped header bit, wrong AAD, truncation.
    with pytest.raises(SFrameError):
        unprotect(suite, ks.key, ks.salt, metadata, _flip(ct, -1, 7))
    with pytest.raises(SFrameError):
        unprotect(suite, ks.key, ks.salt, metadata, _flip(ct, len(header) - 1))
    with pytest.raises(SFrameError):
        unprotect(suite, ks.key, ks.salt, _flip(metadata, 0), ct)
    with pytest.raises(SFrameError):
        unprotect(suite, ks.key, ks.salt, metadata + b"x", ct)
    with pytest.raises(SFrameError):
        unprotect(suite, ks.key, ks.salt, metadata, ct[:2])


def test_unknown_suite() -> None:
    with pytest.raises(SFrameError):
        derive_key_salt(6, 0, bytes(16))
    with pytest.raises(SFrameError):
        protect(0, bytes(16), bytes(12), 0, 0, b"", b"")


# --------------------------------------------------------------------------- Alcove layer

BK1 = bytes(range(16))
BK2 = bytes(range(0xF0, 0x100))
KEYFRAME = bytes.fromhex("5004009d012a8002e001") + bytes([7]) * 100
DELTA = bytes.fromhex("b10100") + bytes([9]) * 50
OPUS = bytes.fromhex("fc") + bytes([3]) * 40


def test_epoch_base_key_is_hkdf() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    secret = bytes(range(32))
    want = HKDF(hashes.SHA256(), 16, b"alcove-e2ee v1" + "räum".encode(), b"SFrame 1.0 Base Key").derive(
        secret
    )
    assert epoch_base_key(secret, "räum") == want
    assert epoch_base_key(secret, "other") != want


def test_kid_layout() -> None:
    assert make_kid(0, 0, 0) == 0
    assert make_kid(1, 2, 3) == 0x123
    assert make_kid(1, 2, 19) == 0x123
    assert make_kid(3, 15, 15) == 0x3FF
    assert parse_kid(0x123) == (1, 2, 3)
    for bad in [(4, 0, 0), (0, 16, 0), (-1, 0, 0), (0, 0, -1)]:
        with pytest.raises(SFrameError):
            make_kid(*bad)
    with pytest.raises(SFrameError):
        parse_kid(0x400)


def test_clear_prefix_rule() -> None:
    assert clear_prefix_len("video", b"\x10\x00") == 10  # keyframe: bit 0 of byte 0 == 0
    assert clear_prefix_len("video", b"\x11\x00") == 3
    assert clear_prefix_len("audio", b"\xfc") == 1
    assert clear_prefix_len("video", b"") == 0
    kid = make_kid(1, 0, 0)
    ks = derive_key_salt(4, kid, BK1)
    p = protect_frame("video", ks.key, ks.salt, kid, 0, KEYFRAME)
    assert p[:10] == KEYFRAME[:10]
    assert KEYFRAME[10:30] not in p
    p = protect_frame("video", ks.key, ks.salt, kid, 1, DELTA)
    assert p[:3] == DELTA[:3]
    assert p[3:4] == encode_header(kid, 1)[:1]
    assert len(p) == len(DELTA) + len(encode_header(kid, 1)) + 16
    assert unprotect_frame("video", ks.key, ks.salt, p) == (kid, 1, DELTA)
    # Short frames keep len bytes clear plus an SFrame of an empty plaintext.
    for short in [b"\x10", b"\x10\x01\x02\x03", b"\x11\x05", KEYFRAME[:10]]:
        p = protect_frame("video", ks.key, ks.salt, kid, 9, short)
        assert p[: len(short)] == short
        assert len(p) == len(short) + len(encode_header(kid, 9)) + 16
        assert unprotect_frame("video", ks.key, ks.salt, p)[2] == short
    assert protect_frame("audio", ks.key, ks.salt, kid, 0, b"") == b""
    with pytest.raises(SFrameError):
        unprotect_frame(
            "video", ks.key, ks.salt, _flip(protect_frame("video", ks.key, ks.salt, kid, 3, DELTA), 1)
        )


def test_round_trip_and_counters() -> None:
    enc = FrameEncryptor()
    with pytest.raises(SFrameError):
        enc.protect("video", KEYFRAME)  # no key: fail closed
    enc.set_key(1, 4, BK1)
    dec = FrameDecryptor()
    dec.add_key(1, 4, BK1)
    kf = enc.protect("video", KEYFRAME)
    d = enc.protect("video", DELTA)
    o = enc.protect("audio", OPUS)
    assert dec.unprotect("video", kf, expected_sender_index=4) == KEYFRAME
    assert dec.unprotect("audio", o, 4) == OPUS
    assert dec.unprotect("video", d) == DELTA
    assert decode_header(d[3:])[:2] == (make_kid(1, 4, 1), 1)
    assert decode_header(o[1:])[:2] == (make_kid(0, 4, 1), 0)  # audio has its own KID and counter
    assert (dec.decrypted, dec.failures) == (3, 0)
    # Replay rejected.
    assert dec.unprotect("video", kf) is None
    assert (dec.decrypted, dec.failures) == (3, 1)
    # Wrong sender index or wrong kind is dropped.
    kf2 = enc.protect("video", KEYFRAME)
    assert dec.unprotect("video", kf2, expected_sender_index=5) is None
    assert dec.unprotect("audio", kf2) is None
    assert dec.unprotect("video", kf2, expected_sender_index=4) == KEYFRAME
    # Empty frames pass unchanged.
    assert enc.protect("audio", b"") == b""
    assert dec.unprotect("audio", b"") == b""
    # Screen streams.
    s = enc.protect("video", DELTA, stream=2)
    assert parse_kid(decode_header(s[3:])[0])[0] == 2
    assert dec.unprotect("video", s) == DELTA
    with pytest.raises(SFrameError):
        enc.protect("audio", OPUS, stream=1)


def test_wrong_key_tamper_unknown_kid() -> None:
    enc = FrameEncryptor()
    enc.set_key(5, 3, BK1)
    p = enc.protect("video", KEYFRAME)
    wrong = FrameDecryptor()
    wrong.add_key(5, 3, BK2)
    assert wrong.unprotect("video", p) is None
    assert wrong.failures == 1
    unknown = FrameDecryptor()
    unknown.add_key(5, 2, BK1)
    assert unknown.unprotect("video", p) is None
    assert FrameDecryptor().unprotect("video", p) is None
    dec = FrameDecryptor()
    dec.add_key(5, 3, BK1)
    for bad in [
        _flip(p, -1),
        _flip(p, 5),
        _flip(p, 10),
        p[:11],
        p[:-1],
        p + b"\x00",
        b"\x00",
        b"\x11\x00\x00",
    ]:
        assert dec.unprotect("video", bad) is None
    assert dec.failures == 8
    assert dec.decrypted == 0
    assert dec.unprotect("video", p) == KEYFRAME


def test_replay_window() -> None:
    enc = FrameEncryptor()
    enc.set_key(2, 0, BK1)
    frames = [enc.protect("audio", OPUS) for _ in range(300)]
    dec = FrameDecryptor()
    dec.add_key(2, 0, BK1)
    assert dec.unprotect("audio", frames[150]) == OPUS
    assert dec.unprotect("audio", frames[100]) == OPUS
    assert dec.unprotect("audio", frames[100]) is None
    assert dec.unprotect("audio", frames[23]) == OPUS  # 127 behind
    assert dec.unprotect("audio", frames[22]) is None  # 128 behind
    assert dec.unprotect("audio", frames[299]) == OPUS  # big jump clears the bitmap
    assert dec.unprotect("audio", frames[172]) == OPUS  # 127 behind
    assert dec.unprotect("audio", frames[171]) is None
    assert dec.unprotect("audio", frames[150]) is None
    assert dec.failures == 4


def test_replay_window_thread_safety() -> None:
    enc = FrameEncryptor()
    enc.set_key(2, 0, BK1)
    frames = [enc.protect("audio", OPUS) for _ in range(64)]
    dec = FrameDecryptor()
    dec.add_key(2, 0, BK1)
    results: list[bytes | None] = []
    lock = threading.Lock()

    def work() -> None:
        out = [dec.unprotect("audio", f) for f in frames]
        with lock:
            results.extend(out)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 64
    assert dec.decrypted == 64
    assert dec.failures == 64 * 7


def test_encryptor_threads_never_reuse_counters() -> None:
    enc = FrameEncryptor()
    enc.set_key(0, 1, BK1)
    out: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [enc.protect("video", DELTA) for _ in range(200)]
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctrs = [decode_header(p[3:])[1] for p in out]
    assert sorted(ctrs) == list(range(1200))


def test_old_epoch_decrypt_only_then_removed() -> None:
    enc = FrameEncryptor()
    enc.set_key(1, 0, BK1)
    old_frames = [enc.protect("audio", OPUS) for _ in range(3)]
    enc.set_key(2, 0, BK2)
    assert enc.epoch == 2
    cur = enc.protect("audio", OPUS)
    assert decode_header(cur[1:])[1] == 0
    with pytest.raises(SFrameError):
        enc.set_key(1, 0, BK1)  # epochs only increase
    dec = FrameDecryptor()
    dec.add_key(1, 0, BK1)
    dec.add_key(2, 0, BK2)
    assert dec.epochs() == {1, 2}
    assert dec.unprotect("audio", cur) == OPUS
    assert dec.unprotect("audio", old_frames[0]) == OPUS  # decrypt-only window
    dec.remove_epoch(1)
    assert dec.epochs() == {2}
    assert dec.unprotect("audio", old_frames[1]) is None
    # A new epoch with the same low 4 bits (18 & 15 == 2) replaces epoch 2.
    nxt = FrameEncryptor()
    nxt.set_key(2, 0, BK2)
    e2_frames = [nxt.protect("audio", OPUS) for _ in range(2)]
    dec.add_key(18, 0, BK1)
    assert dec.epochs() == {18}
    assert dec.unprotect("audio", e2_frames[1]) is None
    with pytest.raises(SFrameError):
        dec.add_key(2, 0, BK2)  # older than the installed epoch 18
    enc18 = FrameEncryptor()
    enc18.set_key(18, 0, BK1)
    assert dec.unprotect("audio", enc18.protect("audio", OPUS)) == OPUS
    # Re-adding the same key keeps the replay state.
    first = enc18.protect("audio", OPUS)
    assert dec.unprotect("audio", first) == OPUS
    dec.add_key(18, 0, BK1)
    assert dec.unprotect("audio", first) is None
    dec.remove_sender(0)
    assert dec.epochs() == set()


def test_counter_exhaustion_and_restart() -> None:
    enc = FrameEncryptor()
    enc.set_key(7, 1, BK1)
    enc.protect("video", DELTA)
    enc.set_key(7, 1, BK1)  # transform restart: the counter continues
    assert decode_header(enc.protect("video", DELTA)[3:])[1] == 1
    with pytest.raises(SFrameError):
        enc.set_key(7, 2, BK1)  # sender index is fixed inside an epoch
    kid = make_kid(1, 1, 7)
    enc._counters[(7, kid)] = MAX_SEND_CTR - 1
    last = enc.protect("video", DELTA)
    assert decode_header(last[3:])[1] == MAX_SEND_CTR - 1
    for _ in range(2):
        with pytest.raises(SFrameCounterExhausted):
            enc.protect("video", DELTA)
    assert enc.protect("audio", OPUS)  # other KIDs are unaffected
    dec = FrameDecryptor()
    dec.add_key(7, 1, BK1)
    assert dec.unprotect("video", last) == DELTA
    ks = derive_key_salt(4, kid, BK1)
    assert dec.unprotect("video", protect_frame("video", ks.key, ks.salt, kid, MAX_SEND_CTR, DELTA)) is None
    # A new epoch starts at 0 again.
    enc.set_key(8, 1, BK2)
    assert decode_header(enc.protect("video", DELTA)[3:])[1] == 0


def test_bad_base_key() -> None:
    with pytest.raises(SFrameError):
        FrameEncryptor().set_key(0, 0, b"short")
    with pytest.raises(SFrameError):
        FrameDecryptor().add_key(0, 0, bytes(32))


# --------------------------------------------------------------------------- properties

_op = st.tuples(
    st.integers(0, 3),  # sender
    st.sampled_from(["audio", "video", "screen"]),
    st.sampled_from(["frame", "frame", "frame", "restart", "next_epoch"]),
)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=80), first_epoch=st.integers(0, 40))
def test_key_nonce_pairs_never_repeat(ops: list[tuple[int, str, str]], first_epoch: int) -> None:
    """(key, nonce) is unique across senders, streams, epochs and transform restarts.

    The senders use the same room and fresh epoch secrets, as the therapist
    draws; epochs 16 apart share the KID's low bits, which is covered too.
    """
    base: dict[int, bytes] = {}

    def base_key(e: int) -> bytes:  # a fresh 32-byte epoch secret per epoch
        if e not in base:
            base[e] = epoch_base_key(hashlib.sha256(e.to_bytes(8, "big")).digest(), "prop-room")
        return base[e]

    epoch = dict.fromkeys(range(4), first_epoch)
    encs = {i: FrameEncryptor() for i in range(4)}
    for i, e in encs.items():
        e.set_key(epoch[i], i, base_key(epoch[i]))
    seen: set[tuple[bytes, bytes]] = set()
    frame_count = 0
    for sender, what, action in ops:
        if action == "restart":
            encs[sender].set_key(epoch[sender], sender, base_key(epoch[sender]))
            continue
        if action == "next_epoch":
            epoch[sender] += 1 + (15 if sender % 2 else 0)  # odd senders jump 16: same low bits
            encs[sender].set_key(epoch[sender], sender, base_key(epoch[sender]))
            continue
        kind: sframe.FrameKind = "audio" if what == "audio" else "video"
        stream = 2 if what == "screen" else None
        out = encs[sender].protect(kind, DELTA if kind == "video" else OPUS, stream=stream)
        n = clear_prefix_len(kind, out)
        kid, ctr, _ = decode_header(out[n:])
        _stream, idx, low = parse_kid(kid)
        assert (idx, low) == (sender, epoch[sender] % 16)
        ks = derive_key_salt(4, kid, base_key(epoch[sender]))
        pair = (ks.key, make_nonce(ks.salt, ctr))
        assert pair not in seen
        seen.add(pair)
        frame_count += 1
    assert len(seen) == frame_count


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), kind=st.sampled_from(["audio", "video"]))
def test_fuzz_receive_never_passes_through(data: bytes, kind: sframe.FrameKind) -> None:
    dec = FrameDecryptor()
    dec.add_key(0, 0, BK1)
    out = dec.unprotect(kind, data)
    if data:
        assert out is None
        assert dec.failures == 1
    else:
        assert out == b""
    try:
        decode_header(data)
    except SFrameError:
        pass


def test_vector_copy_matches_shared() -> None:
    """tests/data holds a copy of the shared SFrame vectors; where a checkout of them sits beside the repository
    (CI), the two must agree."""
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "sframe-rfc9605.json"
    if not shared.exists():
        pytest.skip("shared vectors not checked out next to the repo")
    assert shared.read_bytes() == (DATA / "sframe-rfc9605.json").read_bytes()
