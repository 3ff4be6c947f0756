"""Hostile inputs at the edge (issue 10): bounded JSON, the header set on every response, throttling with 429,
and the smaller defects. Each test here failed on the code before the fix."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from server.config import Config
from server.state import THROTTLES
from server.throttle import Limits, Rate

from ..conftest import AlcoveServer, serving
from .conftest import settle
from .test_server_http import join, next_of, post, token_of

pytestmark = pytest.mark.integration

DEEP = "[" * 10_000 + "]" * 10_000
HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options")


async def metrics_text(alcove: AlcoveServer) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{alcove.url}/metrics") as r:
        return await r.text()


def admin(alcove: AlcoveServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {alcove.admin_key}"}


async def raw_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(
            url, data=body, headers={"Content-Type": "application/json", **(headers or {})}) as r:
        return r.status, await r.json(content_type=None)


# ---------------------------------------------------------------- 3. one bounded decoder


async def test_deep_json_on_the_websocket_is_bad_json_and_the_socket_lives(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("individual")
    async with aiohttp.ClientSession() as http:
        ws = await join(alcove, http, room["therapist_link"], None)
        await next_of(ws, "welcome")
        await ws.send_str(DEEP)
        assert (await next_of(ws, "error"))["code"] == "bad-json"
        await ws.send_json({"type": "extend", "minutes": 5})
        assert (await next_of(ws, "time"))["extended_minutes"] == 5
        await ws.close()
    assert 'code="server-error"' not in await metrics_text(alcove)


async def test_deep_json_as_the_first_message_is_bad_json(alcove: AlcoveServer) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
        await ws.send_str('{"type":"hello","v":1,"ticket":' + DEEP + "}")
        assert (await next_of(ws, "error"))["code"] == "bad-json"
        await ws.receive(timeout=5)
        assert ws.close_code == 4000
    assert 'code="server-error"' not in await metrics_text(alcove)


@pytest.mark.parametrize("path", ["/api/session", "/api/invites", "/api/rooms"])
async def test_deep_json_and_huge_integers_in_http_bodies_are_400_bad_json(alcove: AlcoveServer, path: str) -> None:
    url = f"{alcove.url}{path}"
    for body in (DEEP, '{"token":' + DEEP + "}", '{"type":"individual","duration_minutes":' + "9" * 5000 + "}",
                 '{"type":"individual","clients":' + "1" * 19 + "}", "[1]", "{"):
        status, data = await raw_post(url, body.encode(), admin(alcove))
        assert (status, data["error"]["code"]) == (400, "bad-json"), (path, body[:40], status, data)
    big = b'{"token":"' + b"x" * (64 * 1024) + b'"}'
    status, data = await raw_post(url, big, admin(alcove))
    assert (status, data["error"]["code"]) == (400, "bad-json")


async def test_http_bodies_of_exactly_64_kib_are_read(alcove: AlcoveServer) -> None:
    body = b'{"token":"nope"}'
    status, data = await raw_post(f"{alcove.url}/api/session", body + b" " * (64 * 1024 - len(body)))
    assert (status, data["error"]["code"]) == (400, "token-invalid")
    status, data = await raw_post(f"{alcove.url}/api/session", body + b" " * (64 * 1024 + 1 - len(body)))
    assert (status, data["error"]["code"]) == (400, "bad-json")


async def test_a_websocket_message_of_exactly_64_kib_is_accepted(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("individual")
    async with aiohttp.ClientSession() as http:
        ws = await join(alcove, http, room["therapist_link"], None)
        await next_of(ws, "welcome")
        msg = '{"type":"extend","minutes":5}'
        await ws.send_str(msg + " " * (64 * 1024 - len(msg)))
        assert (await next_of(ws, "time"))["extended_minutes"] == 5
        await ws.send_str(msg + " " * (64 * 1024 + 1 - len(msg)))
        while (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
            pass
        assert ws.close_code == 1009


# ---------------------------------------------------------------- 4. headers on every response


async def _check_headers(url: str, method: str = "GET", ssl_ctx: Any = None, tls: bool = False,
                         **kwargs: Any) -> int:
    async with aiohttp.ClientSession() as http, http.request(method, url, allow_redirects=False, ssl=ssl_ctx,
                                                             **kwargs) as r:
        for name in HEADERS:
            assert name in r.headers, (url, r.status, name)
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert ("Strict-Transport-Security" in r.headers) == tls, (url, r.status)
        return r.status


async def _every_kind_of_response(base: str, alcove: AlcoveServer, ssl_ctx: Any = None, tls: bool = False) -> None:
    statuses = [
        await _check_headers(f"{base}/nope", ssl_ctx=ssl_ctx, tls=tls),
        await _check_headers(f"{base}/j", ssl_ctx=ssl_ctx, tls=tls),
        await _check_headers(f"{base}/api/rooms", "POST", ssl_ctx=ssl_ctx, tls=tls, json={}),
        await _check_headers(f"{base}/ws", ssl_ctx=ssl_ctx, tls=tls, headers={"Origin": "https://evil.example"}),
        await _check_headers(f"{base}/healthz", "DELETE", ssl_ctx=ssl_ctx, tls=tls),
        await _check_headers(f"{base}/api/session", "POST", ssl_ctx=ssl_ctx, tls=tls, data=b"{"),
        await _check_headers(f"{base}/healthz", ssl_ctx=ssl_ctx, tls=tls),
    ]
    assert statuses == [404, 308, 401, 403, 405, 400, 200]


async def test_every_response_carries_the_security_headers(alcove: AlcoveServer) -> None:
    await _every_kind_of_response(alcove.url, alcove)


async def test_every_response_over_tls_carries_hsts(tmp_path: Path) -> None:
    from server.app import create_app
    from server.certs import ensure_dev_certificate

    from ..conftest import FakeClock

    cert, key = ensure_dev_certificate(tmp_path / "certs")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    server = AlcoveServer(tmp_path / "data", FakeClock())
    runner = web.AppRunner(create_app(server.config.with_(tls=True), clock=server.clock), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    try:
        port = runner.addresses[0][1]
        await _every_kind_of_response(f"https://127.0.0.1:{port}", server, ssl_ctx=False, tls=True)
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- 5. throttling


async def test_wrong_admin_keys_are_throttled_with_429(alcove: AlcoveServer) -> None:
    url = f"{alcove.url}/api/rooms"
    statuses = []
    async with aiohttp.ClientSession() as http:
        for i in range(30):
            async with http.post(url, json={"type": "individual"},
                                 headers={"Authorization": f"Bearer wrong-{i}"}) as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert (await r.json())["error"]["code"] == "rate-limited"
                    assert all(name in r.headers for name in HEADERS)
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
    # while the address is blocked, even the right key waits
    status, _ = await post(url, {"type": "individual"}, admin(alcove))
    assert status == 429
    assert 'alcove_throttled_total{kind="admin-auth"}' in await metrics_text(alcove)


async def test_tickets_per_link_are_throttled_and_few_are_kept(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("couple")
    link, other = (token_of(x) for x in room["client_links"])
    statuses = [(await post(f"{alcove.url}/api/session", {"token": link}))[0] for _ in range(25)]
    assert statuses[:10] == [200] * 10 and set(statuses[10:]) == {429}
    assert (await post(f"{alcove.url}/api/session", {"token": other}))[0] == 200  # per link, not global
    jti = alcove.hub.tokens.verify_room_token(await alcove.hub.links.resolve(link), alcove.clock()).token_id
    assert sum(1 for adm, _ in alcove.hub.tokens._tickets.values() if adm.token_id == jti) == 4  # the newest 4
    text = await metrics_text(alcove)
    assert re.search(r'alcove_throttled_total\{kind="ticket"\} 15\.0', text), text


async def test_invites_and_room_creation_are_throttled(tmp_path: Path) -> None:
    limits = Limits(invites=Rate(2, 2), rooms=Rate(3, 3))
    async with serving(tmp_path / "data", Config(limits=limits)) as alcove:
        statuses = []
        async with aiohttp.ClientSession() as http:
            for _ in range(5):
                async with http.post(f"{alcove.url}/api/rooms", json={"type": "individual"},
                                     headers=admin(alcove)) as r:
                    statuses.append(r.status)
                    if r.status == 201:
                        room = await r.json()
                    else:
                        assert int(r.headers["Retry-After"]) >= 1
        assert statuses == [201, 201, 201, 429, 429]
        therapist = token_of(room["therapist_link"])
        invites = [(await post(f"{alcove.url}/api/invites", {"token": therapist}))[0] for _ in range(4)]
        assert invites == [200, 200, 429, 429]
        text = await metrics_text(alcove)
        assert 'alcove_throttled_total{kind="room"} 2.0' in text
        assert 'alcove_throttled_total{kind="invite"} 2.0' in text


def test_limits_come_from_the_environment() -> None:
    config = Config.from_env({"ALCOVE_LIMIT_TICKETS": "6/3", "ALCOVE_LIMIT_PENDING_PER_ADDRESS": "4"})
    assert config.limits.tickets == Rate(6, 3) and config.limits.pending_per_address == 4
    with pytest.raises(ValueError):
        Config.from_env({"ALCOVE_LIMIT_ROOMS": "lots"})
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    from server.throttle import LIMIT_ENV

    for name in LIMIT_ENV.values():
        assert f"| `{name}` |" in doc, name


async def test_idle_sockets_per_address_are_capped(alcove: AlcoveServer) -> None:
    async with aiohttp.ClientSession() as http:
        idle = [await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url) for _ in range(16)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
        assert err.value.status == 429 and int(err.value.headers["Retry-After"]) >= 1  # type: ignore[index]
        await idle[0].close()
        pending = alcove.runner.app[THROTTLES].pending  # type: ignore[union-attr]
        assert await settle(lambda: sum(pending.values()) <= 15)  # the server noticed the close
        again = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)  # a slot is free again
        for ws in [*idle[1:], again]:
            await ws.close()
    assert 'alcove_throttled_total{kind="pending"} 1.0' in await metrics_text(alcove)


# ---------------------------------------------------------------- 6. smaller defects


async def test_a_ticket_taken_before_the_end_and_used_after_says_room_ended(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("individual")
    _, data = await post(f"{alcove.url}/api/session", {"token": token_of(room["client_links"][0])})
    await alcove.delete_room(room["room_id"])
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{alcove.url}/ws", origin=alcove.url)
        await ws.send_json({"type": "hello", "v": 1, "ticket": data["ticket"]})
        assert (await next_of(ws, "error"))["code"] == "room-ended"
        await ws.receive(timeout=5)
        assert ws.close_code == 4005


@pytest.mark.parametrize("field", ["duration_minutes", "duration_seconds"])
@pytest.mark.parametrize("value", [True, False, "50", [50]])
async def test_a_duration_that_is_not_a_number_is_refused(alcove: AlcoveServer, field: str, value: Any) -> None:
    status, data = await post(f"{alcove.url}/api/rooms", {"type": "individual", field: value}, admin(alcove))
    assert (status, data["error"]["code"]) == (400, "invalid-message")


@pytest.mark.parametrize("room_id", ["r_..%2F..%2Fkeys", "r_%2E%2E", "r_a%00b", "r_" + "a" * 70, "r_a.b"])
async def test_delete_refuses_a_room_id_that_is_not_one(alcove: AlcoveServer, room_id: str) -> None:
    async with aiohttp.ClientSession() as http, http.delete(
            URL(f"{alcove.url}/api/rooms/{room_id}", encoded=True), headers=admin(alcove)) as r:
        assert r.status == 404
    revocations = alcove.data_dir / "revocations.json"
    assert not revocations.exists() or json.loads(revocations.read_text())["rooms"] == {}


async def test_the_origin_check_does_not_trust_a_named_host(alcove: AlcoveServer) -> None:
    evil = f"evil.example:{alcove.port}"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(f"{alcove.url}/ws", origin=f"http://{evil}", headers={"Host": evil})
        assert err.value.status == 403
        for host in (f"127.0.0.1:{alcove.port}", f"localhost:{alcove.port}"):
            ws = await http.ws_connect(f"{alcove.url}/ws", origin=f"http://{host}", headers={"Host": host})
            await ws.close()


async def test_only_websocket_version_13_is_accepted(alcove: AlcoveServer) -> None:
    for version in ("8", "7", "12", ""):
        reader, writer = await asyncio.open_connection("127.0.0.1", alcove.port)
        writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{alcove.port}\r\nOrigin: {alcove.url}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Sec-WebSocket-Version: {version}\r\n\r\n").encode())
        await writer.drain()
        status = (await reader.readline()).decode()
        writer.close()
        assert status.split()[1] == "400", (version, status)


async def test_a_fault_on_a_socket_closes_it_with_1011_server_error(alcove: AlcoveServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    room = await alcove.create_room("individual")
    async with aiohttp.ClientSession() as http:
        ws = await join(alcove, http, room["therapist_link"], None)
        await next_of(ws, "welcome")

        def fault(*args: Any) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(alcove.hub, "receive", fault)
        await ws.send_json({"type": "extend", "minutes": 5})
        assert (await next_of(ws, "error"))["code"] == "server-error"
        while (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
            pass
        assert ws.close_code == 1011
    assert 'alcove_errors_total{code="server-error"} 1.0' in await metrics_text(alcove)


async def test_hsts_behind_a_trusted_tls_proxy_only(tmp_path: Path) -> None:
    async with serving(tmp_path / "data", Config(trust_proxy=True)) as alcove, aiohttp.ClientSession() as http:
        for path in ("/healthz", "/nope"):
            async with http.get(f"{alcove.url}{path}", headers={"X-Forwarded-Proto": "https"}) as r:
                assert r.headers["Strict-Transport-Security"].startswith("max-age=")
            async with http.get(f"{alcove.url}{path}") as r:
                assert "Strict-Transport-Security" not in r.headers
    async with serving(tmp_path / "data2") as alcove, aiohttp.ClientSession() as http:
        async with http.get(f"{alcove.url}/healthz", headers={"X-Forwarded-Proto": "https"}) as r:
            assert "Strict-Transport-Security" not in r.headers  # an untrusted header proves nothing


async def test_aiohttp_s_own_answer_to_an_unparseable_request_has_the_set_and_echoes_nothing(
        alcove: AlcoveServer) -> None:
    for raw in (b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad\x01: echo-me\r\n\r\n", b"GET /echo-me echo-me HTTP/1.1\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", alcove.port)
        writer.write(raw)
        await writer.drain()
        answer = (await asyncio.wait_for(reader.read(), 5)).decode(errors="replace")
        writer.close()
        head = answer.lower()
        assert answer.split()[1] == "400", answer[:40]
        for name in HEADERS:
            assert f"\r\n{name.lower()}: " in head, name
        assert "echo-me" not in answer
