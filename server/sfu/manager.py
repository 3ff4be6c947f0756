"""The SFU manager: lives in the signaling process, owns the worker processes, never touches media.

``hub.media = SfuManager(send)``; the hub calls :meth:`SfuManager.handle` with every ``MediaSignal`` and
``MediaMembers`` effect. The manager pins each room to one worker process (the least loaded live one, on
the room's first effect), forwards the effect to it over a pipe (through a per-worker writer thread, so a
busy or stuck worker never blocks the signaling loop) and turns the worker's replies into messages for
``send(room_id, pid, message)``:

* ``signaling.messages.PeerAnswer(from_="sfu", sdp=…)`` — the answer to the client's offer;
* ``Tracks(from_="sfu", mids={mid: TrackRef(pid, kind)})`` — which
  publisher each of the client's ``recvonly`` m-lines carries (a new message; see docs/sfu.md);
* ``signaling.messages.Error(code=…, message=…, ref="offer")`` — a refused offer (``not-allowed``,
  ``invalid-message``); ``MediaEnded`` when the room's worker died (a new offer on a new connection reconnects).

A worker that dies (crash, OOM kill, SIGKILL) is noticed when its control connection ends: its rooms are
unpinned, every member of those rooms is told, a replacement worker is started, and the next offer of such a
room starts its media again on a live worker.

Workers outlive the signaling process (docs/sfu.md §4): each one runs in its own session and is reached
through a unix socket in ``runtime_dir`` (mode 0600). A new manager on the same ``runtime_dir`` first connects
to the sockets it finds and **adopts** those workers with their rooms; an adopted room keeps forwarding to its
previous members while they resume, each one re-attached as the core admits it again, and the members who do
not come back within ``adopt_within`` seconds are dropped. Adopted workers only *drain*: they take no new room
and are stopped when their last adopted room ends, so new rooms always run on workers of the current release
(started fresh by this manager). ``stop(detach=True)`` (a deploy) leaves every worker running for the next
process; a worker nobody adopts within ``adopt_within`` seconds exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from signaling import messages as m
from signaling.effects import MediaMembers, MediaSignal

from .host import spawn_worker, start_hosted
from .runtime import SOCKET_NAME
from .worker import WORKER_PROTOCOL, WorkerConfig

log = logging.getLogger("alcove.sfu")

STARTUP_TIMEOUT = 30.0
RESPAWN_DELAY = 1.0
"""A worker that dies within 5 s of its start is restarted after this delay (doubling up to 30 s)."""
MAX_HELD = 256
"""Offers kept while a pool worker is being started again (the newest per member; the oldest dropped past this)."""

SendCallback = Callable[[str, str, "m.ServerMessage"], None]
"""``send(room_id, pid, message)``: deliver ``message`` to participant ``pid`` of ``room_id``."""


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None  # None: adopted from a previous signaling process
    conn: Connection
    outbox: queue.SimpleQueue[Any]
    writer: threading.Thread
    alive: bool = True
    os_pid: int | None = None
    started_at: float = 0.0
    respawn_delay: float = 0.0
    rooms: set[str] = field(default_factory=set)
    draining: bool = False
    """Adopted from a previous signaling process: keeps its rooms, takes no new one, stops when they end."""
    retiring: bool = False
    """Told to stop (drained, or of another release): its exit is no failure."""


@dataclass
class _Adoption:
    """A room adopted from a previous signaling process, while its members resume."""

    previous: frozenset[str]
    """The admitted set the worker had (the one the previous process's core last sent)."""
    seen: set[str] = field(default_factory=set)
    """Pids the core has admitted again since; one that leaves after that has left for good."""
    timer: asyncio.TimerHandle | None = None

    def effective(self, pids: frozenset[str]) -> frozenset[str]:
        return pids | (self.previous - self.seen)


class SfuManager:
    """Routes SFU rooms to worker processes. Call :meth:`start` on the running loop, :meth:`stop` at exit."""

    def __init__(
        self,
        send: SendCallback,
        workers: int = 0,
        *,
        ice_servers: list[dict[str, Any]] | None = None,
        loopback: bool = False,
        announced: str | None = None,
        ports: tuple[int, int] | None = None,
        pli_interval: float = 0.5,
        transcode: bool = False,
        pack: bool = False,
        runtime_dir: Path | None = None,
        adopt_within: float = 30.0,
        media_host: Path | None = None,
    ) -> None:
        self.send = send
        self.size = workers if workers > 0 else (os.cpu_count() or 1)
        self.config = WorkerConfig(ice_servers=list(ice_servers or []), loopback=loopback, announced=announced,
                                   ports=ports, pli_interval=pli_interval, transcode=transcode, pack=pack,
                                   adopt_within=adopt_within)
        self.runtime_dir = runtime_dir
        """Where the workers' control sockets live; None: a private directory of this process (nothing to
        adopt after a restart), removed at :meth:`stop`."""
        self._own_dir = False
        self.media_host = media_host
        """The socket of ``alcove media-host``, which starts the workers (a container: they outlive this one's
        processes); None: this process starts them itself, each in a session of its own."""
        self.workers: list[_Worker | None] = [None] * self.size
        self.members: dict[str, frozenset[str]] = {}
        """room id → admitted pids, a cache of the latest ``MediaMembers`` effect (the core's ``Room`` decides;
        this copy gates media signals and is replayed to a respawned worker)."""
        self.pinned: dict[str, int] = {}
        self.adopting: dict[str, _Adoption] = {}
        # offers that came while no pool worker was up (one is being started again): sent to it once it is
        self._held: list[tuple[str, str, str]] = []
        """Rooms adopted from a previous signaling process whose members have not all resumed yet."""
        self.adopted_rooms = 0
        self.worker_deaths = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: dict[int, asyncio.Future[int]] = {}
        self._next_req = 0
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    def socket_path(self, index: int) -> Path:
        """A fresh worker's socket: its pool index and a random part (never the name of a worker left running)."""
        assert self.runtime_dir is not None
        return self.runtime_dir / SOCKET_NAME.format(f"{index}-{os.urandom(4).hex()}")

    async def start(self) -> None:
        """Adopt the live workers found in the runtime directory, start the others, wait until each is ready."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        if self.runtime_dir is None:
            self.runtime_dir = Path(tempfile.mkdtemp(prefix="alcove-sfu-"))
            self._own_dir = True
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.runtime_dir.lstat().st_uid != os.getuid() or self.runtime_dir.is_symlink():
            raise RuntimeError("the runtime directory is not ours")  # e.g. someone else made it in /tmp first
        os.chmod(self.runtime_dir, 0o700)
        if len(str(self.socket_path(self.size))) > 100:  # sun_path holds 108 bytes
            raise RuntimeError("the runtime directory's path is too long for a unix socket")
        for path in sorted(self.runtime_dir.glob(SOCKET_NAME.format("*"))):
            await self._adopt_at(path)
        for i in range(self.size):
            self._ready[i] = self._loop.create_future()
        results = await asyncio.gather(*(self._open(i) for i in range(self.size)), return_exceptions=True)
        futures = list(self._ready.values())
        if all(r is None for r in results):
            await asyncio.wait(futures, timeout=STARTUP_TIMEOUT)
        if not all(f.done() and not f.cancelled() for f in futures):
            await self.stop()
            raise RuntimeError("an SFU worker process did not start")

    async def stop(self, detach: bool = False) -> None:
        """End every room's media and stop the workers (terminate those that do not exit within 3 s).

        ``detach=True`` (a deploy, SIGTERM): leave the workers forwarding for the next signaling process, which
        adopts them through their sockets; a worker nobody adopts exits after ``adopt_within`` seconds."""
        self._stopping = True
        for a in self.adopting.values():
            if a.timer is not None:
                a.timer.cancel()
        self.adopting.clear()
        if detach:
            for w in self.workers:
                if w is not None:
                    self._retire(w)
            self.workers = [None] * self.size
            self.pinned.clear()
            return  # a deploy: the next process adopts them
        for w in self.workers:
            if w is not None and w.alive:
                w.outbox.put(("stop",))
        loop = asyncio.get_running_loop()
        for w in self.workers:
            if w is None:
                continue
            await loop.run_in_executor(None, _join, w, 3.0)
            self._retire(w)
        self.workers = [None] * self.size
        self.pinned.clear()
        if self._own_dir and self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    async def _adopt_at(self, path: Path) -> None:
        """A socket a previous signaling process left: adopt its worker (it drains), or remove a stale one."""
        assert self._loop is not None
        conn = await self._loop.run_in_executor(None, _connect, path)
        if conn is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # its worker is gone
            return
        index = len(self.workers)  # after the pool: never chosen for a new room
        self.workers.append(None)
        self._ready[index] = self._loop.create_future()
        w = self._attach(index, conn, None, 0.0)
        w.draining = True
        if self.config.ice_servers:
            w.outbox.put(("ice", list(self.config.ice_servers)))  # the previous process's credentials may be old

    async def _open(self, index: int, delay: float = 0.0) -> None:
        """Start pool worker ``index`` (a new process of this release) and connect to it."""
        assert self._loop is not None
        if delay:
            await asyncio.sleep(delay)
        if self._stopping:
            return
        path = self.socket_path(index)
        process = await self._loop.run_in_executor(None, _start_worker, path, self.config, self.media_host)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        conn = None
        while conn is None:
            if (process is not None and process.poll() is not None) or time.monotonic() > deadline or self._stopping:
                if process is not None:
                    if process.poll() is None:
                        process.kill()
                    await self._loop.run_in_executor(None, process.wait)
                raise RuntimeError("an SFU worker process did not start")
            await asyncio.sleep(0.05)
            conn = await self._loop.run_in_executor(None, _connect, path)
        if index not in self._ready or self._ready[index].done():
            self._ready[index] = self._loop.create_future()
        self._attach(index, conn, process, delay)

    def _attach(self, index: int, conn: Connection, process: subprocess.Popen[bytes] | None,
                delay: float) -> _Worker:
        assert self._loop is not None
        outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        writer = threading.Thread(target=_write_loop, args=(conn, outbox), name=f"alcove-sfu-writer-{index}",
                                  daemon=True)
        w = _Worker(index, process, conn, outbox, writer, started_at=time.monotonic(), respawn_delay=delay)
        writer.start()
        self.workers[index] = w
        self._loop.add_reader(conn.fileno(), self._on_readable, w)
        held, self._held = self._held, []
        for room_id, pid, sdp in held:  # offers made while no pool worker was up
            if pid in self.members.get(room_id, frozenset()) and (target := self._worker_for(room_id)) is not None:
                target.outbox.put(("offer", room_id, pid, sdp))
        return w

    def _retire(self, w: _Worker) -> None:
        """Forget a worker's connection and writer (its process has exited, is about to, or is left running)."""
        assert self._loop is not None
        w.alive = False
        with contextlib.suppress(Exception):
            self._loop.remove_reader(w.conn.fileno())
        w.outbox.put(None)
        w.writer.join(1.0)
        with contextlib.suppress(Exception):
            w.conn.close()
        ready = self._ready.get(w.index)
        if ready is not None and not ready.done():
            ready.cancel()

    def _on_exit(self, w: _Worker) -> None:
        if not w.alive:
            return
        self._retire(w)
        code = None
        if w.process is not None:  # our child: reap it (an adopted worker's parent was the previous process)
            with contextlib.suppress(Exception):
                code = w.process.wait(1.0)
        if self._stopping:
            return
        if w.retiring:
            self.workers[w.index] = None
            return
        self.worker_deaths += 1
        log.error("SFU worker %d (pid %s) died (exit code %s); ending the media of %d room(s)",
                  w.index, w.os_pid, code, len(w.rooms))
        for room_id in sorted(w.rooms):
            self.pinned.pop(room_id, None)
            adoption = self.adopting.pop(room_id, None)
            if adoption is not None and adoption.timer is not None:
                adoption.timer.cancel()
            for pid in sorted(self.members.get(room_id, ())):
                self._deliver(room_id, pid, m.MediaEnded(from_=m.SFU_PID))
        w.rooms.clear()
        for future in list(self._stats.values()):
            if not future.done():
                future.set_result({})
        assert self._loop is not None
        if w.index >= self.size:  # an adopted worker ended: nothing to replace (new rooms go to the pool)
            self.workers[w.index] = None
            return
        delay = 0.0
        if time.monotonic() - w.started_at < 5.0:  # crash loop: back off
            delay = min(max(RESPAWN_DELAY, 2 * w.respawn_delay), 30.0)
        task = self._loop.create_task(self._open(w.index, delay), name="alcove-sfu-respawn")
        task.add_done_callback(_log_failure)

    # ------------------------------------------------------------------ adoption

    def _adopt(self, w: _Worker, rooms: dict[str, list[str]]) -> None:
        """A worker left by a previous signaling process: pin its rooms here and let their members resume."""
        assert self._loop is not None
        for room_id, pids in sorted(rooms.items()):
            if room_id in self.pinned or not pids:
                continue
            self.pinned[room_id] = w.index
            w.rooms.add(room_id)
            adoption = self.adopting[room_id] = _Adoption(frozenset(pids))
            adoption.timer = self._loop.call_later(self.config.adopt_within, self._adoption_over, room_id)
            self.adopted_rooms += 1
        log.info("SFU worker adopted with %d room(s)", len(w.rooms))
        self._drained(w)

    def _drained(self, w: _Worker) -> None:
        """An adopted worker whose rooms have all ended is stopped (its process is of the previous release)."""
        if w.draining and w.alive and not w.rooms and not w.retiring:
            w.retiring = True
            w.outbox.put(("stop",))

    def _adoption_over(self, room_id: str) -> None:
        """The bound is over: members who did not resume are dropped (and the room ended if nobody did)."""
        adoption = self.adopting.pop(room_id, None)
        if adoption is None:
            return
        self._members(room_id, self.members.get(room_id, frozenset()))

    # ------------------------------------------------------------------ effects from the hub

    def handle(self, effect: MediaSignal | MediaMembers) -> None:
        """Act on one effect at once (non-blocking; called on the signaling loop by ``Hub.perform``)."""
        if isinstance(effect, MediaMembers):
            self._members(effect.room_id, frozenset(effect.pids))
        elif isinstance(effect, MediaSignal):
            self._signal(effect.room_id, effect.pid, effect.message)

    def _members(self, room_id: str, pids: frozenset[str]) -> None:
        if pids:
            self.members[room_id] = pids
        else:
            self.members.pop(room_id, None)
        index = self.pinned.get(room_id)
        if index is None:
            return  # no media yet; the first offer pins the room and replays the set
        effective = pids
        adoption = self.adopting.get(room_id)
        if adoption is not None:
            if pids:  # members of the previous process who have not resumed yet keep their media meanwhile
                adoption.seen |= pids
                effective = adoption.effective(pids)
            if not pids or adoption.previous <= adoption.seen:
                if adoption.timer is not None:
                    adoption.timer.cancel()
                del self.adopting[room_id]
        w = self.workers[index]
        if w is not None and w.alive:
            w.outbox.put(("members", room_id, sorted(effective)))
            if not effective:
                w.rooms.discard(room_id)
                self._drained(w)
        if not effective:
            self.pinned.pop(room_id, None)

    def _signal(self, room_id: str, pid: str, msg: m.ClientMessage) -> None:
        if pid not in self.members.get(room_id, frozenset()):
            self._deliver(room_id, pid, m.Error(code="not-allowed", message="only admitted members can send media",
                                                ref=m.tag_of(msg)), force=True)
            return
        if isinstance(msg, m.Offer):
            w = self._worker_for(room_id)
            if w is None:
                if self._stopping or self.size == 0:
                    self._deliver(room_id, pid, m.Error(code="server-error", message="no media worker is available",
                                                        ref="offer"))
                    return
                # a worker died and its replacement is starting: the offer waits for it (the newest per member)
                self._held = [h for h in self._held if h[:2] != (room_id, pid)][-(MAX_HELD - 1):]
                self._held.append((room_id, pid, msg.sdp))
                return
            w.outbox.put(("offer", room_id, pid, msg.sdp))
        elif isinstance(msg, m.Candidate):
            index = self.pinned.get(room_id)
            w = self.workers[index] if index is not None else None
            if w is not None and w.alive:
                w.outbox.put(("candidate", room_id, pid, msg.candidate, msg.sdp_mid, msg.sdp_mline_index))
        else:
            self._deliver(room_id, pid, m.Error(code="not-allowed", message="the SFU only takes offers and candidates",
                                                ref=m.tag_of(msg)))

    def _worker_for(self, room_id: str) -> _Worker | None:
        index = self.pinned.get(room_id)
        if index is not None:
            w = self.workers[index]
            if w is not None and w.alive:
                return w
        live = [w for w in self.workers[:self.size] if w is not None and w.alive]
        if not live:
            return None
        w = min(live, key=lambda x: (len(x.rooms), x.index))
        self.pinned[room_id] = w.index
        w.rooms.add(room_id)
        w.outbox.put(("members", room_id, sorted(self.members.get(room_id, ()))))
        return w

    def resumed(self, room_id: str, pid: str) -> None:
        """A member of ``room_id`` resumed its session: when no worker here carries the room (taken over from
        another instance, or its worker is gone), its SFU connection leads nowhere; ``media-ended`` makes it
        build one here. A room a worker here carries (adopted, or live) keeps its connections."""
        if room_id not in self.pinned:
            self._deliver(room_id, pid, m.MediaEnded(from_=m.SFU_PID), force=True)

    # ------------------------------------------------------------------ replies from workers

    def _on_readable(self, w: _Worker) -> None:
        try:
            while w.alive and w.conn.poll():
                self._reply(w, w.conn.recv())
        except (EOFError, OSError):  # the worker is gone
            self._on_exit(w)

    def _reply(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        op = msg[0]
        if op == "answer":
            _, room_id, pid, sdp = msg
            self._deliver(room_id, pid, m.PeerAnswer(from_=m.SFU_PID, sdp=sdp))
        elif op == "tracks":
            _, room_id, pid, mids = msg
            self._deliver(room_id, pid, m.Tracks(from_=m.SFU_PID, mids={
                mid: m.TrackRef(pid=ref["pid"], kind=ref["kind"], paused=bool(ref.get("paused")),
                                share=bool(ref.get("share")))
                for mid, ref in mids.items()}))
        elif op == "error":
            _, room_id, pid, code, message, ref = msg
            self._deliver(room_id, pid, m.Error(code=code, message=message, ref=ref), force=True)
        elif op == "stats":
            future = self._stats.pop(msg[1], None)
            if future is not None and not future.done():
                future.set_result(msg[2])
        elif op == "ready":
            w.os_pid = msg[1]
            if w.draining:
                if len(msg) < 4 or msg[3] != WORKER_PROTOCOL:  # another release's protocol: do not drive it
                    log.warning("SFU worker of another release (protocol %s): stopping it", msg[3:4])
                    w.retiring = True
                    w.outbox.put(("stop",))
                else:
                    self._adopt(w, msg[2])
            ready = self._ready.get(w.index)
            if ready is not None and not ready.done():
                ready.set_result(msg[1])

    def _deliver(self, room_id: str, pid: str, message: m.ServerMessage, force: bool = False) -> None:
        """Hand a message to the callback; media replies reach only current members (errors always do)."""
        if not force and pid not in self.members.get(room_id, frozenset()):
            return
        try:
            self.send(room_id, pid, message)
        except Exception:
            log.exception("SFU send callback failed")

    # ------------------------------------------------------------------ introspection (tests, bench, metrics)

    def worker_of(self, room_id: str) -> int | None:
        """The OS pid of the worker process that runs ``room_id``'s media, if it is pinned."""
        index = self.pinned.get(room_id)
        w = self.workers[index] if index is not None else None
        return w.os_pid if w is not None and w.alive else None

    def set_ice_servers(self, ice_servers: list[dict[str, Any]]) -> None:
        """New ICE servers (fresh TURN credentials) for every worker's next connections, and for respawns."""
        self.config = dataclasses.replace(self.config, ice_servers=list(ice_servers))
        for w in self.workers:
            if w is not None and w.alive:
                w.outbox.put(("ice", list(ice_servers)))

    async def stats(self, within: float = 2.0) -> dict[int, dict[str, Any]]:
        """Counters of every live worker: ``{worker_index: {"decoded_frames", "forwarded_packets", "rooms", …}}``."""
        assert self._loop is not None
        futures: dict[int, asyncio.Future[dict[str, Any]]] = {}
        for w in self.workers:
            if w is not None and w.alive:
                self._next_req += 1
                future = self._loop.create_future()
                self._stats[self._next_req] = future
                futures[w.index] = future
                w.outbox.put(("stats", self._next_req))
        result = {}
        for index, future in futures.items():
            with contextlib.suppress(TimeoutError):
                result[index] = await asyncio.wait_for(future, within)
        return result


def _start_worker(path: Path, config: WorkerConfig, host: Path | None = None) -> subprocess.Popen[bytes] | None:
    """A worker listening at ``path``: our child in its own session, or (``host``) the media host's (None: not our
    child; like an adopted one, it is watched through its socket)."""
    data = pickle.dumps(config)
    if host is not None:
        try:
            start_hosted(host, path, data)
        except (OSError, ValueError, EOFError) as err:
            raise RuntimeError("the media host did not start an SFU worker") from err
        return None
    return spawn_worker(path, data)


def _connect(path: Path) -> Connection | None:
    """A connection to the worker listening at ``path``, or None (no socket, or nobody listens there)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return Connection(sock.detach())


def _join(w: _Worker, timeout: float) -> None:
    """Wait for a stopped worker to exit; terminate it after ``timeout`` (blocking: run in an executor)."""
    if w.process is not None:
        try:
            w.process.wait(timeout)
        except subprocess.TimeoutExpired:
            w.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.process.wait(2)
        return
    if w.os_pid is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # adopted: not our child, poll its pid
        try:
            os.kill(w.os_pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.kill(w.os_pid, signal.SIGTERM)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("SFU worker restart failed: %s", type(task.exception()).__name__)


def _write_loop(conn: Any, outbox: queue.SimpleQueue[Any]) -> None:
    """Writer thread: a full pipe (slow worker) blocks this thread, never the signaling loop."""
    while True:
        item = outbox.get()
        if item is None:
            return
        try:
            conn.send(item)
        except (BrokenPipeError, OSError, EOFError):
            return
