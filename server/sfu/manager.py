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

A worker that dies (crash, OOM kill, SIGKILL) is noticed through its process sentinel on the signaling
loop: its rooms are unpinned, every member of those rooms is told, a replacement worker is started, and the
next offer of such a room starts its media again on a live worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from signaling import messages as m
from signaling.effects import MediaMembers, MediaSignal

from .worker import WorkerConfig, worker_main

log = logging.getLogger("alcove.sfu")

STARTUP_TIMEOUT = 30.0
RESPAWN_DELAY = 1.0
"""A worker that dies within 5 s of its start is restarted after this delay (doubling up to 30 s)."""

SendCallback = Callable[[str, str, "m.ServerMessage"], None]
"""``send(room_id, pid, message)``: deliver ``message`` to participant ``pid`` of ``room_id``."""


@dataclass
class _Worker:
    index: int
    process: Any  # multiprocessing.process.BaseProcess
    conn: Any  # multiprocessing.connection.Connection
    outbox: queue.SimpleQueue[Any]
    writer: threading.Thread
    alive: bool = True
    os_pid: int | None = None
    started_at: float = 0.0
    respawn_delay: float = 0.0
    rooms: set[str] = field(default_factory=set)


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
    ) -> None:
        self.send = send
        self.size = workers if workers > 0 else (os.cpu_count() or 1)
        self.config = WorkerConfig(ice_servers=list(ice_servers or []), loopback=loopback, announced=announced,
                                   ports=ports,
                                   pli_interval=pli_interval, transcode=transcode, pack=pack)
        self.workers: list[_Worker | None] = [None] * self.size
        self.members: dict[str, frozenset[str]] = {}
        """room id → admitted pids, a cache of the latest ``MediaMembers`` effect (the core's ``Room`` decides;
        this copy gates media signals and is replayed to a respawned worker)."""
        self.pinned: dict[str, int] = {}
        self.worker_deaths = 0
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads and a loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: dict[int, asyncio.Future[int]] = {}
        self._next_req = 0
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the worker processes and wait until each one runs its loop."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        for i in range(self.size):
            self._spawn(i)
        futures = list(self._ready.values())
        await asyncio.wait(futures, timeout=STARTUP_TIMEOUT)
        if not all(f.done() and not f.cancelled() for f in futures):
            await self.stop()
            raise RuntimeError("an SFU worker process did not start")

    async def stop(self) -> None:
        """End every room's media and stop the workers (terminate those that do not exit within 3 s)."""
        self._stopping = True
        for w in self.workers:
            if w is not None and w.alive:
                w.outbox.put(("stop",))
        loop = asyncio.get_running_loop()
        for w in self.workers:
            if w is None:
                continue
            await loop.run_in_executor(None, w.process.join, 3)
            if w.process.is_alive():
                w.process.terminate()
                await loop.run_in_executor(None, w.process.join, 2)
            self._retire(w)
        self.workers = [None] * self.size
        self.pinned.clear()

    def _spawn(self, index: int, delay: float = 0.0) -> None:
        assert self._loop is not None
        if self._stopping:
            return
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=worker_main, args=(child, self.config), name=f"alcove-sfu-{index}",
                                    daemon=True)
        process.start()
        child.close()
        outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        writer = threading.Thread(target=_write_loop, args=(parent, outbox), name=f"alcove-sfu-writer-{index}",
                                  daemon=True)
        w = _Worker(index, process, parent, outbox, writer, started_at=time.monotonic(), respawn_delay=delay)
        writer.start()
        self.workers[index] = w
        self._ready[index] = self._loop.create_future()
        self._loop.add_reader(parent.fileno(), self._on_readable, w)
        self._loop.add_reader(process.sentinel, self._on_exit, w)

    def _retire(self, w: _Worker) -> None:
        """Forget a worker's fds and writer (its process has exited or is about to)."""
        assert self._loop is not None
        w.alive = False
        with contextlib.suppress(Exception):
            self._loop.remove_reader(w.conn.fileno())
        with contextlib.suppress(Exception):
            self._loop.remove_reader(w.process.sentinel)
        w.outbox.put(None)
        with contextlib.suppress(Exception):
            w.conn.close()
        ready = self._ready.get(w.index)
        if ready is not None and not ready.done():
            ready.cancel()

    def _on_exit(self, w: _Worker) -> None:
        if not w.alive:
            return
        code = w.process.exitcode
        self._retire(w)
        with contextlib.suppress(Exception):
            w.process.join(0)
        if self._stopping:
            return
        self.worker_deaths += 1
        log.error("SFU worker %d (pid %s) died (exit code %s); ending the media of %d room(s)",
                  w.index, w.os_pid, code, len(w.rooms))
        for room_id in sorted(w.rooms):
            self.pinned.pop(room_id, None)
            for pid in sorted(self.members.get(room_id, ())):
                self._deliver(room_id, pid, m.MediaEnded(from_=m.SFU_PID))
        w.rooms.clear()
        for future in list(self._stats.values()):
            if not future.done():
                future.set_result({})
        if time.monotonic() - w.started_at < 5.0:  # crash loop: back off
            delay = min(max(RESPAWN_DELAY, 2 * w.respawn_delay), 30.0)
            assert self._loop is not None
            self._loop.call_later(delay, self._spawn, w.index, delay)
        else:
            self._spawn(w.index)

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
        w = self.workers[index]
        if w is not None and w.alive:
            w.outbox.put(("members", room_id, sorted(pids)))
            if not pids:
                w.rooms.discard(room_id)
        if not pids:
            self.pinned.pop(room_id, None)

    def _signal(self, room_id: str, pid: str, msg: m.ClientMessage) -> None:
        if pid not in self.members.get(room_id, frozenset()):
            self._deliver(room_id, pid, m.Error(code="not-allowed", message="only admitted members can send media",
                                                ref=m.tag_of(msg)), force=True)
            return
        if isinstance(msg, m.Offer):
            w = self._worker_for(room_id)
            if w is None:
                self._deliver(room_id, pid, m.Error(code="server-error", message="no media worker is available",
                                                    ref="offer"))
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
        live = [w for w in self.workers if w is not None and w.alive]
        if not live:
            return None
        w = min(live, key=lambda x: (len(x.rooms), x.index))
        self.pinned[room_id] = w.index
        w.rooms.add(room_id)
        w.outbox.put(("members", room_id, sorted(self.members.get(room_id, ()))))
        return w

    # ------------------------------------------------------------------ replies from workers

    def _on_readable(self, w: _Worker) -> None:
        try:
            while w.conn.poll():
                self._reply(w, w.conn.recv())
        except (EOFError, OSError):
            with contextlib.suppress(Exception):
                assert self._loop is not None
                self._loop.remove_reader(w.conn.fileno())
            # the sentinel reports the death

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
        return w.process.pid if w is not None and w.alive else None

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
