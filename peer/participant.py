"""A reusable aiortc participant (therapist or client) for tests, the probe and benchmarks.

It joins with a link, follows the room (status, roster, queue, therapist presence, time), and keeps one
``RTCPeerConnection`` per admitted remote peer (mesh). The side with the smaller pid (string compare) makes
the offer; aiortc cannot roll back, so this participant never offers to a peer with a smaller pid and only
answers it (browsers use perfect negotiation and cope with this). aiortc puts every candidate in its SDP, so
it does not trickle, but it accepts trickled ``candidate`` messages from browsers.

Each peer connection sends synthetic audio and video (``peer.media``) and counts the frames it receives per
remote pid. ICE servers come only from the server's ``ice-servers`` message (never aiortc's default STUN).

    p = await Participant.join(server_url, link, name="Alex")
    await p.wait_until(lambda: p.status == "admitted")
    p.frames()            # {remote_pid: {"video": n, "audio": n}}
    await p.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from signaling import messages as m

from .media import SyntheticAudioTrack, SyntheticVideoTrack, TrackSink
from .signaling_client import JoinRefused, SignalingClient, base_of, token_of

__all__ = ["JoinRefused", "Participant", "PeerLink", "ice_configuration"]

log = logging.getLogger("alcove.peer")


def ice_configuration(servers: list[dict[str, Any]]) -> RTCConfiguration:
    """An explicit ``RTCConfiguration`` from an ``ice-servers`` message (``[]``: host candidates only)."""
    ice = []
    for s in servers:
        urls = s.get("urls")
        if not urls:
            continue
        ice.append(RTCIceServer(urls=urls, username=s.get("username"), credential=s.get("credential")))
    return RTCConfiguration(iceServers=ice)


@dataclass
class PeerLink:
    """One peer connection to one remote participant."""

    pid: str
    pc: RTCPeerConnection
    offerer: bool
    created_at: float = field(default_factory=time.monotonic)
    sinks: dict[str, TrackSink] = field(default_factory=dict)
    sink_started: dict[str, float] = field(default_factory=dict)
    local_tracks: list[Any] = field(default_factory=list)
    answered: bool = False
    closed: bool = False

    def frames(self) -> dict[str, int]:
        return {kind: (self.sinks[kind].frames if kind in self.sinks else 0) for kind in ("video", "audio")}

    def first_frame_at(self, kind: str = "video") -> float | None:
        """``time.monotonic()`` of the first frame of ``kind``, if any arrived."""
        sink = self.sinks.get(kind)
        if sink is None or sink.first_frame_time is None:
            return None
        return self.sink_started[kind] + sink.first_frame_time


class Participant:
    """A therapist or a client, with real media. Create it with :meth:`join`."""

    RESUME_HOLD = 10.0
    """Seconds after a reconnect during which links to peers missing from the roster are kept."""

    def __init__(self, server: str, link: str, *, name: str | None = None, intro: str | None = None,
                 insecure: bool = False, media: bool = True, width: int = 320, height: int = 240,
                 fps: int = 30) -> None:
        self.base_url = base_of(server)
        self.token = token_of(link)
        self.name = name
        self.intro = intro
        self.insecure = insecure
        self.media = media
        self.width, self.height, self.fps = width, height, fps
        self.sc: SignalingClient | None = None
        self.pid: str = ""
        self.role: str = ""
        self.status: str = "new"
        """``waiting``, ``admitted``, then ``ended``/``declined``/``removed``/``left``/``closed``."""
        self.room: m.RoomInfo | None = None
        self.ends_at: str | None = None
        self.therapist: str = "absent"
        self.position: int | None = None
        self.roster: dict[str, m.RosterEntry] = {}
        self.queue: list[m.QueueEntry] = []
        self.ice_servers: list[dict[str, Any]] = []
        self.ice_known = False
        self.links: dict[str, PeerLink] = {}
        self.closed_links: list[PeerLink] = []
        self.log: list[m.ServerMessage] = []
        """Every server message received, in order, across reconnections."""
        self.errors: list[m.Error] = []
        self.failures: list[BaseException] = []
        """Exceptions of the participant's own tasks (negotiation, candidates), for tests to assert on."""
        self.admitted_at: float | None = None
        self.ended_reason: str | None = None
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._closing = False
        self._hold_until = 0.0
        self._hold_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ joining

    @classmethod
    async def join(cls, server: str, link: str, *, name: str | None = None, intro: str | None = None,
                   resume: str | None = None, insecure: bool = False, media: bool = True,
                   width: int = 320, height: int = 240, fps: int = 30) -> Participant:
        """Join the room of ``link``; raises :class:`JoinRefused` if refused."""
        self = cls(server, link, name=name, intro=intro, insecure=insecure, media=media, width=width,
                   height=height, fps=fps)
        await self._connect(resume)
        return self

    async def _connect(self, resume: str | None) -> None:
        sc = SignalingClient.create(self.base_url, self.token, insecure=self.insecure)
        sc.listeners.append(self._on_message)
        sc.keep_inbox = False
        self.sc = sc
        await sc.connect(self.name, resume, self.intro)
        self._pump = asyncio.create_task(self._watch(sc), name="alcove-participant-watch")

    async def _watch(self, sc: SignalingClient) -> None:
        with contextlib.suppress(TimeoutError):
            await sc.wait_closed(timeout=1e9)
        self._changed.set()

    async def drop_signaling(self) -> None:
        """Close the websocket without ``leave`` (as a network drop would); peer connections stay up."""
        if self.sc is not None:
            await self.sc.close()
        await self._stop_pump()

    async def reconnect(self) -> m.Welcome:
        """Reconnect the websocket with the latest resume credential (peer connections are kept)."""
        old = self.sc
        resume = old.resume if old is not None else None
        if old is not None:
            await old.close()
            await self._stop_pump()
        # After a reconnect (e.g. a server restart) the roster may lack peers that have not resumed yet:
        # keep their peer connections for a while instead of tearing down media that still flows.
        self._hold_until = time.monotonic() + self.RESUME_HOLD
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self._hold_timer = asyncio.get_running_loop().call_later(self.RESUME_HOLD + 0.01, self._sync_links)
        await self._connect(resume)
        assert self.sc is not None and self.sc.welcome is not None
        return self.sc.welcome

    async def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None

    @property
    def resume_credential(self) -> str | None:
        return self.sc.resume if self.sc is not None else None

    @property
    def connected(self) -> bool:
        return self.sc is not None and not self.sc.closed

    # ------------------------------------------------------------------ messages

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self._closing:
            self.failures.append(task.exception())  # type: ignore[arg-type]
            log.warning("participant task %s failed: %r", task.get_name(), task.exception())

    def _on_message(self, msg: m.ServerMessage) -> None:
        self.log.append(msg)
        self._changed.set()
        if isinstance(msg, m.Welcome):
            self.pid, self.role, self.room = msg.pid, msg.role, msg.room
            self.ends_at = msg.room.ends_at
            self.therapist, self.position = msg.therapist, msg.position
            self._set_status(msg.status)
        elif isinstance(msg, m.Waiting):
            self.position, self.therapist = msg.position, msg.therapist
            if self.status == "admitted":
                self._set_status("waiting")
        elif isinstance(msg, m.Admitted):
            self._set_status("admitted")
        elif isinstance(msg, m.Roster):
            self.roster = {p.pid: p for p in msg.participants}
            self._sync_links()
        elif isinstance(msg, m.Queue):
            self.queue = list(msg.waiting)
        elif isinstance(msg, m.IceServers):
            self.ice_servers = list(msg.ice_servers)
            self.ice_known = True
            self._sync_links()
        elif isinstance(msg, m.Therapist):
            self.therapist = msg.status
        elif isinstance(msg, m.Time):
            self.ends_at = msg.ends_at
        elif isinstance(msg, m.SessionEnded):
            self.ended_reason = msg.reason
            self._set_status("ended")
        elif isinstance(msg, m.Declined):
            self._set_status("declined")
        elif isinstance(msg, m.Removed):
            self._set_status("removed")
        elif isinstance(msg, m.PeerOffer):
            self._spawn(self._on_offer(msg.from_, msg.sdp), "alcove-answer")
        elif isinstance(msg, m.PeerAnswer):
            self._spawn(self._on_answer(msg.from_, msg.sdp), "alcove-set-answer")
        elif isinstance(msg, m.PeerCandidate):
            self._spawn(self._on_candidate(msg), "alcove-candidate")
        elif isinstance(msg, m.Error):
            self.errors.append(msg)

    def _set_status(self, status: str) -> None:
        previous, self.status = self.status, status
        if status == "admitted" and previous != "admitted":
            self.admitted_at = time.monotonic()
            self._sync_links()
        if (previous == "admitted" and status != "admitted") or status in ("ended", "declined", "removed"):
            self.roster = {}
            self._close_all_links()

    # ------------------------------------------------------------------ mesh

    def _sync_links(self) -> None:
        """Open links to new admitted peers (when we offer), close links to peers that left the roster."""
        if self.status != "admitted" or self._closing:
            return
        holding = time.monotonic() < self._hold_until
        queued = {q.pid for q in self.queue}
        for pid, link in list(self.links.items()):
            if link.pc.connectionState in ("closed", "failed"):
                self._close_link(pid)  # the remote side closed it: a new one may be negotiated
            elif pid not in self.roster and (not holding or pid in queued):
                self._close_link(pid)
        if not self.media or not self.ice_known:
            return
        for pid, entry in self.roster.items():
            if pid == self.pid or pid in self.links or not entry.connected:
                continue
            if self.pid < pid:
                self.links[pid] = self._new_link(pid, offerer=True)
                self._spawn(self._offer(pid), "alcove-offer")

    def _new_link(self, pid: str, *, offerer: bool) -> PeerLink:
        pc = RTCPeerConnection(ice_configuration(self.ice_servers))
        link = PeerLink(pid, pc, offerer)
        video = SyntheticVideoTrack(self.width, self.height, self.fps)
        audio = SyntheticAudioTrack()
        link.local_tracks = [audio, video]
        pc.addTrack(audio)
        pc.addTrack(video)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if link.closed or track.kind in link.sinks:
                return
            link.sink_started[track.kind] = time.monotonic()
            link.sinks[track.kind] = TrackSink(track).start()
            self._changed.set()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self._changed.set()
            if pc.connectionState in ("closed", "failed") and self.links.get(pid) is link:
                asyncio.get_running_loop().call_soon(self._sync_links)

        return link

    async def _offer(self, pid: str) -> None:
        link = self.links.get(pid)
        if link is None:
            return
        offer = await link.pc.createOffer()
        await link.pc.setLocalDescription(offer)
        if link.closed or self.sc is None:
            return
        await self.sc.send(m.Offer(to=pid, sdp=link.pc.localDescription.sdp))

    async def _on_offer(self, pid: str, sdp: str) -> None:
        if self.status != "admitted":
            return
        link = self.links.get(pid)
        if link is not None and link.pc.connectionState in ("closed", "failed"):
            self._close_link(pid)
            link = None
        if link is None:
            link = self.links[pid] = self._new_link(pid, offerer=False)
        elif link.pc.signalingState != "stable":
            log.warning("offer from %s while %s: ignored (aiortc cannot roll back)", pid, link.pc.signalingState)
            return
        await link.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await link.pc.createAnswer()
        await link.pc.setLocalDescription(answer)
        if link.closed or self.sc is None:
            return
        link.answered = True
        await self.sc.send(m.Answer(to=pid, sdp=link.pc.localDescription.sdp))

    async def _on_answer(self, pid: str, sdp: str) -> None:
        link = self.links.get(pid)
        if link is None or link.pc.signalingState != "have-local-offer":
            return
        await link.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        link.answered = True

    async def _on_candidate(self, msg: m.PeerCandidate) -> None:
        link = self.links.get(msg.from_)
        if link is None or msg.candidate is None or link.pc.remoteDescription is None:
            return  # end of candidates, or a candidate before the offer (aiortc needs the description first)
        text = msg.candidate
        if text.startswith("candidate:"):
            text = text[len("candidate:"):]
        if not text.strip():
            return
        candidate = candidate_from_sdp(text)
        candidate.sdpMid = msg.sdp_mid
        candidate.sdpMLineIndex = msg.sdp_mline_index
        await link.pc.addIceCandidate(candidate)

    def _close_link(self, pid: str) -> None:
        link = self.links.pop(pid, None)
        if link is None:
            return
        link.closed = True
        self.closed_links.append(link)
        self._spawn(self._shutdown_link(link), "alcove-close-pc")

    def _close_all_links(self) -> None:
        for pid in list(self.links):
            self._close_link(pid)

    @staticmethod
    async def _shutdown_link(link: PeerLink) -> None:
        await link.pc.close()
        for track in link.local_tracks:
            track.stop()
        for sink in link.sinks.values():
            await sink.stop()

    # ------------------------------------------------------------------ figures

    def frames(self) -> dict[str, dict[str, int]]:
        """Frames received per remote pid, over the open peer connections."""
        return {pid: link.frames() for pid, link in self.links.items()}

    def frames_from(self, pid: str) -> dict[str, int]:
        link = self.links.get(pid)
        if link is None:
            for old in reversed(self.closed_links):
                if old.pid == pid:
                    return old.frames()
            return {"video": 0, "audio": 0}
        return link.frames()

    def first_frame_at(self, pid: str, kind: str = "video") -> float | None:
        link = self.links.get(pid)
        return link.first_frame_at(kind) if link is not None else None

    def peers(self) -> list[str]:
        """Admitted remote pids (from the roster)."""
        return [pid for pid in self.roster if pid != self.pid]

    def pid_of(self, name: str) -> str:
        """The pid of a waiting client or roster member by display name."""
        for q in self.queue:
            if q.name == name:
                return q.pid
        for r in self.roster.values():
            if r.name == name:
                return r.pid
        raise KeyError(name)

    # ------------------------------------------------------------------ waiting

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        """Wait until ``condition()`` holds (checked on every message and every 50 ms); TimeoutError if not."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name or self.role}: not {what or 'reached'} within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))

    def mark(self) -> int:
        """A position in :attr:`log` for :meth:`expect`."""
        return len(self.log)

    async def expect(self, type_: str, *, after: int = 0, timeout: float = 5.0) -> Any:
        """The first message of ``type_`` in :attr:`log` at or after position ``after``."""
        def find() -> Any:
            for msg in self.log[after:]:
                if type(msg).__struct_config__.tag == type_:
                    return msg
            return None
        await self.wait_until(lambda: find() is not None, timeout, f"sent {type_}")
        return find()

    async def wait_frames(self, pid: str, video: int = 10, audio: int = 0, timeout: float = 10.0) -> None:
        def enough() -> bool:
            f = self.frames_from(pid)
            return f["video"] >= video and f["audio"] >= audio
        await self.wait_until(enough, timeout, f"{video} video/{audio} audio frames from {pid}")

    # ------------------------------------------------------------------ actions

    async def send(self, msg: m.ClientMessage) -> None:
        if self.sc is None:
            raise RuntimeError("not connected")
        await self.sc.send(msg)

    def _target(self, who: str) -> str:
        if who in self.roster or any(q.pid == who for q in self.queue):
            return who
        try:
            return self.pid_of(who)
        except KeyError:
            return who  # an unknown pid: the server answers unknown-peer

    async def admit(self, who: str, grant: str | None = None) -> None:
        await self.send(m.Admit(pid=self._target(who), grant=grant))

    async def admit_all(self) -> None:
        await self.send(m.AdmitAll())

    async def decline(self, who: str, message: str | None = None) -> None:
        await self.send(m.Decline(pid=self._target(who), message=message))

    async def send_to_waiting(self, who: str) -> None:
        await self.send(m.SendToWaiting(pid=self._target(who)))

    async def remove(self, who: str) -> None:
        await self.send(m.Remove(pid=self._target(who)))

    async def extend(self, minutes: int) -> None:
        await self.send(m.Extend(minutes=minutes))  # type: ignore[arg-type]

    async def end(self) -> None:
        await self.send(m.End())

    async def leave(self) -> None:
        if self.connected:
            await self.send(m.Leave())
            with contextlib.suppress(TimeoutError):
                assert self.sc is not None
                await self.sc.wait_closed(2.0)
        self._set_status("left")

    # ------------------------------------------------------------------ shutdown

    async def close(self) -> None:
        """Close the socket and every peer connection; waits for every task (no pending-task warnings)."""
        self._closing = True
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        if self.sc is not None:
            await self.sc.close()
        await self._stop_pump()
        self._close_all_links()
        while self._tasks:
            tasks = list(self._tasks)
            for t in tasks:
                if t.get_name() != "alcove-close-pc":
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.status not in ("ended", "declined", "removed", "left"):
            self.status = "closed"

    async def __aenter__(self) -> Participant:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
