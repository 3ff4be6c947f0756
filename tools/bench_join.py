"""Join latency benchmark: from the therapist's "Admit" click to the client's first decoded remote frame.

    result = await bench_join(runs=10)

An Alcove server runs in this process (plain HTTP on 127.0.0.1, like the tests' fixture) and Playwright drives
Debian's Chromium (``/usr/bin/chromium``, fake camera and microphone). Each run creates an individual room,
joins the client (it waits in the waiting room) and the therapist (console), then clicks "Admit <name>" and
polls the client's ``inbound-rtp`` ``framesDecoded`` until it is above zero. Both ends of the interval are
browser times (``performance.timeOrigin + performance.now()``): the click's from the therapist's page just
before the click, the frame's from the client's page.

Baseline, in the same run: two pages with the same fake media connected by trivial in-page signaling
(SDP and candidates handed over directly with ``page.evaluate``, non-trickle), measured from the moment the
offer is created to the first decoded frame. ``ratio = median / baseline_median``.

Why one Chromium process was slow (measured 2026-11-26, see the lead's report): both pages then share ONE fake
capture device. When the two video senders start, the camera stalls for ~1.1 s for every consumer on both pages
(self view and previews stop too; ``media-source`` frames stay 0 and no encoder exists) as long as the hidden
join/waiting previews still render the camera; releasing any one of them, or one process per side
(``two_browsers=True`` / ``--two-browsers``, like two real devices), gives ~300-390 ms. ``override_js`` serves a
modified ``/static/js/<name>`` to the Alcove pages, for experiments without touching web/.

Run inside the loopback-only namespace (the browser needs ``--allow-loopback-in-peer-connection``):
    unshare -n sh -c 'ip link set lo up && .venv/bin/python -m tools.bench_join --runs 10 [--two-browsers]'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from tools.admin_client import create_room

from .chromium import CHROME_ARGS, CHROMIUM

__all__ = ["bench_join"]


# JS: the absolute time (ms since the epoch, sub-millisecond) of the first decoded remote video frame.
FIRST_FRAME_JS = """
async (timeout) => {
  const start = performance.now();
  while (performance.now() - start < timeout) {
    const stats = window.alcove ? await window.alcove.stats() : {};
    for (const s of Object.values(stats)) {
      if (s.framesDecoded > 0) return performance.timeOrigin + performance.now();
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return null;
}
"""

NOW_JS = "() => performance.timeOrigin + performance.now()"

# JS for the baseline pages (about:blank-like page served by the same server: /static is enough for an origin).
BASELINE_SETUP_JS = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: {ideal: 640}, height: {ideal: 480}}});
  const pc = new RTCPeerConnection({iceServers: []});
  stream.getTracks().forEach((t) => pc.addTrack(t, stream));
  window.bench = {pc, stream};
  pc.ontrack = (ev) => {
    const v = document.createElement("video");
    v.muted = true; v.autoplay = true; v.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    document.body.append(v);
  };
  return true;
}
"""
BASELINE_OFFER_JS = """
async () => {
  const pc = window.bench.pc;
  const t0 = performance.timeOrigin + performance.now();
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { if (pc.iceGatheringState === "complete") r(); else pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r()); });
  return {t0, sdp: pc.localDescription.sdp};
}
"""
BASELINE_ANSWER_JS = """
async (sdp) => {
  const pc = window.bench.pc;
  await pc.setRemoteDescription({type: "offer", sdp});
  await pc.setLocalDescription(await pc.createAnswer());
  await new Promise((r) => { if (pc.iceGatheringState === "complete") r(); else pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r()); });
  return pc.localDescription.sdp;
}
"""
BASELINE_APPLY_JS = "async (sdp) => { await window.bench.pc.setRemoteDescription({type: 'answer', sdp}); return true; }"
BASELINE_FIRST_FRAME_JS = """
async (timeout) => {
  const pc = window.bench.pc;
  const start = performance.now();
  while (performance.now() - start < timeout) {
    const report = await pc.getStats();
    let frames = 0;
    report.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded || 0; });
    if (frames > 0) return performance.timeOrigin + performance.now();
    await new Promise((r) => setTimeout(r, 5));
  }
  return null;
}
"""
BASELINE_CLOSE_JS = "() => { window.bench.pc.close(); window.bench.stream.getTracks().forEach((t) => t.stop()); }"


SETTLE_S = 1.0


async def _until(page: Any, expression: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {expression}")
        await asyncio.sleep(0.05)


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * (len(ordered) - 1))))]
    return {"median": round(statistics.median(ordered), 1), "p95": round(p95, 1)}


async def _start_server(data_dir: Path) -> tuple[web.AppRunner, str, str]:
    from server.app import create_app
    from server.config import Config, Secret

    admin_key = secrets.token_urlsafe(24)
    config = Config().with_(host="127.0.0.1", port=0, tls=False, admin_key=Secret(admin_key), data_dir=data_dir)
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", admin_key


async def _new_page(browser: Any, base: str, overrides: dict[str, str] | None = None) -> tuple[Any, Any]:
    ctx = await browser.new_context()
    await ctx.grant_permissions(["camera", "microphone"], origin=base)
    for name, body in (overrides or {}).items():
        await ctx.route(f"{base}/static/js/{name}*", _fulfil_js(body))
    return ctx, await ctx.new_page()


def _fulfil_js(body: str) -> Any:
    async def handler(route: Any) -> None:
        await route.fulfill(status=200, body=body, headers={"content-type": "text/javascript; charset=utf-8",
                                                            "cache-control": "no-store"})
    return handler


