"""JS crypto (web/static/js/lib/sframe.js, hpke.js): node --test suite and cross-language checks.

Needs Node >= 20 (WebCrypto on globalThis). Skipped only when `node` is missing
and the CI environment variable is unset; in CI a missing node is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ec

from peer.sframe import (
    FrameDecryptor,
    FrameEncryptor,
    decode_header,
    derive_key_salt,
    epoch_base_key,
    make_kid,
    protect_frame,
)

pytestmark = pytest.mark.e2ee

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
CLI = REPO / "tests" / "js" / "crypto_cli.mjs"
NODE = shutil.which("node")
SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def _node() -> str:
    if NODE is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI for the JS crypto tests")
        pytest.skip("node not installed")
    return NODE


def _js(command: str, request: dict[str, Any]) -> Any:
    proc = subprocess.run(
        [_node(), str(CLI), command],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "sframe-golden.json").read_text(encoding="utf-8"))
    return data


def test_node_test_suite() -> None:
    node = _node()
    proc = subprocess.run(
        [node, "--test", "tests/js/"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "# fail 0" in out, out[-6000:]
    # Both test files ran (guards against a glob silently matching nothing).
    assert "header vectors: encode and decode (289)" in out
    assert "RFC 9180 A.3.1 base mode" in out


def test_golden_file_is_current() -> None:
    spec = importlib.util.spec_from_file_location("make_sframe_golden", DATA / "make_sframe_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (DATA / "sframe-golden.json").read_text(encoding="utf-8") == mod.render()


def test_golden_python_decrypts() -> None:
    g = _golden()
    keys = {e["epoch"]: bytes.fromhex(e["base_key"]) for e in g["epochs"]}
    for f in g["frames"]:
        dec = FrameDecryptor()
        dec.add_key(f["epoch"], f["sender_index"], keys[f["epoch"]])
        assert dec.unprotect(f["kind"], bytes.fromhex(f["protected"]), f["sender_index"]) == bytes.fromhex(
            f["frame"]
        ), f["name"]


def test_js_reproduces_golden_via_cli() -> None:
    """JS protects the golden inputs; the bytes must equal Python's."""
    g = _golden()
    req = {
        "room_id": g["room_id"],
        "epochs": [{"epoch": e["epoch"], "epoch_secret": e["epoch_secret"]} for e in g["epochs"]],
        "frames": [
            {k: f[k] for k in ("kind", "epoch", "sender_index", "stream", "ctr", "frame")}
            for f in g["frames"]
        ],
    }
    res = _js("sframe-protect-fixed", req)
    assert res["base_keys"] == {str(e["epoch"]): e["base_key"] for e in g["epochs"]}
    assert [f["kid"] for f in res["frames"]] == [f["kid"] for f in g["frames"]]
    assert [f["protected"] for f in res["frames"]] == [f["protected"] for f in g["frames"]]


def test_js_protects_python_decrypts() -> None:
    """Reverse direction: fixed inputs protected in JS, checked and decrypted in Python."""
    secret = bytes.fromhex("42" * 32)
    room = "reverse-room"
    frames = [
        ("video", 9, 3, 1, 0, bytes.fromhex("3009009d012a") + bytes(range(60))),
        ("video", 9, 3, 1, 1, bytes.fromhex("f1") + bytes(range(100, 140))),
        ("audio", 9, 3, 0, 77, bytes.fromhex("78") + bytes(range(30))),
        ("audio", 25, 14, 3, 2**20, bytes.fromhex("78") + bytes(range(30))),
        ("video", 9, 3, 1, 2, b"\x10\x20"),
    ]
    req = {
        "room_id": room,
        "epochs": [{"epoch": e, "epoch_secret": secret.hex()} for e in (9, 25)],
        "frames": [
            {"kind": k, "epoch": e, "sender_index": i, "stream": s, "ctr": c, "frame": fr.hex()}
            for k, e, i, s, c, fr in frames
        ],
    }
    res = _js("sframe-protect-fixed", req)
    base = epoch_base_key(secret, room)
    assert res["base_keys"] == {"9": base.hex(), "25": base.hex()}
    for (kind, epoch, idx, stream, ctr, frame), out in zip(frames, res["frames"], strict=True):
        kid = make_kid(stream, idx, epoch)
        assert out["kid"] == kid
        ks = derive_key_salt(4, kid, base)
        data = bytes.fromhex(out["protected"])
        assert data == protect_frame(kind, ks.key, ks.salt, kid, ctr, frame)  # type: ignore[arg-type]
        dec = FrameDecryptor()
        dec.add_key(epoch, idx, base)
        assert dec.unprotect(kind, data, expected_sender_index=idx) == frame  # type: ignore[arg-type]


