"""The edge runtime: owns the core registry, the sockets and the clock, and performs the core's effects."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import time
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator
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
from .links import Links, MemoryStore
from .logs import log_event
from .metrics import Metrics
from .tokens import Tokens, new_id
from .turn import TurnConfig, ice_server_entry, issue_credentials, issue_test_credentials

if TYPE_CHECKING:
    from .cluster.common import ClusterLike

log = logging.getLogger("alcove")

OUTBOX_LIMIT = 256
"""Messages a socket may have waiting under backpressure; one more and it is closed as a slow consumer (4009)."""
DIRECT_WRITE_LIMIT = 16 * 1024
"""A message goes straight to the socket's transport while its write buffer holds at most this many bytes (well
under asyncio's 64 KiB high-water mark, so the write never waits) and nothing is queued before it; otherwise it
waits in the socket's outbox for the socket's writer task."""
MAX_SFU_CREDENTIAL = 4 * 3600.0
RELAYED = (m.PeerOffer, m.PeerAnswer, m.PeerCandidate, m.PeerKey, m.PeerApp)
_RELAYED_TYPES: frozenset[type] = frozenset(RELAYED)
_COUNTED_TYPES: frozenset[type] = frozenset({m.Error, m.Admitted, m.Declined, m.PeerApp})
"""Messages that a counter counts as they go out (every other one goes out without a metric call)."""


@dataclass
class Connection:
    conn: ConnId
    ws: web.WebSocketResponse | None  # None: the socket is on another instance (``edge``), relayed through Redis
    transport: asyncio.Transport | None = None
    outbox: deque[tuple[bytes, float, str]] = field(default_factory=deque)
    """What waits for the writer task (only under backpressure): encoded message, queued at, kind."""
    writer: asyncio.Task[None] | None = None
    """The task that drains the outbox (and closes the socket); None while messages go straight out."""
    closing: bool = False
    close_code: int = 1000
    close_reason: str = ""
    edge: str | None = None


@dataclass(frozen=True)
class _Resumed:
    """A member of an SFU room resumed while the SFU manager was starting (see ``Hub._media_resumed``)."""

    room_id: str
    pid: str


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
        self._media_pending: list[MediaSignal | MediaMembers | _Resumed] = []
        self._media_start: asyncio.Task[None] | None = None
        self._sfu_ice_expires: float | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.media_unreachable: str | None = None
        """Why no client could reach the SFU (a code, never an address), or None; checked at start."""
        self.coalescer = Coalescer(self._deliver_coalesced)  # queue/waiting state: latest, a few per second
        self._encoded: tuple[object, bytes] = (None, b"")
        """The latest message encoded and its bytes (see ``_put``)."""
        self.cluster: ClusterLike | None = None
        """Several instances on Redis (``ALCOVE_REDIS_URL``); None: this process alone, everything in memory."""
        links_path = config.data_dir / "links.json" if config.data_dir else None
        self.links = Links(MemoryStore(clock, links_path), config.admin_key.reveal())
        """Short links' seat ids and the admin's list (in Redis too when several instances share one)."""
        self.echo = EchoCalls([], config.media_addressing())
        """The pre-join connectivity test's echo peer (host candidates only, as the SFU's)."""
        self.keep_media = False
        """Set for a deploy (SIGTERM): from then on no media effect reaches the SFU (the sockets closing are not
        departures), and at stop its workers are left forwarding for the next process to adopt."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # Everything loaded so far lives for the whole process: keep it out of the collector's way, so a full
        # collection does not pause the relay of every room.
        self.media_unreachable = self.check_media_reachable()
        gc.collect()
        gc.freeze()
        self._ticker = asyncio.create_task(self._tick_loop(), name="alcove-tick")
        from .sfu import adoptable  # light: the manager (aiortc) is imported on use

        if adoptable(self.config.media_runtime_dir()):
            # SFU workers a previous process left forwarding (a restart or deploy): adopt them now, so that
            # their rooms' media goes on while the members resume.
            self._media_start = asyncio.create_task(self._start_media(), name="alcove-sfu-start")

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
            await self.media.stop(detach=self.keep_media)
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

    def register(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None = None) -> Connection:
        """A prepared socket; ``transport`` (the request's) lets messages go straight to it when it can take
        them (without it, every message goes through the socket's writer task)."""
        c = Connection(new_id("c", 8), ws, transport)  # type: ignore[arg-type]
        self.connections[c.conn] = c
        self.metrics.ws_connection()
        return c

    async def unregister(self, c: Connection) -> None:
        self.connections.pop(c.conn, None)
        if self.cluster is not None:
            self.cluster.relay_bye(c.conn)
        self.coalescer.forget(c.conn)
        self.perform(self.rooms.disconnect(c.conn, self.clock()))
        writer = c.writer
        if writer is not None and not writer.done():
            try:
                await asyncio.wait_for(writer, 10)  # a close handshake under load can take a while
            except (TimeoutError, asyncio.CancelledError):
                writer.cancel()
        c.outbox.clear()
        self.update_gauges()

    def _send(self, c: Connection, data: bytes, queued_at: float, kind: str) -> None:
        """Straight to the socket when its transport can take it and nothing waits before it; else queued for
        the writer task (started here), in order. A full outbox closes the socket as a slow consumer."""
        if c.writer is None and c.ws is not None:
            transport = c.transport
            if transport is not None and transport.get_write_buffer_size() <= DIRECT_WRITE_LIMIT:
                try:
                    rest = _run_now(c.ws.send_str(data.decode()))
                except (ConnectionResetError, RuntimeError):
                    return  # the socket is going away: its reader ends the session
                if rest is None:
                    if kind == "relay":
                        self.metrics.observe_relay_latency(time.perf_counter() - queued_at)
                    return
                c.writer = asyncio.create_task(self._write(c, rest), name="alcove-writer")  # it had to wait
                return
        if len(c.outbox) >= OUTBOX_LIMIT:
            log_event("slow-consumer", conn=c.conn)
            self.metrics.error("slow-consumer")
            self.close(c.conn, 4009, "slow-consumer", force=True)
            return
        c.outbox.append((data, queued_at, kind))
        if c.writer is None:
            c.writer = asyncio.create_task(self._write(c), name="alcove-writer")

    async def _write(self, c: Connection, first: Coroutine[Any, Any, None] | None = None) -> None:
        """Drains the outbox (after ``first``, a send that had to wait), then closes the socket if it is closing;
        then messages go straight out again."""
        try:
            if first is not None:
                await first
            while c.outbox:
                data, queued_at, kind = c.outbox.popleft()
                assert c.ws is not None
                await c.ws.send_str(data.decode())
                if kind == "relay":
                    self.metrics.observe_relay_latency(time.perf_counter() - queued_at)
            if c.closing and c.ws is not None and not c.ws.closed:
                await c.ws.close(code=c.close_code, message=c.close_reason.encode())
        except (ConnectionResetError, RuntimeError):
            c.outbox.clear()
        finally:
            c.writer = None

    def connect(self, c: Connection, admission: Admission, hello: m.Hello) -> Joined | None:
        """Who the socket became in its room; None when the core refused it (the socket is being closed)."""
        # The seat's persisted admission generation: a restart does not revive older resume credentials.
        generation = self.tokens.revocations.generation(admission.token_id)
        admission = dataclasses.replace(admission, generation=max(admission.generation, generation))
        connected = self.rooms.connect(c.conn, admission, hello, self.clock())
        self.perform(connected.effects)
        self.update_gauges()
        joined = connected.joined
        if joined is not None and hello.resume is not None and joined.status == "admitted" \
                and admission.spec.topology == "sfu":
            self._media_resumed(joined.room_id, joined.pid)
        return joined

    def receive(self, c: Connection, msg: m.ClientMessage) -> None:
        self.perform(self.rooms.receive(c.conn, msg, self.clock()))

    def receive_data(self, c: Connection, data: str | bytes) -> None:
        """A message of a joined socket, through the one bounded decoder, to the core."""
        try:
            decoded = jsondecode.decode_client(data)
        except SignalingError as err:
            self.send_error(c, err.code, err.message, err.ref)
            return
        if type(decoded) is m.Hello:
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
        self._send(c, data, time.perf_counter(), "control")

    def send_error(self, c: Connection, code: str, message: str, ref: str | None = None) -> None:
        self.perform([Send(c.conn, m.Error(code=code, message=message, ref=ref))])

    # ------------------------------------------------------------------ effects

    def perform(self, effects: list[Effect]) -> None:
        now = time.perf_counter()
        for e in effects:
            if type(e) is Send:  # the relay's one effect, first
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
        if self.keep_media:
            return  # stopping for a deploy: sockets closing now are no departures; the next process decides
        if self.media is not None:
            self.media.handle(effect)
            return
        if isinstance(effect, MediaMembers) and not self._media_pending and not effect.pids:
            return  # nothing to end: the room never had media
        self._media_pending.append(effect)
        if self._media_start is None:
            self._media_start = asyncio.create_task(self._start_media(), name="alcove-sfu-start")

    def _media_resumed(self, room_id: str, pid: str) -> None:
        """A member of an SFU room resumed: if no SFU here carries the room (this instance took the room over
        from a dead owner, or the previous process's workers are gone), its connection leads nowhere: tell it
        ``media-ended`` so it builds one to this instance's SFU. Adopted rooms keep their connections."""
        if self.keep_media:
            return
        if self.media is not None:
            self.media.resumed(room_id, pid)
        elif self._media_start is not None:  # starting (maybe adopting): decide once it runs
            self._media_pending.append(_Resumed(room_id, pid))
        else:
            self._media_send(room_id, pid, m.MediaEnded(from_=m.SFU_PID))

    async def _start_media(self) -> None:
        from .sfu import SfuManager  # imports aiortc: only when an SFU room needs it

        addressing = self.config.media_addressing()
        manager = SfuManager(self._media_send, workers=self.config.media_workers,
                             ice_servers=self._sfu_ice_servers(), loopback=addressing.loopback,
                             announced=addressing.announced, ports=addressing.ports,
                             runtime_dir=self.config.media_runtime_dir(),
                             adopt_within=self.config.media_adopt_seconds, media_host=self.config.media_host)
        try:
            await manager.start()
        except Exception:
            log_event("sfu-start-failed", code="server-error")
            self._media_start = None
            for e in self._media_pending:
                if isinstance(e, (MediaSignal, _Resumed)):
                    self._media_send(e.room_id, e.pid, m.MediaEnded(from_=m.SFU_PID))
            self._media_pending.clear()
            return
        self.media = manager
        pending, self._media_pending = self._media_pending, []
        for e in pending:
            if isinstance(e, _Resumed):
                manager.resumed(e.room_id, e.pid)
            else:
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
        kind = type(message)
        if kind in _COUNTED_TYPES:
            self._count_sent(message)
        # A message to several sockets (a roster, a key or an app message to everyone) is encoded once: the same
        # object comes back for each recipient, one after the other.
        if message is self._encoded[0]:
            data = self._encoded[1]
        else:
            data = m.encode(message)
            self._encoded = (message, data)
        if c.edge is not None and self.cluster is not None:
            self.cluster.to_edge(c.edge, c.conn, data)
            return
        self._send(c, data, now, "relay" if kind in _RELAYED_TYPES else "control")

    def _count_sent(self, message: m.ServerMessage) -> None:
        if isinstance(message, m.Error):
            self.metrics.error(message.code)
        elif isinstance(message, m.Admitted):
            self.metrics.admission()
        elif isinstance(message, m.Declined):
            self.metrics.decline()
        elif isinstance(message, m.PeerApp):
            self.metrics.app_message()

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
            c.outbox.clear()
        if c.writer is None and c.ws is not None:  # else the writer closes it once the outbox is sent
            c.writer = asyncio.create_task(self._write(c), name="alcove-writer")

    def update_gauges(self) -> None:
        census = self.rooms.census(self.clock())
        self.metrics.set_rooms(census.rooms)
        for role, n in census.participants.items():
            self.metrics.set_participants(role, n)
        self.metrics.set_waiting_clients(census.waiting)


def _run_now(coro: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None] | None:
    """Runs ``coro`` up to its first suspension without a task: None when it finished (a websocket send that the
    transport took at once), else an awaitable that finishes it (it waits on a drain or a lock)."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    except BaseException:
        coro.close()
        raise
    return _resume(coro, waiting)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """Continues a coroutine that :func:`_run_now` started, from the future it waits on, inside a task."""
    while True:
        try:
            sent = yield waiting
        except BaseException as exc:  # a cancellation of the task goes on to the coroutine
            try:
                waiting = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = coro.send(sent)
            except StopIteration:
                return
