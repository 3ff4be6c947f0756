"""The edge runtime: owns the core registry, the sockets and the clock, and performs the core's effects."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from signaling import messages as m
from signaling.effects import (
    Close,
    ConnId,
    Effect,
    MediaMembers,
    MediaSignal,
    RevokeToken,
    RoomEnded,
    SeatGeneration,
    Send,
)
from signaling.errors import SignalingError
from signaling.policy import Timing
from signaling.room import Admission, ResumeClaims
from signaling.rooms import Joined, Rooms

from . import jsondecode
from .coalesce import Coalescer
from .config import Config
from .echo import TURN_LIFETIME_S, EchoCalls
from .logs import log_event
from .metrics import Metrics
from .tokens import Tokens, new_id
from .turn import TurnConfig, ice_server_entry, issue_credentials, issue_test_credentials

if TYPE_CHECKING:
    from .cluster.common import ClusterLike

log = logging.getLogger("alcove")

OUTBOX_LIMIT = 256
MAX_SFU_CREDENTIAL = 4 * 3600.0
RELAYED = (m.PeerOffer, m.PeerAnswer, m.PeerCandidate, m.PeerKey, m.PeerApp)


@dataclass
class Connection:
    conn: ConnId
    ws: web.WebSocketResponse | None  # None: the socket is on another instance (``edge``), relayed through Redis
    outbox: asyncio.Queue[tuple[bytes, float, str] | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=OUTBOX_LIMIT))
    writer: asyncio.Task[None] | None = None
    closing: bool = False
    close_code: int = 1000
    close_reason: str = ""
    edge: str | None = None


class CoreServices:
    """The pure helpers the core borrows: ids, resume signatures, ICE servers."""

    def __init__(self, tokens: Tokens, timing: Timing, turn: TurnConfig | None, metrics: Metrics) -> None:
        self.tokens = tokens
        self.timing = timing
        self.turn = turn
        self.metrics = metrics

    def new_pid(self) -> str:
        return new_id("p", 9)

    def sign_resume(self, claims: ResumeClaims, now: float) -> str:
        return self.tokens.sign_resume(claims, now, ttl=2 * self.timing.grace)

    def ice_servers(self, pid: str, now: float, ends_at: float) -> tuple[list[dict[str, object]], float | None]:
        if self.turn is None:
            return [], None
        try:
            creds = issue_credentials(self.turn, opaque_id=new_id("u", 6), now=now, session_ends_at=ends_at)
        except ValueError:  # the session is over: no credentials
            return [], None
        self.metrics.turn_credentials()
        return [ice_server_entry(creds)], float(creds["expires_at"])


class Hub:
    def __init__(self, config: Config, tokens: Tokens, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.config = config
        self.tokens = tokens
        self.metrics = metrics
        self.clock = clock
        turn = TurnConfig(urls=config.turn_urls, secret=config.turn_secret.reveal()) if config.turn_urls else None
        self.services = CoreServices(tokens, config.timing, turn, metrics)
        self.rooms = Rooms(config.timing, self.services)
        self.connections: dict[ConnId, Connection] = {}
        self.media: Any = None  # the SFU manager, started on the first SFU room's media
        self._media_pending: list[MediaSignal | MediaMembers] = []
        self._media_start: asyncio.Task[None] | None = None
        self._sfu_ice_expires: float | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.media_unreachable: str | None = None
        """Why no client could reach the SFU (a code, never an address), or None; checked at start."""
        self.coalescer = Coalescer(self._deliver_coalesced)  # queue/waiting state: latest, a few per second
        self.cluster: ClusterLike | None = None
        """Several instances on Redis (``ALCOVE_REDIS_URL``); None: this process alone, everything in memory."""
        self.echo = EchoCalls([], config.media_addressing())
        """The pre-join connectivity test's echo peer (host candidates only, as the SFU's)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # Everything loaded so far lives for the whole process: keep it out of the collector's way, so a full
        # collection does not pause the relay of every room.
        self.media_unreachable = self.check_media_reachable()
        gc.collect()
        gc.freeze()
        self._ticker = asyncio.create_task(self._tick_loop(), name="alcove-tick")

    def check_media_reachable(self) -> str | None:
        """Says at start (a log line without addresses) when the SFU would have no candidate a client could reach."""
        from rtc.aiortc_hooks import host_addresses  # the addresses aioice gathers on

        reason = self.config.media_addressing().unreachable_reason(host_addresses(), relay=bool(self.config.turn_urls))
        if reason is not None:
            log_event("sfu-unreachable", logging.WARNING, reason=reason)
        return reason

    async def stop(self) -> None:
        if self._media_start is not None and not self._media_start.done():
            self._media_start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._media_start
        if self.media is not None:
            await self.media.stop()
        await self.echo.close()
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.close_sockets()

    async def close_sockets(self) -> None:
        for c in list(self.connections.values()):
            if c.ws is not None and not c.ws.closed:
                with contextlib.suppress(Exception):
                    await c.ws.close(code=1001, message=b"server-shutdown")

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                self.tick()
            except Exception:  # pragma: no cover - a bug must not stop the clock
                log.exception("tick failed")

    def tick(self) -> None:
        now = self.clock()
        self.perform(self.rooms.tick(now))
        if self.media is not None and self._sfu_ice_expires is not None and now >= self._sfu_ice_expires - 600:
            self.media.set_ice_servers(self._sfu_ice_servers())
        self.tokens.revocations.prune(now)
        self.update_gauges()

    # ------------------------------------------------------------------ sockets

    def register(self, ws: web.WebSocketResponse) -> Connection:
        c = Connection(new_id("c", 8), ws)  # type: ignore[arg-type]
        c.writer = asyncio.create_task(self._write(c), name="alcove-writer")
        self.connections[c.conn] = c
        self.metrics.ws_connection()
        return c

    async def unregister(self, c: Connection) -> None:
        self.connections.pop(c.conn, None)
        if self.cluster is not None:
            self.cluster.relay_bye(c.conn)
        self.coalescer.forget(c.conn)
        self.perform(self.rooms.disconnect(c.conn, self.clock()))
        if c.writer and not c.writer.done():
            with contextlib.suppress(asyncio.QueueFull):
                c.outbox.put_nowait(None)
            try:
                await asyncio.wait_for(c.writer, 10)  # a close handshake under load can take a while
            except (TimeoutError, asyncio.CancelledError):
                c.writer.cancel()
        self.update_gauges()

    async def _write(self, c: Connection) -> None:
        try:
            while True:
                item = await c.outbox.get()
                if item is None:
                    break
                data, queued_at, kind = item
                assert c.ws is not None
                await c.ws.send_str(data.decode())
                if kind == "relay":
                    self.metrics.observe_relay_latency(time.perf_counter() - queued_at)
            if c.closing and c.ws is not None and not c.ws.closed:
                await c.ws.close(code=c.close_code, message=c.close_reason.encode())
        except (ConnectionResetError, RuntimeError):
            pass

    def connect(self, c: Connection, admission: Admission, hello: m.Hello) -> Joined | None:
        """Who the socket became in its room; None when the core refused it (the socket is being closed)."""
        # The seat's persisted admission generation: a restart does not revive older resume credentials.
        generation = self.tokens.revocations.generation(admission.token_id)
        admission = dataclasses.replace(admission, generation=max(admission.generation, generation))
        connected = self.rooms.connect(c.conn, admission, hello, self.clock())
        self.perform(connected.effects)
        self.update_gauges()
        return connected.joined

    def receive(self, c: Connection, msg: m.ClientMessage) -> None:
        self.perform(self.rooms.receive(c.conn, msg, self.clock()))

    def receive_data(self, c: Connection, data: str | bytes) -> None:
        """A message of a joined socket, through the one bounded decoder, to the core."""
        try:
            decoded = jsondecode.decode_client(data)
        except SignalingError as err:
            self.send_error(c, err.code, err.message, err.ref)
            return
        if isinstance(decoded, m.Hello):
            self.send_error(c, "not-allowed", "already joined", "hello")
            return
        self.receive(c, decoded)

    # ------------------------------------------------------------------ sockets on other instances (cluster)

    def connect_remote(self, conn: ConnId, edge: str, admission: Admission, hello_data: str) -> bool:
        """A socket of a room this instance owns, on instance ``edge``: True when it joined."""
        c = Connection(conn, None, edge=edge)
        self.connections[conn] = c
        try:
            hello = jsondecode.decode_client(hello_data)
            if not isinstance(hello, m.Hello):
                raise SignalingError("hello-expected", "send hello first")
        except SignalingError as err:
            self.send_error(c, err.code, err.message, err.ref)
            self.close(conn, err.close_code or 4000, err.code)
            return False
        joined = self.connect(c, admission, hello) is not None
        if joined:
            log_event("joined", conn=conn, room=admission.spec.room_id, role=admission.role)
        return joined

    def receive_raw(self, conn: ConnId, data: str) -> None:
        c = self.connections.get(conn)
        if c is not None and c.edge is not None and not c.closing:
            self.receive_data(c, data)

    def unregister_remote(self, conn: ConnId) -> None:
        c = self.connections.get(conn)
        if c is None or c.edge is None:
            return
        del self.connections[conn]
        self.coalescer.forget(conn)
        self.perform(self.rooms.disconnect(conn, self.clock()))
        self.update_gauges()

    def deliver_raw(self, conn: ConnId, data: bytes) -> None:
        """A message the room's owner sent to a socket on this instance."""
        c = self.connections.get(conn)
        if c is None or c.closing:
            return
        try:
            c.outbox.put_nowait((data, time.perf_counter(), "control"))
        except asyncio.QueueFull:
            self.close(conn, 4009, "slow-consumer", force=True)

    def send_error(self, c: Connection, code: str, message: str, ref: str | None = None) -> None:
        self.perform([Send(c.conn, m.Error(code=code, message=message, ref=ref))])

    # ------------------------------------------------------------------ effects

    def perform(self, effects: list[Effect]) -> None:
        now = time.perf_counter()
        for e in effects:
            if isinstance(e, Send):
                self._enqueue(e.conn, e.message, now)
            elif isinstance(e, Close):
                self.close(e.conn, e.code, e.reason)
            elif isinstance(e, RevokeToken):
                self.tokens.revocations.revoke_token(e.token_id, e.until)
                if self.cluster is not None:
                    self.cluster.shared("t", e.token_id, 1, e.until)
            elif isinstance(e, SeatGeneration):
                self.tokens.revocations.set_generation(e.token_id, e.generation, e.until)
                if self.cluster is not None:
                    self.cluster.shared("gen", e.token_id, e.generation, e.until)
            elif isinstance(e, RoomEnded):
                self.tokens.revocations.end_room(e.room_id, e.until)
                if self.cluster is not None:
                    self.cluster.shared("r", e.room_id, 1, e.until)
                self.metrics.session_ended(e.reason)
                log_event("room-ended", room=e.room_id, reason=e.reason)
            elif isinstance(e, (MediaSignal, MediaMembers)):
                self._media(e)

    # ------------------------------------------------------------------ SFU rooms

    def _media(self, effect: MediaSignal | MediaMembers) -> None:
        if self.media is not None:
            self.media.handle(effect)
            return
        if isinstance(effect, MediaMembers) and not self._media_pending and not effect.pids:
            return  # nothing to end: the room never had media
        self._media_pending.append(effect)
        if self._media_start is None:
            self._media_start = asyncio.create_task(self._start_media(), name="alcove-sfu-start")

    async def _start_media(self) -> None:
        from .sfu import SfuManager  # imports aiortc: only when an SFU room needs it

        addressing = self.config.media_addressing()
        manager = SfuManager(self._media_send, workers=self.config.media_workers,
                             ice_servers=self._sfu_ice_servers(), loopback=addressing.loopback,
                             announced=addressing.announced, ports=addressing.ports)
        try:
            await manager.start()
        except Exception:
            log_event("sfu-start-failed", code="server-error")
            self._media_start = None
            for e in self._media_pending:
                if isinstance(e, MediaSignal):
                    self._media_send(e.room_id, e.pid, m.MediaEnded(from_=m.SFU_PID))
            self._media_pending.clear()
            return
        self.media = manager
        pending, self._media_pending = self._media_pending, []
        for e in pending:
            manager.handle(e)

    def echo_ice_servers(self) -> list[dict[str, object]]:
        """ICE servers for one pre-join test: TURN credentials valid :data:`TURN_LIFETIME_S` seconds, or none."""
        turn = self.services.turn
        if turn is None:
            return []
        creds = issue_test_credentials(turn, opaque_id=new_id("e", 6), now=self.clock(), lifetime_s=TURN_LIFETIME_S)
        self.metrics.turn_credentials()
        return [ice_server_entry(creds)]

    def _sfu_ice_servers(self) -> list[dict[str, object]]:
        """The SFU's own TURN credentials (for an SFU host behind NAT), refreshed by the tick well before expiry."""
        now = self.clock()
        servers, expires = self.services.ice_servers(m.SFU_PID, now, now + MAX_SFU_CREDENTIAL)
        self._sfu_ice_expires = expires
        return servers

    def _media_send(self, room_id: str, pid: str, message: m.ServerMessage) -> None:
        conn = self.rooms.conn_of(room_id, pid)
        if conn is not None:
            self._enqueue(conn, message, time.perf_counter())

    def _enqueue(self, conn: ConnId, message: m.ServerMessage, now: float) -> None:
        c = self.connections.get(conn)
        if c is None or c.closing or self.coalescer.hold(conn, message):
            return
        self._put(c, message, now)

    def _deliver_coalesced(self, conn: ConnId, message: m.ServerMessage) -> None:
        c = self.connections.get(conn)
        if c is not None and not c.closing:
            self._put(c, message, time.perf_counter())

    def _put(self, c: Connection, message: m.ServerMessage, now: float) -> None:
        conn = c.conn
        if isinstance(message, m.Error):
            self.metrics.error(message.code)
        elif isinstance(message, m.Admitted):
            self.metrics.admission()
        elif isinstance(message, m.Declined):
            self.metrics.decline()
        elif isinstance(message, m.PeerApp):
            self.metrics.app_message()
        kind = "relay" if isinstance(message, RELAYED) else "control"
        if c.edge is not None and self.cluster is not None:
            self.cluster.to_edge(c.edge, conn, m.encode(message))
            return
        try:
            c.outbox.put_nowait((m.encode(message), now, kind))
        except asyncio.QueueFull:
            log_event("slow-consumer", conn=conn)
            self.metrics.error("slow-consumer")
            self.close(conn, 4009, "slow-consumer", force=True)

    def close(self, conn: ConnId, code: int, reason: str, force: bool = False) -> None:
        c = self.connections.get(conn)
        if c is None or c.closing:
            return
        c.closing, c.close_code, c.close_reason = True, code, reason
        if c.edge is not None:
            if self.cluster is not None:
                self.cluster.close_on_edge(c.edge, conn, code, reason)
            return
        if force:
            while not c.outbox.empty():
                c.outbox.get_nowait()
        with contextlib.suppress(asyncio.QueueFull):
            c.outbox.put_nowait(None)

    def update_gauges(self) -> None:
        census = self.rooms.census(self.clock())
        self.metrics.set_rooms(census.rooms)
        for role, n in census.participants.items():
            self.metrics.set_participants(role, n)
        self.metrics.set_waiting_clients(census.waiting)
