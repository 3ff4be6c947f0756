"""The websocket edge: bytes ⇄ signaling messages. No protocol logic lives here."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Literal

from aiohttp import WSMessage, WSMsgType, web

from signaling import messages as m
from signaling.errors import SignalingError

from . import jsondecode, throttle
from .cluster.common import ANSWER_TIMEOUT, ClusterUnavailable
from .hub import Connection, Hub
from .logs import log_event
from .security import origin_allowed, websocket_version_ok
from .state import HUB, THROTTLES

HELLO_TIMEOUT = 10.0
HELLO_TIMEOUT_S = 10
RATE = 50.0  # messages per second, sustained
BURST = 200.0
MAX_STRIKES = 100  # refused messages over the rate before the socket is closed


class RateLimit:
    """A token bucket per socket."""

    def __init__(self, rate: float = RATE, burst: float = BURST) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()
        self.strikes = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.strikes += 1
        return False


async def websocket(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    if not origin_allowed(request, hub.config):
        log_event("origin-refused", code="origin")
        raise web.HTTPForbidden(text="origin not allowed")
    if not websocket_version_ok(request):
        raise web.HTTPBadRequest(text="websocket version 13 only", headers={"Sec-WebSocket-Version": "13"})
    throttles = request.app[THROTTLES]
    address = throttle.client_address(request, hub.config.trust_proxy)
    if (refused := throttle.spend("connection", throttles.connections, address, hub.metrics.throttle)):
        return refused
    if not throttles.hold_pending(address):
        hub.metrics.throttle("pending")
        return throttle.too_many("rate-limited", "too many connections waiting for hello", HELLO_TIMEOUT_S)
    pending = [address]  # emptied once the socket said hello (or ended)

    def said_hello() -> None:
        while pending:
            throttles.release_pending(pending.pop())

    try:
        return await _session(request, hub, said_hello)
    finally:
        said_hello()


async def _session(request: web.Request, hub: Hub, said_hello: Callable[[], None]) -> web.StreamResponse:
    # aiohttp refuses a message of max_msg_size bytes or more: +1 keeps the documented limit (64 KiB) inclusive.
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=jsondecode.MAX_BYTES + 1, autoping=True)
    await ws.prepare(request)
    c = hub.register(ws, request.transport)
    limit = RateLimit()
    joined: bool | Literal["relayed"] = False
    try:
        try:
            first = await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT)
        except TimeoutError:
            hub.send_error(c, "hello-expected", "send hello first")
            hub.close(c.conn, 4001, "hello-expected")
            return ws
        said_hello()
        joined = await _hello(hub, c, first)
        if not joined:
            return ws
        relayed = joined == "relayed"
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            if not limit.allow():
                if limit.strikes > MAX_STRIKES:
                    hub.send_error(c, "rate-limited", "too many messages")
                    hub.close(c.conn, 4008, "rate-limited")
                    break
                hub.send_error(c, "rate-limited", "too many messages; slow down")
                continue
            if relayed:  # the room's owner (another instance) validates it
                hub.cluster.relay_message(c.conn, msg.data if isinstance(msg.data, str) else msg.data.decode())  # type: ignore[union-attr]
                continue
            hub.receive_data(c, msg.data)
        if ws.close_code == 1009:
            hub.metrics.error("too-large")
    except Exception:
        log_event("socket-failed", code="server-error", conn=c.conn)
        hub.send_error(c, "server-error", "an unexpected fault; nothing was changed")  # counts it
        hub.close(c.conn, 1011, "server-error")
    finally:
        await hub.unregister(c)
    return ws


async def _hello(hub: Hub, c: Connection, first: WSMessage) -> bool | Literal["relayed"]:
    """The first message must be a valid hello with a live ticket; True when the socket joined a room here,
    ``"relayed"`` when another instance owns the room (its messages go there through Redis)."""
    if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        if first.type == WSMsgType.ERROR or first.type == WSMsgType.CLOSE:
            return False
        hub.send_error(c, "hello-expected", "send hello first")
        hub.close(c.conn, 4001, "hello-expected")
        return False
    try:
        hello = jsondecode.decode_client(first.data)
        if not isinstance(hello, m.Hello):
            raise SignalingError("hello-expected", "send hello first", ref=m.tag_of(hello))
        if hello.v != m.PROTOCOL_VERSION:
            raise SignalingError("unsupported-version", f"this server speaks version {m.PROTOCOL_VERSION}", "hello")
        now = hub.clock()
        if hub.cluster is not None:
            admission = await hub.cluster.redeem_ticket(hello.ticket, now)
        else:
            admission = hub.tokens.redeem_ticket(hello.ticket, now)
        if hello.resume:
            resume = hub.tokens.verify_resume(hello.resume, now)
            admission = dataclasses.replace(admission, resume=resume)
        if hub.cluster is not None and (owner := await hub.cluster.owner_for(admission.spec.room_id)) != hub.cluster.me:
            data = first.data if isinstance(first.data, str) else first.data.decode()
            entry = hub.cluster.relay_hello(c.conn, owner, admission, data)
            try:
                await asyncio.wait_for(entry.answered.wait(), ANSWER_TIMEOUT)
            except TimeoutError:  # the owner died and its lease has not run out yet
                raise ClusterUnavailable() from None
            return "relayed"
    except ClusterUnavailable as err:
        hub.send_error(c, err.code, err.message)
        hub.close(c.conn, 1001, err.code)  # the client reconnects (and resumes) after 1001
        return False
    except SignalingError as err:
        hub.send_error(c, err.code, err.message, err.ref)
        hub.close(c.conn, err.close_code or 4000, err.code)
        return False
    joined = hub.connect(c, admission, hello)
    if joined is None:
        return False
    log_event("joined", conn=c.conn, room=joined.room_id, role=joined.role)
    return True
