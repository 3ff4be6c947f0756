"""Cost of Alcove's SFrame layer in Python against raw AES-GCM on the same frames.

    .venv/bin/python -m tools.bench_e2ee --seconds 5 --json

Each round protects and unprotects a realistic mix of encoded frames with :class:`peer.sframe.FrameEncryptor`
and :class:`peer.sframe.FrameDecryptor` (suite 4, AES-128-GCM, the media path of ``KeyState``): 3 VP8 delta
frames of ~2 KB (3 clear bytes) for every 5 Opus frames of ~100 B (1 clear byte), i.e. 30 fps video next to
50 fps audio. The baseline is ``cryptography``'s ``AESGCM`` encrypt + decrypt of the same frames with a
counter nonce and no header/AAD bookkeeping. The two alternate in short slices in one run (so CPU frequency
and noise hit both alike); throughput counts plaintext bytes (1 MB = 10^6 B), ``ratio`` = SFrame / raw
(target >= 0.7).

``browser`` (when /usr/bin/chromium is there): :func:`bench_browser` runs a real two-page mesh call (therapist
and one client, fake 640x480 camera, the real Alcove server on 127.0.0.1) once without and once with E2EE
(SFrame worker, signed SDP), alternating, and sums the CPU time (utime+stime from /proc/<pid>/stat) of the
whole Chromium process tree over the measured window; ``ratio`` = E2EE / plain (target <= 1.10). It is a
whole-browser figure (encode, decode, render, SFrame), so machine load adds noise: compare ratios, not
absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peer.sframe import FrameDecryptor, FrameEncryptor, FrameKind
from tools.admin_client import create_room

__all__ = ["bench_browser", "bench_e2ee", "main", "sample_frames"]

CHROMIUM = "/usr/bin/chromium"

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


# ---------------------------------------------------------------------------------------------------------------
# Browser: Chromium CPU for a two-page mesh call, with and without E2EE
# ---------------------------------------------------------------------------------------------------------------

_FRAMES_JS = ("async () => { const s = window.alcove ? await window.alcove.stats() : {};"
              " return Object.values(s).map(x => x.framesDecoded || 0); }")


def _tree_cpu_seconds(root: int) -> float:
    """utime+stime (s) of ``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def _browser_root(marker: str) -> int:
    """The Chromium main process (the one launched with ``marker`` on its command line)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmd and not any(a.startswith(b"--type=") for a in cmd):
            return int(entry)
    raise RuntimeError("Chromium main process not found")


async def _browser_call(browser: Any, http: Any, base: str, admin_key: str, *, e2ee: bool, seconds: float,
                        root: int) -> dict[str, Any]:
    room = await create_room(http, base, admin_key, {"type": "individual", "start": "now", "host": "Bench"})
    t_link, c_link = room["therapist_link"], room["client_links"][0]
    if e2ee:  # the link secret in both links turns E2EE on (the client's MAC checks out; no tk: SAS only)
        s = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        t_link, c_link = t_link + f"&s={s}", c_link + f"&s={s}"
    contexts, pages = [], []
    try:
        for _ in range(2):
            ctx = await browser.new_context()
            await ctx.grant_permissions(["camera", "microphone"], origin=base)
            contexts.append(ctx)
            pages.append(await ctx.new_page())
        therapist, client = pages
        await therapist.goto(t_link)
        await therapist.get_by_role("button", name="Join", exact=True).click()
        await client.goto(c_link)
        await client.get_by_label("Your name").fill("Alex")
        await client.get_by_role("button", name="Join", exact=True).click()
        admit = therapist.get_by_role("button", name="Admit Alex", exact=True)
        await admit.wait_for()
        deadline = time.monotonic() + 20
        while not await admit.is_enabled():  # E2EE: enabled once the intro is checked
            if time.monotonic() > deadline:
                raise RuntimeError("admit button stayed disabled")
            await asyncio.sleep(0.1)
        await admit.click()
        deadline = time.monotonic() + 40
        while True:
            counts = [await p.evaluate(_FRAMES_JS) for p in pages]
            if all(c and min(c) >= 30 for c in counts):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"call did not start (e2ee={e2ee}): {counts}")
            await asyncio.sleep(0.25)
        await asyncio.sleep(2.0)  # past the start-up (key frames, bitrate ramp)
        before = [sum(await p.evaluate(_FRAMES_JS)) for p in pages]
        cpu0, t0 = _tree_cpu_seconds(root), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = _tree_cpu_seconds(root), time.monotonic()
        after = [sum(await p.evaluate(_FRAMES_JS)) for p in pages]
        if e2ee:
            state = await client.evaluate("window.alcove.e2ee()")
            if not state or not state.get("peers", {}).get("self", {}).get("encrypted"):
                raise RuntimeError("E2EE run without encrypted frames")
        return {"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "frames": sum(a - b for a, b in zip(after, before, strict=True))}
    finally:
        for ctx in contexts:
            await ctx.close()


async def bench_browser(seconds: float = 10.0, *, rounds: int = 2) -> dict[str, Any]:
    """Chromium CPU (whole process tree) for a two-page mesh call without and with E2EE; ratio = E2EE / plain."""
    import aiohttp
    from aiohttp import web
    from playwright.async_api import async_playwright

    from server.app import create_app
    from server.config import Config, Secret

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing")
    marker = f"--alcove-bench={secrets.token_hex(6)}"
    args = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", marker]
    totals = {"plain": {"cpu_s": 0.0, "wall_s": 0.0, "frames": 0}, "e2ee": {"cpu_s": 0.0, "wall_s": 0.0, "frames": 0}}
    samples: list[list[float]] = []  # per round: [plain cpu %, e2ee cpu %]
    with tempfile.TemporaryDirectory(prefix="alcove-bench-") as tmp:
        admin_key = secrets.token_urlsafe(24)
        config = Config().with_(host="127.0.0.1", port=0, tls=False, admin_key=Secret(admin_key), data_dir=Path(tmp))
        runner = web.AppRunner(create_app(config), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with async_playwright() as p, aiohttp.ClientSession() as http:
                browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
                try:
                    root = _browser_root(marker)
                    for _ in range(max(1, rounds)):  # alternating, so both modes see the same machine load
                        pair = {}
                        for mode in ("plain", "e2ee"):
                            r = await _browser_call(browser, http, base, admin_key, e2ee=mode == "e2ee",
                                                    seconds=seconds, root=root)
                            for k in totals[mode]:
                                totals[mode][k] += r[k]
                            pair[mode] = 100 * r["cpu_s"] / r["wall_s"]
                        samples.append([round(pair["plain"], 1), round(pair["e2ee"], 1)])
                finally:
                    await browser.close()
        finally:
            await runner.cleanup()
    out: dict[str, Any] = {}
    for mode, t in totals.items():
        out[mode] = {"cpu_pct": round(100 * t["cpu_s"] / t["wall_s"], 1),
                     "frames_per_s": round(t["frames"] / t["wall_s"], 1)}
    plain, enc = out["plain"]["cpu_pct"], out["e2ee"]["cpu_pct"]
    out["ratio"] = round(enc / plain, 3) if plain else None
    out["target_ratio"] = 1.10
    out["rounds_cpu_pct"] = samples
    out["setup"] = "two Chromium pages (therapist + client), mesh, fake 640x480 camera, CPU of the whole browser tree"
    out["seconds"] = round(totals["plain"]["wall_s"] + totals["e2ee"]["wall_s"], 1)
    return out


async def bench_e2ee(*, seconds: float = 5.0, browser: bool | None = None) -> dict[str, Any]:
    """SFrame protect+unprotect vs raw AES-GCM encrypt+decrypt (Python); runs in a thread, off the loop. Plus the
    browser figure (:func:`bench_browser`, about a minute) when asked for, or with ``browser=None`` when Chromium
    is available and ``seconds >= 3`` (short smoke runs skip it)."""
    python = await asyncio.to_thread(_run, seconds)
    result: dict[str, Any] = {
        "python": python,
        "browser": None,
        "note": "browser: Chromium CPU (whole process tree) for a two-page mesh call, plain vs E2EE (bench_browser)",
    }
    if browser is None:
        browser = Path(CHROMIUM).exists() and seconds >= 3
    if browser:
        try:
            result["browser"] = await bench_browser(max(seconds, 5.0))
        except Exception as err:  # the Python figure stands on its own
            result["browser_error"] = f"{type(err).__name__}: {err}"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alcove bench e2ee", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium CPU measurement")
    args = parser.parse_args(argv)
    result = asyncio.run(bench_e2ee(seconds=args.seconds, browser=False if args.no_browser else None))
    if args.json:
        print(json.dumps(result))
    else:
        p = result["python"]
        print(f"SFrame {p['sframe_mb_s']} MB/s, AES-GCM {p['aesgcm_mb_s']} MB/s, ratio {p['ratio']} "
              f"({p['frames']} frames)")
        b = result.get("browser")
        if b:
            print(f"Chromium CPU: plain {b['plain']['cpu_pct']} %, E2EE {b['e2ee']['cpu_pct']} %, ratio {b['ratio']} "
                  f"(target <= {b['target_ratio']})")
        elif result.get("browser_error"):
            print(f"Chromium CPU: not measured ({result['browser_error']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