def test_js_encryptor_python_decryptor() -> None:
    base = bytes(range(16))
    frames = [
        {"kind": "video", "frame": (bytes.fromhex("5004009d012a8002e001") + bytes(50)).hex()},
        {"kind": "video", "frame": (bytes.fromhex("b10100") + bytes(20)).hex()},
        {"kind": "audio", "frame": (bytes.fromhex("fc") + bytes(30)).hex()},
        {"kind": "audio", "frame": ""},
        {"kind": "video", "frame": "11"},
    ]
    res = _js("sframe-encrypt", {"base_key": base.hex(), "epoch": 4, "sender_index": 6, "frames": frames})
    dec = FrameDecryptor()
    dec.add_key(4, 6, base)
    outs = [bytes.fromhex(p) for p in res["protected"]]
    for f, data in zip(frames, outs, strict=True):
        assert dec.unprotect(f["kind"], data, 6) == bytes.fromhex(f["frame"])  # type: ignore[arg-type]
    assert [decode_header(outs[i][n:])[1] for i, n in ((0, 10), (1, 3), (2, 1), (4, 1))] == [0, 1, 0, 2]
    assert dec.failures == 0
    # Replays are refused in Python too.
    assert dec.unprotect("video", outs[0], 6) is None


def test_python_encryptor_js_decryptor() -> None:
    base, other = bytes(range(16)), bytes(range(1, 17))
    enc = FrameEncryptor()
    enc.set_key(3, 2, other)
    old = enc.protect("audio", b"\xfcold-epoch")
    enc.set_key(19, 2, base)  # same low bits as 3: replaces it on the receiver
    kf = bytes.fromhex("5004009d012a8002e001") + b"keyframe payload"
    plain = [("video", kf), ("video", b"\xb1delta"), ("audio", b"\xfcopus"), ("video", b"\x10\x01")]
    prot = [(k, enc.protect(k, f)) for k, f in plain]  # type: ignore[arg-type]
    tampered = bytearray(prot[0][1])
    tampered[-1] ^= 1
    req = {
        "keys": [
            {"epoch": 3, "sender_index": 2, "base_key": other.hex()},
            {"epoch": 19, "sender_index": 2, "base_key": base.hex()},
        ],
        "frames": [{"kind": k, "data": d.hex(), "expected_sender_index": 2} for k, d in prot]
        + [
            {"kind": "video", "data": prot[0][1].hex(), "expected_sender_index": 2},  # replay
            {"kind": "video", "data": bytes(tampered).hex(), "expected_sender_index": 2},
            {"kind": "video", "data": prot[1][1].hex(), "expected_sender_index": 3},  # wrong sender
            {"kind": "audio", "data": old.hex(), "expected_sender_index": 2},  # epoch 3 was replaced
        ],
    }
    res = _js("sframe-decrypt", req)
    assert res["frames"][:4] == [f.hex() for _, f in plain]
    assert res["frames"][4:] == [None, None, None, None]
    assert (res["decrypted"], res["failures"]) == (4, 4)


def test_hpke_python_seals_js_opens() -> None:
    sk = ec.generate_private_key(ec.SECP256R1())
    info = b"alcove-e2ee epoch" + b"room-1" + (7).to_bytes(8, "big")
    secret = os.urandom(32)
    data = SUITE.encrypt(secret, sk.public_key(), info=info)
    scalar = sk.private_numbers().private_value.to_bytes(32, "big").hex()
    assert _js("hpke-open", {"sk": scalar, "info": info.hex(), "data": data.hex()}) == {"pt": secret.hex()}
    # Wrong info or tampering fails in JS.
    assert "error" in _js("hpke-open", {"sk": scalar, "info": "00", "data": data.hex()})
    bad = bytearray(data)
    bad[-1] ^= 1
    assert "error" in _js("hpke-open", {"sk": scalar, "info": info.hex(), "data": bytes(bad).hex()})


def test_hpke_js_seals_python_opens() -> None:
    from cryptography.hazmat.primitives import serialization

    sk = ec.generate_private_key(ec.SECP256R1())
    pk = sk.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    info = b"alcove-e2ee epoch|room-9|12"
    secret = os.urandom(32)
    res = _js("hpke-seal", {"pk": pk.hex(), "info": info.hex(), "pt": secret.hex()})
    data = bytes.fromhex(res["data"])
    assert len(data) == 65 + 32 + 16
    assert data[0] == 0x04
    assert SUITE.decrypt(data, sk, info=info) == secret
    with pytest.raises(Exception):  # noqa: B017 - cryptography raises its own error type
        SUITE.decrypt(data, sk, info=b"other")


def test_hpke_js_fixed_ephemeral_python_opens() -> None:
    """The deterministic test hook (ikmE) produces a normal, openable ciphertext."""
    from cryptography.hazmat.primitives import serialization

    sk = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
    pk = sk.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    req = {"pk": pk.hex(), "info": "696e666f", "aad": "", "pt": "68656c6c6f", "ikmE": "11" * 32}
    a, b = _js("hpke-seal-fixed", req), _js("hpke-seal-fixed", req)
    assert a == b
    data = bytes.fromhex(a["enc"] + a["ct"])
    assert SUITE.decrypt(data, sk, info=b"info") == b"hello"
