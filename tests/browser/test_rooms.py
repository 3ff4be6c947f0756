"""Rooms with more than two people: everyone decodes everyone (mesh)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import decodes_from_all, join, shot, wait_js

pytestmark = pytest.mark.browser

# Every shown overlay of every tile (badges, the name), its box and its tile's.
OVERLAYS = """() => [...document.querySelectorAll('#tiles .tile')].map((tile) => {
  const box = (el) => { const r = el.getBoundingClientRect(); return { x: r.left, y: r.top, r: r.right, b: r.bottom }; };
  const shown = [...tile.querySelectorAll('.e2ee-badge, .verify-badge, .quality, .badge, .hand-badge, .state-badge, .name')]
    .filter((el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden');
  return { tile: tile.getAttribute('aria-label'), box: box(tile),
           overlays: shown.map((el) => ({ what: el.className, text: el.textContent, ...box(el) })) };
})"""


async def overlays_apart(page: Any, where: str) -> set[str]:
    """No badge of a tile covers another or leaves its tile; returns the kinds of overlay seen."""
    seen: set[str] = set()
    for tile in await page.evaluate(OVERLAYS):
        t, items = tile["box"], tile["overlays"]
        for o in items:
            seen.add(o["what"])
            assert o["x"] >= t["x"] - 0.5 and o["r"] <= t["r"] + 0.5 and o["y"] >= t["y"] - 0.5 \
                and o["b"] <= t["b"] + 0.5, f"{where}: {o} leaves the tile {tile['tile']} {t}"
        for i, a in enumerate(items):
            for b in items[i + 1:]:
                apart = a["r"] <= b["x"] + 0.5 or b["r"] <= a["x"] + 0.5 or a["b"] <= b["y"] + 0.5 \
                    or b["b"] <= a["y"] + 0.5
                assert apart, f"{where}: on {tile['tile']}'s tile {a} covers {b}"
    return seen


async def _everyone_decodes_everyone(alcove: Any, pages: Any, type: str, clients: int, **extra: Any) -> list[Any]:
    room = await alcove.create_room(type=type, clients=clients, host="Dr. Ionescu", **extra)
    therapist = await pages.new(viewport={"width": 1000, "height": 700})
    await join(therapist, room["therapist_link"])
    people = []
    for i, link in enumerate(room["client_links"]):
        page = await pages.new(viewport={"width": 800, "height": 600})
        await join(page, link, f"Client {i + 1}")
        people.append(page)
    await therapist.get_by_role("button", name=f"Admit Client {clients}", exact=True).wait_for()
    if type in ("family", "group"):
        await therapist.get_by_role("button", name="Admit all", exact=True).click()
    else:
        for i in range(clients):
            await therapist.get_by_role("button", name=f"Admit Client {i + 1}", exact=True).click()
    everyone = [therapist, *people]
    await asyncio.gather(*(decodes_from_all(p, len(everyone) - 1, timeout=45) for p in everyone))
    return everyone


async def test_couple_session_everyone_decodes_everyone(alcove: Any, pages: Any) -> None:
    await _everyone_decodes_everyone(alcove, pages, "couple", 2)


async def test_family_session_of_five_everyone_decodes_everyone(alcove: Any, pages: Any) -> None:
    everyone = await _everyone_decodes_everyone(alcove, pages, "family", 4, topology="mesh")
    tiles = await everyone[0].evaluate("document.querySelectorAll('#tiles .tile').length")
    assert tiles == 5
    therapist = everyone[0]
    await wait_js(therapist, "document.querySelectorAll('#tiles .tile .quality').length === 5")
    await shot(therapist, "console-family-of-five")
    # Five tiles side by side are narrow: the encryption, "not verified" and connection badges must all be seen,
    # none over another (they once overlapped), at desktop and phone size, in each language.
    for lang, switch in (("en", None), ("ro", "Română")):
        if switch:
            await therapist.get_by_role("button", name=switch, exact=True).first.click()
            await wait_js(therapist, f"document.documentElement.lang === {lang!r}")
        for size, viewport in (("desktop", {"width": 1000, "height": 700}), ("phone", {"width": 390, "height": 844})):
            await therapist.set_viewport_size(viewport)
            seen = await overlays_apart(therapist, f"{size} {lang}")
            assert {"e2ee-badge", "verify-badge", "quality", "name"} <= seen, seen
            await shot(therapist, f"console-family-of-five-{size}-{lang}")