async def _alcove_run(browsers: tuple[Any, Any], http: Any, base: str, admin_key: str,
                      overrides: dict[str, str] | None = None) -> float:
    room = await create_room(http, base, admin_key, {"type": "individual", "start": "now", "host": "Bench"})
    cctx, client = await _new_page(browsers[0], base, overrides)
    tctx, therapist = await _new_page(browsers[1], base, overrides)
    try:
        await client.goto(room["client_links"][0])
        await client.get_by_label("Your name").fill("Alex")
        await client.get_by_role("button", name="Join", exact=True).click()
        await client.get_by_role("heading", name="Waiting for your therapist").wait_for()
        await therapist.goto(room["therapist_link"])
        await therapist.get_by_role("button", name="Join", exact=True).click()
        admit = therapist.get_by_role("button", name="Admit Alex", exact=True)
        await admit.wait_for()
        # A person looks at the console before admitting: let both pages settle (camera live, sockets open).
        await _until(therapist, "(() => { const v = document.querySelector('#tiles video[data-self]');"
                                " return !!v && v.readyState >= 2; })()")
        await asyncio.sleep(SETTLE_S)
        waiter = asyncio.ensure_future(client.evaluate(FIRST_FRAME_JS, 30000))
        # The click's time, from the therapist page's clock, right before the click is dispatched.
        clicked_at = await therapist.evaluate(NOW_JS)
        await admit.click()
        first = await waiter
        if first is None:
            raise RuntimeError("no frame decoded within 30 s")
        return float(first) - float(clicked_at)
    finally:
        await cctx.close()
        await tctx.close()


async def _baseline_run(browsers: tuple[Any, Any], base: str) -> float:
    actx, a = await _new_page(browsers[0], base)
    bctx, b = await _new_page(browsers[1], base)
    try:
        for page in (a, b):
            await page.goto(f"{base}/")
            await page.evaluate(BASELINE_SETUP_JS)
        await asyncio.sleep(SETTLE_S)
        offer = await a.evaluate(BASELINE_OFFER_JS)
        answer = await b.evaluate(BASELINE_ANSWER_JS, offer["sdp"])
        waiter = asyncio.ensure_future(b.evaluate(BASELINE_FIRST_FRAME_JS, 30000))
        await a.evaluate(BASELINE_APPLY_JS, answer)
        first = await waiter
        if first is None:
            raise RuntimeError("baseline: no frame decoded within 30 s")
        await a.evaluate(BASELINE_CLOSE_JS)
        await b.evaluate(BASELINE_CLOSE_JS)
        return float(first) - float(offer["t0"])
    finally:
        await actx.close()
        await bctx.close()


async def bench_join(runs: int = 10, override_js: dict[str, str | Path] | None = None,
                     two_browsers: bool = False) -> dict[str, Any]:
    """Median and p95 of admit-click → first decoded frame, against a bare two-page WebRTC baseline.

    ``override_js`` ({"session.js": "experiments/session.js"}): experiments only — the Alcove pages get these files
    instead of the server's ``/static/js/<name>`` (Playwright routing; nothing under web/ is touched).
    ``two_browsers``: each side in its own Chromium process (own fake camera), as on two real devices. With one
    process both pages share one fake capture device, and its frames stall for ~1.1 s for every consumer when
    the two video senders start while hidden previews still render the camera (see the module notes).
    """
    import aiohttp
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing (apt-get install chromium)")
    runs = max(1, int(runs))
    overrides = {name: Path(path).read_text() for name, path in (override_js or {}).items()}
    with tempfile.TemporaryDirectory(prefix="alcove-bench-") as tmp:
        runner, base, admin_key = await _start_server(Path(tmp))
        try:
            async with async_playwright() as p, aiohttp.ClientSession() as http:
                browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=list(CHROME_ARGS))
                other = (await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=list(CHROME_ARGS))
                         if two_browsers else browser)
                browsers = (browser, other)
                try:
                    # One warm-up of each (first getUserMedia and codec start-up are slower), not counted.
                    await _alcove_run(browsers, http, base, admin_key, overrides)
                    await _baseline_run(browsers, base)
                    admit_ms: list[float] = []
                    baseline_ms: list[float] = []
                    started = time.monotonic()
                    for _ in range(runs):  # interleaved, so both see the same machine load
                        admit_ms.append(await _alcove_run(browsers, http, base, admin_key, overrides))
                        baseline_ms.append(await _baseline_run(browsers, base))
                    elapsed = time.monotonic() - started
                finally:
                    await browser.close()
                    if other is not browser:
                        await other.close()
        finally:
            await runner.cleanup()
    admit = _summary(admit_ms)
    baseline = _summary(baseline_ms)
    ratio = None
    if admit["median"] is not None and baseline["median"]:
        ratio = round(float(admit["median"]) / float(baseline["median"]), 2)
    return {
        "runs": runs,
        "admit_to_first_frame_ms": admit,
        "baseline_ms": baseline,
        "ratio": ratio,
        "samples_ms": {"admit": [round(v, 1) for v in admit_ms], "baseline": [round(v, 1) for v in baseline_ms]},
        "seconds": round(elapsed, 1),
        "browsers": 2 if two_browsers else 1,
        **({"override_js": sorted(overrides)} if overrides else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--override-js", action="append", default=[], metavar="NAME=PATH",
                        help="experiments: serve PATH instead of /static/js/NAME to the Alcove pages")
    parser.add_argument("--two-browsers", action="store_true",
                        help="each side in its own Chromium process (own fake camera), like two real devices")
    args = parser.parse_args(argv)
    override = dict(item.split("=", 1) for item in args.override_js)
    result = bench_join(runs=args.runs, override_js=override, two_browsers=args.two_browsers)
    print(json.dumps(asyncio.run(result), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
