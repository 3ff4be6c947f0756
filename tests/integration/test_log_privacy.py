"""Every logger goes through the allowlist (issue 10, item 2): each error path is provoked against a real server
configured as ``alcove serve`` configures it, and the output must hold no address, header value, name or token,
while tracebacks keep their code locations."""

from __future__ import annotations

import asyncio
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from server import logs
from server.app import create_app

from ..conftest import AlcoveServer, FakeClock
from .test_server_http import post, token_of

pytestmark = pytest.mark.integration

CANARIES = ("203.0.113.77", "Canaryname", "canary-header-value", "eyJcanary", "tok_canary", "127.0.0.1",
            "candidate:1 1 udp")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """logs.configure, as `alcove serve` calls it, writing to a buffer; the logging setup is restored after."""
    root, alcove = logging.getLogger(), logging.getLogger("alcove")
    saved = (root.handlers[:], root.level, alcove.handlers[:], alcove.level, alcove.propagate)
    stream = io.StringIO()
    logs.configure("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        alcove.handlers[:], alcove.level, alcove.propagate = saved[2], saved[3], saved[4]
        logging.captureWarnings(False)


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()


async def test_no_error_path_logs_an_address_header_name_or_token(tmp_path: Path, captured: io.StringIO) -> None:
    server = AlcoveServer(tmp_path / "data", FakeClock())
    app = create_app(server.config, clock=server.clock)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError(f"failed for {request.remote} Canaryname eyJcanary {request.headers.get('X-Canary')}")

    app.router.add_get("/boom", boom)  # stands in for any handler bug: a 500
    server.runner = web.AppRunner(app, access_log=None)
    await server.runner.setup()
    await web.TCPSite(server.runner, "127.0.0.1", 0).start()
    server.port = server.runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/boom", headers={"X-Canary": "canary-header-value"}) as r:
                assert r.status == 500
                assert "X-Content-Type-Options" in r.headers
            # malformed requests: a bad header line, a bad request line, a bad chunk, all quoting canaries
            for raw in (b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad\x01: canary-header-value Canaryname\r\n\r\n",
                        b"GET /eyJcanary canary-header-value HTTP/1.1\r\n\r\n",
                        b"POST /api/session HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"zz canary-header-value\r\n\r\n",
                        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: canary-header-value\r\n\r\n"):
                answer = await _raw(server.port, raw)
                assert answer.split(b" ", 2)[1] == b"400", answer[:60]
            # API and websocket refusals carrying tokens and names
            await post(f"{server.url}/api/session", {"token": "eyJcanary.tok_canary"})
            await post(f"{server.url}/api/rooms", {"type": "individual", "host": "Canaryname"},
                       {"Authorization": "Bearer tok_canary"})
            room = await server.create_room("individual", host="Canaryname")
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(f"{server.url}/ws", origin="https://canary-header-value.example")
            ws = await http.ws_connect(f"{server.url}/ws", origin=server.url)
            await ws.send_str('{"type":"hello","v":1,"ticket":"tok_canary","name":"Canaryname"}')
            await ws.receive(timeout=5)
            _, data = await post(f"{server.url}/api/session", {"token": token_of(room["client_links"][0])})
            ws = await http.ws_connect(f"{server.url}/ws", origin=server.url)
            await ws.send_json({"type": "hello", "v": 1, "ticket": data["ticket"], "name": "Canaryname"})
            await ws.receive(timeout=5)
            await ws.send_str("[" * 5000)
            await ws.close()
        # the libraries' own loggers and asyncio's exception handler
        loop = asyncio.get_running_loop()
        loop.call_exception_handler({"message": "Task exception was never retrieved from 203.0.113.77",
                                     "exception": OSError("connect to 203.0.113.77 for Canaryname failed")})
        logging.getLogger("aioice.ice").warning("Connection(0) candidate %s", "candidate:1 1 udp 203.0.113.77")
        logging.getLogger("aiortc.rtcpeerconnection").error("remote %s sdp eyJcanary", "203.0.113.77")
        logging.getLogger("aiohttp.web").exception("handler for %s", "Canaryname",
                                                   exc_info=ValueError("tok_canary"))
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("unclosed transport to 203.0.113.77", ResourceWarning, stacklevel=1)
    finally:
        await server.stop()
    text = captured.getvalue()
    for canary in CANARIES:
        assert canary not in text, (canary, text)
    # the lines are there, and tracebacks keep their code locations
    assert '"logger":"aiohttp.server"' in text and '"exception":"RuntimeError"' in text
    assert "test_log_privacy.py:" in text and ":boom" in text  # the failing handler's frame
    assert '"logger":"asyncio"' in text and '"logger":"aioice.ice"' in text and '"logger":"py.warnings"' in text
    assert '"event":"joined"' in text  # Alcove's own events still pass as they are
