"""Cost of Alcove's SFrame layer in Python against raw AES-GCM on the same frames.

    .venv/bin/python -m peer.bench_e2ee --seconds 5 --json

Each round protects and unprotects a realistic mix of encoded frames with :class:`peer.sframe.FrameEncryptor`
and :class:`peer.sframe.FrameDecryptor` (suite 4, AES-128-GCM, the media path of ``KeyState``): 3 VP8 delta
frames of ~2 KB (3 clear bytes) for every 5 Opus frames of ~100 B (1 clear byte), i.e. 30 fps video next to
50 fps audio. The baseline is ``cryptography``'s ``AESGCM`` encrypt + decrypt of the same frames with a
counter nonce and no header/AAD bookkeeping. The two alternate in short slices in one run (so CPU frequency
and noise hit both alike); throughput counts plaintext bytes (1 MB = 10^6 B), ``ratio`` = SFrame / raw
(target >= 0.7).

``browser`` is ``None``: Chromium's CPU with and without E2EE is measured separately (tests/browser).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .sframe import FrameDecryptor, FrameEncryptor, FrameKind

__all__ = ["bench_e2ee", "main", "sample_frames"]

SLICE = 0.2  # seconds per alternating slice


def sample_frames(seed: int = 1) -> list[tuple[FrameKind, bytes]]:
    """3 VP8 delta frames (~2 KB) and 5 Opus frames (~100 B), interleaved as they would be sent."""
    rnd = os.urandom
    out: list[tuple[FrameKind, bytes]] = []
    for i in range(5):
        out.append(("audio", bytes([0x78]) + rnd(95 + 3 * i)))
        if i < 3:
            out.append(("video", bytes([0x31, 0x02, 0x00]) + rnd(1980 + 40 * i + seed)))
    return out


def _sframe_slice(enc: FrameEncryptor, dec: FrameDecryptor, frames: list[tuple[FrameKind, bytes]],
                  until: float) -> tuple[int, int]:
    n = nbytes = 0
    while time.perf_counter() < until:
        for kind, frame in frames:
            protected = enc.protect(kind, frame)
            if dec.unprotect(kind, protected, 1) != frame:
                raise RuntimeError("SFrame round trip failed")
            n += 1
            nbytes += len(frame)
    return n, nbytes


def _aesgcm_slice(aead: AESGCM, counter: list[int], frames: list[tuple[FrameKind, bytes]],
                  until: float) -> tuple[int, int]:
    n = nbytes = 0
    while time.perf_counter() < until:
        for _, frame in frames:
            counter[0] += 1
            nonce = counter[0].to_bytes(12, "big")
            if aead.decrypt(nonce, aead.encrypt(nonce, frame, None), None) != frame:
                raise RuntimeError("AES-GCM round trip failed")
            n += 1
            nbytes += len(frame)
    return n, nbytes


def _run(seconds: float) -> dict[str, Any]:
    base_key = os.urandom(16)
    enc, dec = FrameEncryptor(), FrameDecryptor()
    enc.set_key(7, 1, base_key)
    dec.add_key(7, 1, base_key)
    aead = AESGCM(os.urandom(16))
    counter = [0]
    frames = sample_frames()
    totals = {"sframe": [0, 0, 0.0], "aesgcm": [0, 0, 0.0]}  # frames, bytes, seconds
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for name in ("sframe", "aesgcm"):
            started = time.perf_counter()
            until = started + SLICE / 2
            if name == "sframe":
                n, b = _sframe_slice(enc, dec, frames, until)
            else:
                n, b = _aesgcm_slice(aead, counter, frames, until)
            t = totals[name]
            t[0] += n
            t[1] += b
            t[2] += time.perf_counter() - started
    sframe_mb_s = totals["sframe"][1] / totals["sframe"][2] / 1e6
    aesgcm_mb_s = totals["aesgcm"][1] / totals["aesgcm"][2] / 1e6
    return {
        "sframe_mb_s": round(sframe_mb_s, 2),
        "aesgcm_mb_s": round(aesgcm_mb_s, 2),
        "ratio": round(sframe_mb_s / aesgcm_mb_s, 3) if aesgcm_mb_s else None,
        "frames": int(totals["sframe"][0]),
        "sframe_frames_per_s": round(totals["sframe"][0] / totals["sframe"][2]),
        "aesgcm_frames_per_s": round(totals["aesgcm"][0] / totals["aesgcm"][2]),
        "mix": "3 VP8 delta ~2 KB : 5 Opus ~100 B",
        # one published A/V stream (30 video + 50 audio frames/s), protected once and unprotected once
        "cpu_pct_per_av_stream": round(80 / (totals["sframe"][0] / totals["sframe"][2]) * 100, 3),
        "seconds": round(totals["sframe"][2] + totals["aesgcm"][2], 2),
    }


async def bench_e2ee(*, seconds: float = 5.0) -> dict[str, Any]:
    """SFrame protect+unprotect vs raw AES-GCM encrypt+decrypt (Python); runs in a thread, off the loop."""
    python = await asyncio.to_thread(_run, seconds)
    return {
        "python": python,
        "browser": None,
        "note": "browser: Chromium CPU with/without E2EE is measured separately by the browser tests",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alcove bench e2ee", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(bench_e2ee(seconds=args.seconds))
    if args.json:
        print(json.dumps(result))
    else:
        p = result["python"]
        print(f"SFrame {p['sframe_mb_s']} MB/s, AES-GCM {p['aesgcm_mb_s']} MB/s, ratio {p['ratio']} "
              f"({p['frames']} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
