"""Mesh negotiation: one ``RTCPeerConnection`` per admitted remote peer.

The side with the smaller pid (string compare) makes the offer; aiortc cannot roll back, so this participant
never offers to a peer with a smaller pid and only answers it (browsers use perfect negotiation and cope with
this). aiortc puts every candidate in its SDP, so it does not trickle, but it accepts trickled ``candidate``
messages from browsers. Every offer/answer is signed and verified through :class:`peer.e2ee_glue.E2eeGlue`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from rtc import aiortc_hooks as hooks
from rtc.ice import aiortc_configuration
from signaling import messages as m

from .e2ee_glue import E2eeGlue
from .media import SyntheticAudioTrack, SyntheticVideoTrack, TrackSink
from .state import RoomState, Tasks

log = logging.getLogger("alcove.peer")


@dataclass(frozen=True)
class MediaOptions:
    """What a participant sends and how it connects."""

    media: bool = True
    width: int = 320
    height: int = 240
    fps: int = 30
    relay_only: bool = False


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
    refused: str | None = None
    """Why the E2EE checks refused this link (it never gets a remote description)."""
    connected_at: float | None = None
    """``time.monotonic()`` when the connection first reached ``connected``."""

    def frames(self) -> dict[str, int]:
        return {kind: (self.sinks[kind].frames if kind in self.sinks else 0) for kind in ("video", "audio")}

    def dropped(self) -> int:
        """Incoming frames dropped by the receive transforms (failed SFrame authentication)."""
        return sum(hooks.receiver_stats(t.receiver).frames_dropped for t in self.pc.getTransceivers())

    def first_frame_at(self, kind: str = "video") -> float | None:
        """``time.monotonic()`` of the first frame of ``kind``, if any arrived."""
        sink = self.sinks.get(kind)
        if sink is None or sink.first_frame_time is None:
            return None
        return self.sink_started[kind] + sink.first_frame_time


class Mesh:
    """The peer connections of a mesh room, kept in step with the roster."""

    RESUME_HOLD = 10.0
    """Seconds after a reconnect during which links to peers missing from the roster are kept."""

    def __init__(self, state: RoomState, tasks: Tasks, e2ee: E2eeGlue, options: MediaOptions,
                 resync: Callable[[], None]) -> None:
        self.state, self.tasks, self.e2ee, self.options = state, tasks, e2ee, options
        self.resync = resync
        """What to call when a connection closed or failed (the participant re-checks every link)."""
        self.links: dict[str, PeerLink] = {}
        self.closed_links: list[PeerLink] = []
        self._hold_until = 0.0
        self._listed_since_hold: set[str] = set()
        """Peers the server listed since our reconnect: one it then drops has left (sent back, removed, gone)."""

    def hold(self) -> None:
        """After a reconnect (e.g. a server restart) the roster may lack peers that have not resumed yet:
        keep their peer connections for a while instead of tearing down media that still flows."""
        self._hold_until = time.monotonic() + self.RESUME_HOLD
        self._listed_since_hold = set()

    def sync(self) -> None:
        """Open links to new admitted peers (when we offer), close links to peers that left the roster."""
        state = self.state
        holding = time.monotonic() < self._hold_until
        queued = {q.pid for q in state.queue}
        self._listed_since_hold.update(state.roster)
        for pid, link in list(self.links.items()):
            if link.pc.connectionState in ("closed", "failed"):
                self.close_link(pid)  # the remote side closed it: a new one may be negotiated
            elif pid not in state.roster and (not holding or pid in queued or pid in self._listed_since_hold):
                self.close_link(pid)
        if not self.options.media or not state.ice_known:
            return
        for pid, entry in state.roster.items():
            if pid == state.pid or pid in self.links or not entry.connected:
                continue
            if state.pid < pid:
                self.links[pid] = self._new_link(pid, offerer=True)
                self.tasks.spawn(self._offer(pid), "alcove-offer")

    def _new_link(self, pid: str, *, offerer: bool) -> PeerLink:
        o = self.options
        pc = RTCPeerConnection(aiortc_configuration(self.state.ice_servers, relay_only=o.relay_only))
        link = PeerLink(pid, pc, offerer)
        video = SyntheticVideoTrack(o.width, o.height, o.fps)
        audio = SyntheticAudioTrack()
        link.local_tracks = [audio, video]
        pc.addTrack(audio)
        pc.addTrack(video)
        self.e2ee.protect(pc, lambda t: pid)

        @pc.on("track")
        def on_track(track: Any) -> None:
            # The first track of a kind is the peer's camera/microphone; a later one its screen share (web
            # lib/share.js): decrypted (SFrame stream 2/3, same keys) and consumed so nothing queues up, counted,
            # never shown.
            key = track.kind if track.kind not in link.sinks else f"share-{track.kind}"
            if link.closed or key in link.sinks:
                return
            link.sink_started[key] = time.monotonic()
            link.sinks[key] = TrackSink(track).start()
            self.state.changed.set()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self.state.changed.set()
            if pc.connectionState == "connected" and link.connected_at is None:
                link.connected_at = time.monotonic()
            if pc.connectionState in ("closed", "failed") and self.links.get(pid) is link:
                asyncio.get_running_loop().call_soon(self.resync)

        return link

    async def _offer(self, pid: str) -> None:
        link = self.links.get(pid)
        if link is None:
            return
        offer = await link.pc.createOffer()
        await link.pc.setLocalDescription(offer)
        if link.closed or self.tasks.sc is None:
            return
        sdp = link.pc.localDescription.sdp
        await self.tasks.send_in_order(m.Offer(to=pid, sdp=sdp, sig=self.e2ee.sign(pid, "offer", sdp)))

    async def on_offer(self, msg: m.PeerOffer) -> None:
        pid, sdp = msg.from_, msg.sdp
        if self.state.status != "admitted":
            return
        if not await self.e2ee.verified(pid, "offer", sdp, msg.sig):
            link = self.links.pop(pid, None)
            if link is not None:
                link.refused = "offer"
                self.links[pid] = link
                self.close_link(pid)
            return
        link = self.links.get(pid)
        if link is not None and link.pc.connectionState in ("closed", "failed"):
            self.close_link(pid)
            link = None
        if link is None:
            link = self.links[pid] = self._new_link(pid, offerer=False)
        elif link.pc.signalingState != "stable":
            log.warning("offer from %s while %s: ignored (aiortc cannot roll back)", pid, link.pc.signalingState)
            return
        await link.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        self.e2ee.protect(link.pc, lambda t: pid)
        answer = await link.pc.createAnswer()
        await link.pc.setLocalDescription(answer)
        if link.closed or self.tasks.sc is None:
            return
        link.answered = True
        out = link.pc.localDescription.sdp
        await self.tasks.send_in_order(m.Answer(to=pid, sdp=out, sig=self.e2ee.sign(pid, "answer", out)))

    async def on_answer(self, msg: m.PeerAnswer) -> None:
        pid, sdp = msg.from_, msg.sdp
        link = self.links.get(pid)
        if link is None or link.pc.signalingState != "have-local-offer":
            return
        if not await self.e2ee.verified(pid, "answer", sdp, msg.sig):
            link.refused = "answer"
            self.close_link(pid)
            return
        await link.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        link.answered = True

    async def on_candidate(self, msg: m.PeerCandidate) -> None:
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

    def close_link(self, pid: str) -> None:
        link = self.links.pop(pid, None)
        if link is None:
            return
        link.closed = True
        self.closed_links.append(link)
        self.tasks.spawn(self._shutdown_link(link), "alcove-close-pc")

    def close_all(self) -> None:
        for pid in list(self.links):
            self.close_link(pid)

    @staticmethod
    async def _shutdown_link(link: PeerLink) -> None:
        await link.pc.close()
        for track in link.local_tracks:
            track.stop()
        for sink in link.sinks.values():
            await sink.stop()

    # ------------------------------------------------------------------ figures

    def frames(self) -> dict[str, dict[str, int]]:
        return {pid: link.frames() for pid, link in self.links.items()}

    def frames_from(self, pid: str) -> dict[str, int]:
        link = self.links.get(pid)
        if link is None:
            for old in reversed(self.closed_links):
                if old.pid == pid:
                    return old.frames()
            return {"video": 0, "audio": 0}
        return link.frames()

    def share_frames_from(self, pid: str) -> int:
        """Video frames of ``pid``'s screen share received (and decrypted) so far on the current link."""
        link = self.links.get(pid)
        sink = link.sinks.get("share-video") if link is not None else None
        return sink.frames if sink is not None else 0

    def first_frame_at(self, pid: str, kind: str) -> float | None:
        link = self.links.get(pid)
        return link.first_frame_at(kind) if link is not None else None

    def ever_connected(self) -> bool:
        return any(link.connected_at is not None for link in [*self.links.values(), *self.closed_links])
