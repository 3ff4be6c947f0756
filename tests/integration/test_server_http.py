"""The aiohttp edge over real sockets on loopback: admin API, ticket exchange, headers, Origin, limits, privacy."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from ..conftest import AlcoveServer

pytestmark = pytest.mark.integration


def token_of(link: str) -> str:
    assert "/j/#t=" in link and "?" not in link
    return link.split("#t=", 1)[1]


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers or {}) as r:
        return r.status, await r.json(content_type=None)


async def join(alcove: AlcoveServer, http: aiohttp.ClientSession, link: str, name: str | None
               ) -> aiohttp.ClientWebSocketResponse:
    status, data = await post(f"{alcove.url}/api/session", {"token": token_of(link)})
    assert status == 200, data
    ws = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
    await ws.send_json({"type": "hello", "v": 1, "ticket": data["ticket"], "name": name})
    return ws


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data: dict[str, Any] = msg.json()
        if data["type"] == kind:
            return data


async def test_admin_api_requires_the_admin_key_or_an_admin_token(alcove: AlcoveServer) -> None:
    url = f"{alcove.url}/api/rooms"
    assert (await post(url, {"type": "individual"}))[0] == 401
    assert (await post(url, {"type": "individual"}, {"Authorization": "Bearer wrong"}))[0] == 401
    room = await alcove.create_room("couple", host="Dr. Ana Pop")
    assert len(room["client_links"]) == 2
    as_admin = {"Authorization": f"Bearer {token_of(room['therapist_link'])}"}
    assert (await post(url, {"type": "individual"}, as_admin))[0] == 401  # a room token is no admin token
    status, data = await post(f"{alcove.url}/api/admin/token", {}, {"Authorization": f"Bearer {alcove.admin_key}"})
    assert status == 200
    admin_token = data["admin_token"]
    assert (await post(url, {"type": "individual"}, {"Authorization": f"Bearer {admin_token}"}))[0] == 201
    status, data = await post(f"{alcove.url}/api/session", {"token": admin_token})
    assert status == 400 and data["error"]["code"] == "token-invalid"  # and an admin token is no room token


@pytest.mark.parametrize("body", [
    {"type": "seminar"},
    {"type": "couple", "clients": 3},
    {"type": "individual", "start": "2026-11-26T14:00:00"},  # no zone
    {"type": "individual", "duration_minutes": 0},
    {"type": "individual", "duration_minutes": 100_000},
    {"type": "individual", "colour": "blue"},
    {"type": "individual", "start": "2020-01-01T00:00:00Z"},
])
async def test_bad_room_requests_get_typed_errors_and_create_nothing(alcove: AlcoveServer,
                                                                     body: dict[str, Any]) -> None:
    status, data = await post(f"{alcove.url}/api/rooms", body, {"Authorization": f"Bearer {alcove.admin_key}"})
    assert status == 400 and data["error"]["code"] == "invalid-message"
    assert alcove.hub.rooms.rooms == {}


async def test_ticket_exchange_errors(alcove: AlcoveServer) -> None:
    session = f"{alcove.url}/api/session"
    assert (await post(session, {"token": "garbage"}))[1]["error"]["code"] == "token-invalid"
    assert (await post(session, {"token": "a.b.c", "x": 1}))[0] == 400
    start = datetime.fromtimestamp(alcove.clock() + 2 * 86400, UTC).replace(hour=10, minute=0, second=0)
    later = await alcove.create_room("individual", start=start.isoformat())
    status, data = await post(session, {"token": token_of(later["client_links"][0])})
    assert status == 425 and data["error"]["code"] == "room-not-open"
    assert data["error"]["opens_at"] == start.strftime("%Y-%m-%dT09:45:00Z")
    room = await alcove.create_room("individual", duration_minutes=50)
    await alcove.advance(50 * 60 + 1)
    status, data = await post(session, {"token": token_of(room["client_links"][0])})
    assert status == 410 and data["error"]["code"] == "room-ended"


async def test_delete_ends_the_room_and_its_links_are_dead(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("individual")
    async with aiohttp.ClientSession() as http:
        therapist = await join(alcove, http, room["therapist_link"], None)
        await next_of(therapist, "welcome")
        await alcove.delete_room(room["room_id"])
        assert (await next_of(therapist, "session-ended"))["reason"] == "admin"
        closed = await therapist.receive(timeout=5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    for link in [room["therapist_link"], *room["client_links"]]:
        status, data = await post(f"{alcove.url}/api/session", {"token": token_of(link)})
        assert status == 410 and data["error"]["code"] == "room-ended"


async def test_a_room_deleted_before_anyone_joined_is_dead_too(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("individual")
    await alcove.delete_room(room["room_id"])
    status, data = await post(f"{alcove.url}/api/session", {"token": token_of(room["client_links"][0])})
    assert status == 410 and data["error"]["code"] == "room-ended"


async def test_websocket_origin_check(alcove: AlcoveServer) -> None:
    async with aiohttp.ClientSession() as http:
        for origin in (None, "https://evil.example", "http://127.0.0.1:1"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(f"{alcove.url}/ws", origin=origin)
            assert err.value.status == 403
        ws = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
        await ws.close()


async def test_security_headers(alcove: AlcoveServer) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/j/", "/admin"):
            async with http.get(f"{alcove.url}{path}") as r:
                csp = r.headers["Content-Security-Policy"]
                assert "default-src 'none'" in csp and "script-src 'self'" in csp
                assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
                assert r.headers["Referrer-Policy"] == "no-referrer"
                assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_first_message_must_be_hello_and_tickets_are_single_use(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("individual")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
        await ws.send_json({"type": "admit", "pid": "p_x"})
        assert (await next_of(ws, "error"))["code"] == "hello-expected"
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 4001
        _, data = await post(f"{alcove.url}/api/session", {"token": token_of(room["therapist_link"])})
        ticket = data["ticket"]
        first = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
        await first.send_json({"type": "hello", "v": 1, "ticket": ticket})
        await next_of(first, "welcome")
        second = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
        await second.send_json({"type": "hello", "v": 1, "ticket": ticket})
        assert (await next_of(second, "error"))["code"] == "ticket-invalid"
        bad_version = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
        await bad_version.send_json({"type": "hello", "v": 2, "ticket": "x"})
        assert (await next_of(bad_version, "error"))["code"] == "unsupported-version"
        await first.close()


async def test_oversized_message_closes_with_1009_and_the_server_lives_on(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("individual")
    async with aiohttp.ClientSession() as http:
        ws = await join(alcove, http, room["therapist_link"], None)
        await next_of(ws, "welcome")
        await ws.send_str('{"type":"key","to":null,"data":"' + "x" * 70_000 + '"}')
        msg = await ws.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009
    async with aiohttp.ClientSession() as http, http.get(f"{alcove.url}/healthz") as r:
        assert (await r.json())["ok"] is True


async def test_rate_limit_answers_rate_limited(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("individual")
    async with aiohttp.ClientSession() as http:
        ws = await join(alcove, http, room["therapist_link"], None)
        await next_of(ws, "welcome")
        for _ in range(260):
            await ws.send_json({"type": "extend", "minutes": 7})
        codes = set()
        for _ in range(260):
            msg = await ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.json()
            if data["type"] == "error":
                codes.add(data["code"])
            if "rate-limited" in codes:
                break
        assert "rate-limited" in codes
        await ws.close()


async def test_logs_and_metrics_carry_no_names_tokens_or_addresses(alcove: AlcoveServer,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    room = await alcove.create_room("individual", host="Dr. Secretname")
    async with aiohttp.ClientSession() as http:
        therapist = await join(alcove, http, room["therapist_link"], "Dr. Secretname")
        client = await join(alcove, http, room["client_links"][0], "Clientname Private")
        queue = await next_of(therapist, "queue")
        while not queue["waiting"]:
            queue = await next_of(therapist, "queue")
        await therapist.send_json({"type": "decline", "pid": queue["waiting"][0]["pid"], "message": "sorry"})
        await next_of(client, "declined")
        async with http.get(f"{alcove.url}/metrics") as r:
            metrics = await r.text()
        await therapist.send_json({"type": "end"})
        await next_of(therapist, "session-ended")
    assert "alcove_declines_total 1.0" in metrics
    text = caplog.text + metrics
    # room ids are opaque and may appear in logs, but never as a metrics label
    for secret in ("Secretname", "Clientname", "eyJ", "127.0.0.1", "sorry"):
        assert secret not in text, secret
    assert room["room_id"] not in metrics


async def test_the_therapist_gets_fresh_client_links_for_its_own_room_only(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("couple")
    status, data = await post(f"{alcove.url}/api/invites", {"token": token_of(room["therapist_link"])})
    assert status == 200 and data["room_id"] == room["room_id"] and len(data["client_links"]) == 2
    fresh = token_of(data["client_links"][0])
    assert fresh not in {token_of(link) for link in room["client_links"]}
    status, joined = await post(f"{alcove.url}/api/session", {"token": fresh})
    assert status == 200 and joined["role"] == "client" and joined["room"]["id"] == room["room_id"]
    status, data = await post(f"{alcove.url}/api/invites", {"token": token_of(room["client_links"][0])})
    assert status == 403 and data["error"]["code"] == "not-allowed"
    status, data = await post(f"{alcove.url}/api/invites", {"token": alcove.admin_key})
    assert status == 400 and data["error"]["code"] == "token-invalid"
    await alcove.delete_room(room["room_id"])
    status, data = await post(f"{alcove.url}/api/invites", {"token": token_of(room["therapist_link"])})
    assert status == 410 and data["error"]["code"] == "room-ended"
