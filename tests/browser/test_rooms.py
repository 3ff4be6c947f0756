"""Rooms with more than two people: everyone decodes everyone (mesh)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import decodes_from_all, join, shot

pytestmark = pytest.mark.browser


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
    await shot(everyone[0], "console-family-of-five")
