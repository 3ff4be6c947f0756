"""Background blur CPU benchmark: browser CPU for a two-page call with the client's blur on against off.

    result = await bench_blur(seconds=10)

An Alcove server runs in this process (plain HTTP on 127.0.0.1) and Playwright drives Debian's Chromium
(tools/chromium.py), one Chromium per side like two real devices, each with a fake camera playing a person in
front of a busy background (tools/fake_camera.py), so the segmentation model has a foreground to find. Each
run joins the client, admits it from the therapist's console, waits until both decode each other's video, lets
the call settle and then adds up the CPU time of both browsers' processes (``/proc``, user + system) over
``seconds``. The two runs, blur off then blur on, happen in the same invocation, on the same machine load.

The blur is turned on the way a person does: this browser's remembered choice (localStorage), read by the join
page. To measure its cost even on a machine the product would call too slow (it would turn the blur off and
say so), the benchmark keeps it on through the page's test hook; the real segmentation time is reported as it
was (``frame_ms``, the moving average per mask), with whether it is over the product's limit (``over_limit``),
and with the output frames per second (``blurred_fps``, the camera's rate when the device keeps up), the masks
per second (``segment_fps``, at most 6) and the time to draw one output frame (``draw_ms``).

Run inside the loopback-only namespace (the browser needs ``--allow-loopback-in-peer-connection``):
    unshare -n sh -c 'ip link set lo up && .venv/bin/alcove bench blur --seconds 10 --json'
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.admin_client import create_room

from .bench_e2ee import _browser_root, _tree_cpu_seconds
from .bench_join import _start_server, _until
from .chromium import CHROMIUM, launch
from .fake_camera import write_y4m

__all__ = ["bench_blur"]

TARGET_RATIO = 1.5
BLUR_LIMIT_MS = 200  # web/static/js/lib/frame-meter.js BLUR_LIMIT_MS
SETTLE_S = 3.0
KEEP_BLUR_ON_JS = "window.__alcoveBlurTestExtraMs = -1e9;"
DECODING_JS = """(async () => {
  if (!window.alcove) return false;
  const stats = await window.alcove.stats();
  return Object.values(stats).some((s) => (s.framesDecoded || 0) > 10);
})()"""


async def _run(p: Any, camera: Path, http: Any, base: str, admin_key: str, blur: bool,
               seconds: float) -> dict[str, Any]:
    markers = [f"--alcove-bench={secrets.token_hex(6)}" for _ in range(2)]  # finds each browser's process tree
    client_browser = await launch(p, f"--use-file-for-fake-video-capture={camera}", markers[0])
    therapist_browser = await launch(p, f"--use-file-for-fake-video-capture={camera}", markers[1])
    try:
        room = await create_room(http, base, admin_key, {"type": "individual", "start": "now", "host": "Bench"})
        pages = []
        for browser in (client_browser, therapist_browser):
            ctx = await browser.new_context()
            await ctx.grant_permissions(["camera", "microphone"], origin=base)
            pages.append(await ctx.new_page())
        client, therapist = pages
        await client.add_init_script(f"localStorage.setItem('alcove.blur', {'on' if blur else 'off'!r});")
        if blur:
            await client.add_init_script(KEEP_BLUR_ON_JS)
        await therapist.goto(room["therapist_link"])
        await therapist.get_by_role("button", name="Join", exact=True).click()
        await client.goto(room["client_links"][0])
        await client.get_by_label("Your name").fill("Alex")
        await _until(client, f"document.body.dataset.blur === {'on' if blur else 'off'!r}", timeout=60)
        await client.get_by_role("button", name="Join", exact=True).click()
        admit = therapist.get_by_role("button", name="Admit Alex", exact=True)
        await admit.wait_for(timeout=30000)
        await admit.click()
        for page in (client, therapist):
            await _until(page, DECODING_JS, timeout=60)
        await asyncio.sleep(SETTLE_S)
        roots = [_browser_root(marker) for marker in markers]
        start = [_tree_cpu_seconds(root) for root in roots]
        t0 = time.monotonic()
        state0 = await client.evaluate("window.alcove.blur()") or {}
        await asyncio.sleep(seconds)
        end = [_tree_cpu_seconds(root) for root in roots]
        elapsed = time.monotonic() - t0
        state = await client.evaluate("window.alcove.blur()") or {}
        client_cpu, therapist_cpu = (e - b for b, e in zip(start, end, strict=True))
        total = client_cpu + therapist_cpu
        result: dict[str, Any] = {
            "cpu_cores": round(total / elapsed, 3),
            "client_cpu_cores": round(client_cpu / elapsed, 3),
            "therapist_cpu_cores": round(therapist_cpu / elapsed, 3),
            "blur_state": state.get("state"),
        }
        if blur:
            real = float(state.get("realMs") or 0)
            def rate(key: str) -> float:
                return round((int(state.get(key) or 0) - int(state0.get(key) or 0)) / elapsed, 1)

            result.update(frame_ms=round(real, 1), over_limit=real > BLUR_LIMIT_MS, blurred_fps=rate("frames"),
                          segment_fps=rate("segments"), draw_ms=round(float(state.get("drawMs") or 0), 1))
        return result
    finally:
        await client_browser.close()
        await therapist_browser.close()


async def bench_blur(seconds: float = 10.0) -> dict[str, Any]:
    """Both browsers' CPU (in cores) for a two-page call, the client's blur off and on, and the ratio."""
    import aiohttp
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing (apt-get install chromium)")
    seconds = max(1.0, float(seconds))
    with tempfile.TemporaryDirectory(prefix="alcove-bench-") as tmp:
        camera = write_y4m(Path(tmp) / "person.y4m")
        runner, base, admin_key = await _start_server(Path(tmp))
        try:
            async with async_playwright() as p, aiohttp.ClientSession() as http:
                off = await _run(p, camera, http, base, admin_key, False, seconds)
                on = await _run(p, camera, http, base, admin_key, True, seconds)
        finally:
            await runner.cleanup()
    ratio = round(on["cpu_cores"] / off["cpu_cores"], 2) if off["cpu_cores"] else None
    return {
        "seconds": seconds,
        "off": off,
        "on": on,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "within_target": ratio is not None and ratio <= TARGET_RATIO,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
