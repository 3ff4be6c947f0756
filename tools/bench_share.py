"""Browser CPU of screen sharing: a two-page call with the therapist sharing a screen at 5 fps against no share.

    unshare -n sh -c 'ip link set lo up && .venv/bin/python -m tools.bench_share --seconds 10 --json'

One run, one call (therapist and one client, Chromium from tools/chromium.py with fake devices and the fake
screen picked without a picker, the real Alcove server on 127.0.0.1, end-to-end encryption on, mesh): phases
without and with the share alternate (``rounds`` times each, so both see the same machine load), and the CPU
time (utime+stime from /proc) of the whole Chromium process tree is summed over each phase's window.
``ratio`` = share / none. The share is what the client's UI shares (lib/share.js: at most 5 fps, at most 1080
lines, ``contentHint = "detail"``); its captured and decoded size are reported as measured (the fake screen of
Chromium's test devices is the source, so the size is the fake device's, not necessarily 1920x1080). A
whole-browser figure (capture, encode, SFrame, decode, render), so machine load adds noise: compare ratios.
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

from tools.admin_client import create_room
from tools.bench_e2ee import _browser_root, _tree_cpu_seconds
from tools.bench_join import _start_server
from tools.chromium import CHROMIUM, SHARE_ARGS, launch

__all__ = ["bench_share", "main"]

_SHARE_JS = "window.alcove.share()"
_CLICK_SHARE = "document.getElementById('btn-share').click()"  # the toolbar's Share / Stop sharing


async def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {what}")
        await asyncio.sleep(0.25)


async def _phase(root: int, seconds: float) -> tuple[float, float]:
    cpu0, t0 = _tree_cpu_seconds(root), time.monotonic()
    await asyncio.sleep(seconds)
    return _tree_cpu_seconds(root) - cpu0, time.monotonic() - t0


async def bench_share(seconds: float = 10.0, *, rounds: int = 2) -> dict[str, Any]:
    """Chromium CPU (whole process tree) for a two-page call with and without a screen share; ratio = share/none."""
    import aiohttp
    from playwright.async_api import async_playwright

    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing")
    marker = f"--alcove-bench={secrets.token_hex(6)}"
    totals = {"none": [0.0, 0.0], "share": [0.0, 0.0]}  # cpu s, wall s
    samples: list[list[float]] = []
    share_frames = 0
    size: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="alcove-bench-") as tmp:
        runner, base, admin_key = await _start_server(Path(tmp))
        try:
            async with async_playwright() as p, aiohttp.ClientSession() as http:
                browser = await launch(p, *SHARE_ARGS, marker)
                try:
                    root = _browser_root(marker)
                    room = await create_room(http, base, admin_key, {"type": "individual", "start": "now", "host": "Bench"})
                    s = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
                    t_link, c_link = room["therapist_link"] + f"&s={s}", room["client_links"][0] + f"&s={s}"
                    pages = []
                    for _ in range(2):
                        ctx = await browser.new_context(viewport={"width": 1280, "height": 720})
                        await ctx.grant_permissions(["camera", "microphone"], origin=base)
                        pages.append(await ctx.new_page())
                    therapist, client = pages
                    await therapist.goto(t_link)
                    await therapist.get_by_role("button", name="Join", exact=True).click()
                    await client.goto(c_link)
                    await client.get_by_label("Your name").fill("Alex")
                    await client.get_by_role("button", name="Join", exact=True).click()
                    admit = therapist.get_by_role("button", name="Admit Alex", exact=True)
                    await admit.wait_for()
                    await _wait(admit.is_enabled, 20, "intro checked")
                    await admit.click()

                    async def decoding() -> bool:
                        stats = await client.evaluate("window.alcove.stats()")
                        return bool(stats) and all(v.get("framesDecoded", 0) >= 30 for v in stats.values())

                    await _wait(decoding, 40, "the call started")
                    await asyncio.sleep(2.0)
                    t_pid = await therapist.evaluate("window.alcove.pid()")
                    for _ in range(max(1, rounds)):
                        pair = {}
                        cpu, wall = await _phase(root, seconds)
                        totals["none"][0] += cpu
                        totals["none"][1] += wall
                        pair["none"] = 100 * cpu / wall
                        await therapist.evaluate(_CLICK_SHARE)  # Share screen

                        async def shown() -> bool:
                            st = await client.evaluate(_SHARE_JS)
                            return bool(st["shown"] == t_pid and st["frames"].get(t_pid, {}).get("framesDecoded", 0) >= 5)

                        await _wait(shown, 30, "the share decoded")
                        await asyncio.sleep(1.0)
                        f0 = (await client.evaluate(_SHARE_JS))["frames"][t_pid]["framesDecoded"]
                        cpu, wall = await _phase(root, seconds)
                        st = (await client.evaluate(_SHARE_JS))["frames"][t_pid]
                        share_frames += st["framesDecoded"] - f0
                        size = {"width": st["width"], "height": st["height"]}
                        totals["share"][0] += cpu
                        totals["share"][1] += wall
                        pair["share"] = 100 * cpu / wall
                        await therapist.evaluate(_CLICK_SHARE)  # Stop sharing
                        await _wait(lambda: _not_shown(client), 30, "the share stopped")
                        samples.append([round(pair["none"], 1), round(pair["share"], 1)])
                    for page in pages:
                        await page.context.close()
                finally:
                    await browser.close()
        finally:
            await runner.cleanup()
    none = 100 * totals["none"][0] / totals["none"][1]
    share = 100 * totals["share"][0] / totals["share"][1]
    return {
        "none": {"cpu_pct": round(none, 1)},
        "share": {"cpu_pct": round(share, 1), "decoded_fps": round(share_frames / totals["share"][1], 1), **size},
        "ratio": round(share / none, 3) if none else None,
        "rounds_cpu_pct": samples,
        "setup": "two Chromium pages (therapist + client), mesh, E2EE, fake camera; the therapist shares the fake "
                 "screen at <= 5 fps; CPU of the whole browser tree",
        "seconds": round(totals["none"][1] + totals["share"][1], 1),
    }


async def _not_shown(client: Any) -> bool:
    st = await client.evaluate(_SHARE_JS)
    return st["shown"] is None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alcove bench share", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(bench_share(args.seconds))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
