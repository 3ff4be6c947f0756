"""The safety check's settings (per room, and the practice's emergency numbers) and group manners on the server:
room creation takes the new optional fields (bad values are typed errors that create nothing), the client page
gets them with its ticket, and admitted members never see the waiting room."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.participant import Participant
from peer.signaling_client import token_of
from server.config import Config
from signaling import messages as m
from signaling.safety import EmergencyNumber, SafetySettings, parse_numbers

from ..conftest import serving

pytestmark = pytest.mark.integration


async def room_of(alcove: Any, link: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{alcove.url}/api/session", json={"token": token_of(link)}) as r:
        assert r.status == 200
        room: dict[str, Any] = (await r.json())["room"]
        return room


async def test_a_room_is_optional_by_default_and_carries_the_practice_numbers(alcove: Any) -> None:
    room = await alcove.create_room("individual")
    assert room["safety_check"] == "optional" and room["disconnect_plan"] is None
    for link in (room["therapist_link"], *room["client_links"]):
        got = await room_of(alcove, link)
        assert got["safety"] == {"check": "optional", "plan": None, "wait_minutes": None,
                                 "numbers": [{"number": "112", "label": ""}]}


async def test_room_creation_sets_the_check_and_prefills_the_plan(alcove: Any) -> None:
    room = await alcove.create_room("group", safety_check="required", disconnect_plan="wait",
                                    disconnect_wait_minutes=10)
    assert (room["safety_check"], room["disconnect_plan"], room["disconnect_wait_minutes"]) == ("required", "wait", 10)
    got = await room_of(alcove, room["client_links"][0])
    assert got["safety"]["check"] == "required" and got["safety"]["plan"] == "wait"
    assert got["safety"]["wait_minutes"] == 10
    room = await alcove.create_room("individual", safety_check="off", disconnect_plan="call-back")
    got = await room_of(alcove, room["client_links"][0])
    assert (got["safety"]["check"], got["safety"]["plan"], got["safety"]["wait_minutes"]) == ("off", "call-back", None)


@pytest.mark.parametrize("extra", [
    {"safety_check": "sometimes"},
    {"safety_check": True},
    {"disconnect_plan": "pray"},
    {"disconnect_plan": "wait"},  # without the minutes
    {"disconnect_plan": "wait", "disconnect_wait_minutes": 0},
    {"disconnect_plan": "wait", "disconnect_wait_minutes": 61},
    {"disconnect_plan": "wait", "disconnect_wait_minutes": "10"},
    {"disconnect_plan": "call-back", "disconnect_wait_minutes": 5},
])
async def test_bad_safety_settings_are_typed_errors_and_create_nothing(alcove: Any, extra: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http, http.post(
            f"{alcove.url}/api/rooms", json={"type": "individual", **extra},
            headers={"Authorization": f"Bearer {alcove.admin_key}"}) as r:
        data = await r.json()
    assert r.status == 400 and data["error"]["code"] == "invalid-message"
    assert alcove.hub.rooms.rooms == {}


async def test_the_practice_configures_the_emergency_numbers(tmp_path: Path) -> None:
    numbers = parse_numbers("112=Urgențe;0800 801 200=Linia de criză")
    async with serving(tmp_path, Config(emergency_numbers=numbers)) as alcove:
        room = await alcove.create_room("individual")
        got = await room_of(alcove, room["client_links"][0])
        assert got["safety"]["numbers"] == [{"number": "112", "label": "Urgențe"},
                                            {"number": "0800 801 200", "label": "Linia de criză"}]


def test_emergency_numbers_parse_or_say_why() -> None:
    assert parse_numbers("") == (EmergencyNumber("112"),)
    assert parse_numbers(" +40 21 000 0000 = Clinic ; 112") == (EmergencyNumber("+40 21 000 0000", "Clinic"),
                                                                  EmergencyNumber("112"))
    for bad in ("call me=Friend", "1=x", "112=" + "x" * 61, "112=a\x07b", ";".join(["112"] * 7)):
        with pytest.raises(ValueError, match="ALCOVE_EMERGENCY_NUMBERS"):
            parse_numbers(bad)
    assert Config.from_env({"ALCOVE_EMERGENCY_NUMBERS": "113=Alt"}).emergency_numbers == (EmergencyNumber("113", "Alt"),)


def test_safety_settings_survive_the_token_claims() -> None:
    s = SafetySettings.parse("required", "wait", 15)
    assert SafetySettings.from_claims(s.claims()) == s
    assert SafetySettings.from_claims(None) == SafetySettings()  # a token from before this feature
    with pytest.raises(ValueError):
        SafetySettings.from_claims({"c": "nope"})


async def test_members_never_see_the_waiting_room(alcove: Any, join: Any) -> None:
    """Group manners: an admitted member gets no queue, no position and no waiting pid or name in any message."""
    room = await alcove.create_room("group", clients=3, topology="mesh")  # signaling only: no media here
    t: Participant = await join(room["therapist_link"], name="Dr. T", media=False)
    a: Participant = await join(room["client_links"][0], name="Ana Popescu", media=False)
    await t.wait_until(lambda: any(q.pid == a.pid for q in t.queue), 5, "queued")
    await t.admit(a.pid)
    await a.wait_until(lambda: a.status == "admitted", 5, "admitted")
    seen_from = a.mark()
    b: Participant = await join(room["client_links"][1], name="Bogdan Waiting", media=False)
    c: Participant = await join(room["client_links"][2], name="Carmen Waiting", media=False)
    await t.wait_until(lambda: {b.pid, c.pid} <= {q.pid for q in t.queue}, 5, "both queued")
    await t.admit(b.pid)
    await b.wait_until(lambda: b.status == "admitted", 5, "admitted")
    await a.wait_until(lambda: b.pid in a.roster, 5, "b in the roster")
    for msg in a.log[seen_from:]:
        assert not isinstance(msg, m.Queue | m.Waiting), msg
        text = m.encode(msg).decode()
        assert c.pid not in text and "Carmen" not in text, msg
        if isinstance(msg, m.Roster):
            # the roster names admitted members only; b appears once admitted, never while waiting
            assert all(p.pid in (t.pid, a.pid, b.pid) for p in msg.participants)
    assert a.queue == [] and c.status == "waiting" and c.pid in {q.pid for q in t.queue}
    # first names only among members; the therapist sees what each client typed
    assert a.roster[b.pid].name == "Bogdan" and b.roster[a.pid].name == "Ana" and a.roster[t.pid].name == "Dr. T"
    assert t.roster[a.pid].name == "Ana Popescu" and t.roster[b.pid].name == "Bogdan Waiting"
    for p in (c, b, a, t):
        await p.close()


async def test_room_create_flags_set_the_safety_check_and_keep_the_json_shape(alcove: Any) -> None:
    from .test_cli import _room_create

    rc, out, _ = await _room_create(alcove.url, alcove.admin_key, "--safety-check", "required",
                                    "--disconnect-plan", "wait:10")
    assert rc == 0
    room = json.loads(out)
    assert set(room) == {"room_id", "type", "opens_at", "starts_at", "ends_at", "therapist_link", "client_links"}
    got = await room_of(alcove, room["client_links"][0])
    assert (got["safety"]["check"], got["safety"]["plan"], got["safety"]["wait_minutes"]) == ("required", "wait", 10)
    rc, out, err = await _room_create(alcove.url, alcove.admin_key, "--disconnect-plan", "wait:forever")
    assert rc != 0 and out == b"" and b"disconnect_wait_minutes" in err
