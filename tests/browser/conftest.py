"""Browser tests: Playwright driving Debian's Chromium (never a downloaded browser) against the real server.

Run inside the loopback-only namespace:
    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q -m browser tests/browser'
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import require_chromium
from tools.chromium import launch

# Keeps every RTCPeerConnection a page makes (an init script runs outside the page's CSP).
TRACK_PCS = """(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) { const pc = new Native(...args); window.__pcs.push(pc); return pc; };
  window.RTCPeerConnection.prototype = Native.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Native);
})();"""
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await launch(p)
        try:
            yield b
        finally:
            await b.close()


class Pages:
    """Opens pages in fresh contexts (each one a separate device) and fails on any request that leaves the
    server's origin."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.browser = browser
        self.origin = _origin(base_url)
        self.foreign: list[str] = []
        self.console_errors: list[str] = []
        self.contexts: list[Any] = []

    async def new(self, *, viewport: dict[str, int] | None = None, permissions: list[str] | None = None,
                  grant_media: bool = True) -> Any:
        ctx = await self.browser.new_context(viewport=viewport or {"width": 1200, "height": 800},
                                             color_scheme="light", locale="en-GB", timezone_id="Europe/Bucharest")
        if grant_media:
            await ctx.grant_permissions(permissions or ["camera", "microphone"], origin=self.origin)
        self.contexts.append(ctx)
        page = await ctx.new_page()

        def on_request(req: Any) -> None:
            url = req.url
            if url.startswith(("data:", "blob:", "about:")):
                return
            if _origin(url) != self.origin:
                self.foreign.append(url)

        page.on("request", on_request)
        page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.console_errors.append(f"{msg.type}: {msg.text}"))
        return page

    async def close(self) -> None:
        for ctx in self.contexts:
            try:
                await ctx.close()
            except Exception:
                pass


def _origin(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}".lower()


@pytest.fixture
async def pages(browser: Any, alcove: Any) -> AsyncIterator[Pages]:
    p = Pages(browser, alcove.url)
    try:
        yield p
    finally:
        for line in p.console_errors[-60:]:
            print("[browser]", line)
        await p.close()
    assert not p.foreign, f"requests to other origins: {p.foreign}"


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0, every: float = 0.25,
                   what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def frames(page: Any) -> dict[str, int]:
    """framesDecoded per remote peer (inbound-rtp video), from the page's own stats helper."""
    stats: dict[str, dict[str, Any]] = await page.evaluate("async () => window.alcove ? window.alcove.stats() : {}")
    return {pid: int(s.get("framesDecoded", 0)) for pid, s in stats.items()}


async def decodes_from_all(page: Any, n_peers: int, timeout: float = 25.0, min_frames: int = 10) -> dict[str, int]:
    """Waits until the page decodes video from `n_peers` peers, and that decoding keeps going."""
    first: dict[str, int] = {}

    async def ready() -> bool:
        nonlocal first
        first = await frames(page)
        return len(first) == n_peers and all(v >= min_frames for v in first.values())

    await wait_for(ready, timeout=timeout, what=f"video decoded from {n_peers} peer(s)")
    later: dict[str, int] = {}

    async def grows() -> bool:
        nonlocal later
        later = await frames(page)
        return all(later.get(pid, 0) > v for pid, v in first.items())

    await wait_for(grows, timeout=10, what="decoded frames to keep growing")
    return later


async def join(page: Any, link: str, name: str | None = None) -> None:
    """Opens a link, types the name (if given) and clicks Join."""
    await page.goto(link)
    await page.get_by_role("button", name="Join", exact=True).wait_for()
    if name is not None:
        await page.get_by_label("Your name").fill(name)
    await page.get_by_role("button", name="Join", exact=True).click()


async def shot(page: Any, name: str, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page, animations="disabled")


# Every shown overlay of every tile (badges, the "video paused" note, the name, the floating self-view's move button):
# its box, the box it must stay in (the overlay column clips what does not fit; the rest sit in the tile).
OVERLAYS = """() => [...document.querySelectorAll('#tiles .tile')].map((tile) => {
  const box = (el) => { const r = el.getBoundingClientRect(); return { x: r.left, y: r.top, r: r.right, b: r.bottom }; };
  const over = tile.querySelector('.tile-over');
  const shown = [...tile.querySelectorAll(
      '.e2ee-badge, .verify-badge, .quality, .badge, .hand-badge, .state-badge, .paused-note, .name, .move-self')]
    .filter((el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden')
    .filter((el) => { const r = el.getBoundingClientRect(); return r.width > 1 || r.height > 1; });  // not for screen readers only
  // the words of an overlay that are drawn across two lines ("Unverif" / "ied"): a word's range has boxes on two lines
  const broken = (el) => {
    const out = [];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.data.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const lines = new Set([...range.getClientRects()].filter((r) => r.width > 0.5 && r.height > 0.5)
          .map((r) => Math.round(r.top)));
        if (lines.size > 1) out.push(m[0]);
      }
    }
    return out;
  };
  return { tile: tile.getAttribute('aria-label'), box: box(tile),
           overlays: shown.map((el) => ({ what: el.className.split(' ')[0], text: el.textContent, ...box(el),
                                          within: box(el.closest('.tile-over') ? over : tile),
                                          broken: broken(el) })) };
})"""


async def overlays_apart(page: Any, where: str) -> set[str]:
    """Every shown overlay of every tile is seen whole (at least 6 px each way, inside its tile and not clipped by
    the overlay column, no word drawn across two lines) and none covers another; returns the kinds of overlay seen."""
    seen: set[str] = set()
    for tile in await page.evaluate(OVERLAYS):
        items = tile["overlays"]
        for o in items:
            seen.add(o["what"])
            w = o["within"]
            assert o["r"] - o["x"] >= 6 and o["b"] - o["y"] >= 6, f"{where}: {o} on {tile['tile']}'s tile is not seen"
            assert o["x"] >= w["x"] - 0.5 and o["r"] <= w["r"] + 0.5 and o["y"] >= w["y"] - 0.5 \
                and o["b"] <= w["b"] + 0.5, f"{where}: {o} is cut off on {tile['tile']}'s tile {tile['box']}"
            assert not o["broken"], f"{where}: {o['broken']} broken across lines in {o} on {tile['tile']}'s tile"
        for i, a in enumerate(items):
            for b in items[i + 1:]:
                apart = a["r"] <= b["x"] + 0.5 or b["r"] <= a["x"] + 0.5 or a["b"] <= b["y"] + 0.5 \
                    or b["b"] <= a["y"] + 0.5
                assert apart, f"{where}: on {tile['tile']}'s tile {a} covers {b}"
    return seen


async def wait_js(page: Any, expression: str, timeout: float = 15.0) -> None:
    """Polls a JS expression (page.wait_for_function would need 'unsafe-eval', which the CSP forbids)."""

    async def truthy() -> bool:
        return bool(await page.evaluate(expression))

    await wait_for(truthy, timeout=timeout, every=0.1, what=expression)
