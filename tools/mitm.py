"""A malicious signaling middleman, for tests and the probe: it proves that signed SDP stops a DTLS MITM.

:class:`MitmProxy` is an aiohttp reverse proxy that sits between the peers and a real Alcove server (HTTP and
the ``/ws`` websocket). It plays the "server that swaps the DTLS fingerprints" of docs/security.md §1:

* every ``offer``/``answer`` it delivers to a peer has each ``a=fingerprint`` line replaced by the fingerprint
  of the proxy's own DTLS certificate (``rewrite=True``);
* for every offer it delivers, it also answers the *offerer* itself, as a back-to-back relay would: a real
  aiortc answer (its own certificate), stamped as coming from the callee and signed with the proxy's own key
  (``answer_back=True``).

With E2EE signing on, both peers must refuse (the callee sees a fingerprint that does not match the signed
one, the caller sees an answer not signed by the callee's key) and never connect. With ``rewrite=False`` the
proxy is a transparent relay (the control); with ``record=True`` it also keeps every websocket frame it carried
(:attr:`MitmProxy.recorded`: what the server relayed, for the chat probe). SFU traffic (``to``/``from`` ``"sfu"``) is never touched.

    async with MitmProxy("http://127.0.0.1:8080") as proxy:
        p = await Participant.join(proxy.url, link)   # instead of the server's URL
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aiohttp
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCCertificate
from cryptography.hazmat.primitives.asymmetric import ec

from peer.e2ee import sign_sdp
from signaling import messages as m

__all__ = ["MitmProxy", "rewrite_fingerprints"]

log = logging.getLogger("alcove.mitm")

_HOP_HEADERS = {"host", "origin", "content-length", "connection", "upgrade", "transfer-encoding",
                "accept-encoding", "keep-alive"}


def rewrite_fingerprints(sdp: str, fingerprint: str) -> str:
    """``sdp`` with every ``a=fingerprint:`` line replaced by ``a=fingerprint:<fingerprint>``."""
    lines = sdp.split("\r\n")
    return "\r\n".join(f"a=fingerprint:{fingerprint}" if line.startswith("a=fingerprint:") else line
                       for line in lines)


class MitmProxy:
    """A fingerprint-swapping reverse proxy in front of ``upstream`` (see the module docstring)."""

    def __init__(self, upstream: str, *, rewrite: bool = True, answer_back: bool = True,
                 host: str = "127.0.0.1", insecure: bool = True, record: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.recorded: list[str] | None = [] if record else None
        """With ``record=True``: every websocket text frame it carried, both ways, as it carried it (in memory
        only; the chat probe and the tests search it for plaintext)."""
        self.rewrite = rewrite
        self.answer_back = answer_back and rewrite
        self.host = host
        self.insecure = insecure
        cert = RTCCertificate.generateCertificate()
        fp = cert.getFingerprints()[0]
        self.fingerprint = f"{fp.algorithm} {fp.value}"
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.rewritten = 0
        """Offers/answers whose fingerprints were replaced."""
        self.forged_answers = 0
        self.relayed: list[dict[str, Any]] = []
        """Every offer/answer the proxy delivered (after rewriting)."""
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._rooms: dict[str, str] = {}
        self._pcs: list[RTCPeerConnection] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> MitmProxy:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._http_proxy)
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False if self.insecure else True))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pc in self._pcs:
            await pc.close()
        for ws in list(self._sockets.values()):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> MitmProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ HTTP

    async def _http_proxy(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.read()
        async with self._http.request(request.method, self.upstream + request.path_qs, headers=headers,
                                      data=body or None, allow_redirects=False) as r:
            data = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP_HEADERS}
            return web.Response(status=r.status, body=data, headers=out)

    # ------------------------------------------------------------------ websocket

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        down = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await down.prepare(request)
        ws_url = self.upstream.replace("http", "ws", 1) + "/ws"
        try:
            up = await self._http.ws_connect(ws_url, headers={"Origin": self.upstream}, max_msg_size=1 << 20)
        except aiohttp.ClientError:
            await down.close()
            return down
        me: dict[str, str] = {}

        async def to_server() -> None:
            async for raw in down:
                if raw.type == aiohttp.WSMsgType.TEXT:
                    if self.recorded is not None:
                        self.recorded.append(raw.data)
                    await up.send_str(raw.data)
                elif raw.type == aiohttp.WSMsgType.BINARY:
                    await up.send_bytes(raw.data)
            await up.close()

        async def to_client() -> None:
            async for raw in up:
                if raw.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    continue
                data = raw.data if isinstance(raw.data, str) else raw.data.decode()
                if self.recorded is not None:
                    self.recorded.append(data)
                out = self._from_server(data, me)
                if me.get("pid") and self._sockets.get(me["pid"]) is not down:
                    self._sockets[me["pid"]] = down
                if out is not None:  # None: withheld (tools/hostile.py)
                    await down.send_str(out)
            await down.close(code=up.close_code or 1000)

        tasks = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await up.close()
        if me.get("pid") and self._sockets.get(me["pid"]) is down:
            del self._sockets[me["pid"]]
        return down

    @staticmethod
    def _read(text: str, me: dict[str, str]) -> dict[str, Any] | None:
        """A server message as a dict (None if it is not a JSON object); a welcome tells whose socket this is."""
        try:
            msg = json.loads(text)
        except ValueError:
            return None
        if not isinstance(msg, dict):
            return None
        if msg.get("type") == "welcome":
            me["pid"] = str(msg.get("pid"))
            me["room"] = str(msg.get("room", {}).get("id"))
        return msg

    def _from_server(self, text: str, me: dict[str, str]) -> str | None:
        msg = self._read(text, me)
        if msg is None:
            return text
        kind = msg.get("type")
        if kind == "welcome":
            return text
        if kind not in ("offer", "answer") or msg.get("from") == m.SFU_PID:
            return text
        if self.rewrite and isinstance(msg.get("sdp"), str):
            original = msg["sdp"]
            msg["sdp"] = rewrite_fingerprints(original, self.fingerprint)
            self.rewritten += 1
            if kind == "offer" and self.answer_back and me.get("pid"):
                self._spawn(self._answer_back(str(msg["from"]), me["pid"], me.get("room", ""), original))
            text = json.dumps(msg)
        self.relayed.append(msg)
        return text

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_back(self, offerer: str, callee: str, room: str, offer_sdp: str) -> None:
        """Answer the offerer with the proxy's own endpoint, as if the callee had answered."""
        ws = None
        deadline = asyncio.get_running_loop().time() + 5
        while ws is None and asyncio.get_running_loop().time() < deadline:
            ws = self._find_socket(offerer)
            if ws is None:
                await asyncio.sleep(0.05)
        if ws is None:
            return
        pc = RTCPeerConnection()
        self._pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        sdp = pc.localDescription.sdp
        sig = sign_sdp(self.key, room=room, from_pid=callee, to_pid=offerer, epoch=0, sdp_type="answer", seq=1,
                       sdp=sdp)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(json.dumps({"type": "answer", "from": callee, "sdp": sdp, "sig": sig}))
            self.forged_answers += 1

    def _find_socket(self, pid: str) -> web.WebSocketResponse | None:
        return self._sockets.get(pid)
