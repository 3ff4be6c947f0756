"""SFU negotiation: an SFU-room participant's one connection to ``"sfu"`` (docs/sfu.md).

It publishes one video and one audio track and adds a recvonly pair per other member; frames are attributed
to publishers by the latest ``tracks`` mapping. SDP to the SFU is not signed (the SFU holds no keys); SFrame
protects the media end to end (:meth:`peer.e2ee_glue.E2eeGlue.protect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rtc import aiortc_hooks as hooks
from rtc.ice import aiortc_configuration
from signaling import messages as m

from .e2ee_glue import E2eeGlue
from .media import SyntheticAudioTrack, SyntheticVideoTrack
from .mesh import MediaOptions
from .state import RoomState, Tasks


@dataclass
class SfuLink:
    """The one connection of an SFU-room participant to the SFU."""

    pc: RTCPeerConnection
    local_tracks: list[Any] = field(default_factory=list)
    pairs: list[tuple[RTCRtpTransceiver, RTCRtpTransceiver]] = field(default_factory=list)
    mapping: dict[str, tuple[str, str]] = field(default_factory=dict)
    """mid -> (publisher pid, kind), from the latest ``tracks``."""
    pumps: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    answer: asyncio.Future[str] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    negotiations: int = 0
    closed: bool = False


class SfuSession:
    """The participant's side of an SFU room."""

    def __init__(self, state: RoomState, tasks: Tasks, e2ee: E2eeGlue, options: MediaOptions) -> None:
        self.state, self.tasks, self.e2ee, self.options = state, tasks, e2ee, options
        self.sfu: SfuLink | None = None
        self.sfu_links: list[SfuLink] = []
        self.frames: dict[str, dict[str, int]] = {}
        """Frames received per publisher pid (attributed by the ``tracks`` mapping)."""
        self.first_frame: dict[str, float] = {}

    def sync(self) -> None:
        if not self.options.media or not self.state.ice_known:
            return
        sfu = self.sfu
        if sfu is None or sfu.closed or sfu.pc.connectionState in ("closed", "failed"):
            if sfu is not None:
                self.close()
            sfu = self.sfu = self._new_sfu()
            self.sfu_links.append(sfu)
        if len(sfu.pairs) < len(self.state.peers()) or sfu.negotiations == 0:
            self.tasks.spawn(self._negotiate(sfu), "alcove-sfu-offer")

    def _new_sfu(self) -> SfuLink:
        o = self.options
        pc = RTCPeerConnection(aiortc_configuration(self.state.ice_servers, relay_only=o.relay_only, bundle=True))
        sfu = SfuLink(pc)
        video = SyntheticVideoTrack(o.width, o.height, o.fps)
        audio = SyntheticAudioTrack()
        sfu.local_tracks = [video, audio]
        # VP8 in three temporal layers, as browsers send in SFU rooms: a weak subscriber gets a lower frame rate
        hooks.send_temporal_layers(pc.addTransceiver(video, direction="sendonly").sender)
        pc.addTransceiver(audio, direction="sendonly")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self.state.changed.set()

        return sfu

    @staticmethod
    def _publisher(sfu: SfuLink, t: RTCRtpTransceiver) -> str | None:
        entry = sfu.mapping.get(t.mid or "")
        return entry[0] if entry is not None else None

    async def _negotiate(self, sfu: SfuLink) -> None:
        async with sfu.lock:
            while not sfu.closed and self.state.status == "admitted" and self.tasks.sc is not None:
                need = len(self.state.peers())
                if sfu.negotiations > 0 and len(sfu.pairs) >= need:
                    return
                while len(sfu.pairs) < need:
                    video = sfu.pc.addTransceiver("video", direction="recvonly")
                    audio = sfu.pc.addTransceiver("audio", direction="recvonly")
                    sfu.pairs.append((video, audio))
                self.e2ee.protect(sfu.pc, lambda t: self._publisher(sfu, t))
                await sfu.pc.setLocalDescription(await sfu.pc.createOffer())
                sfu.answer = asyncio.get_running_loop().create_future()
                await self.tasks.send_in_order(m.Offer(to=m.SFU_PID, sdp=sfu.pc.localDescription.sdp))
                sdp = await asyncio.wait_for(sfu.answer, 15.0)
                if sfu.closed:
                    return
                await sfu.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
                sfu.negotiations += 1
                for video, audio in sfu.pairs:
                    for t in (video, audio):
                        mid = t.mid or ""
                        if mid and mid not in sfu.pumps and t.receiver.track is not None:
                            sfu.pumps[mid] = asyncio.create_task(self._pump(sfu, mid, t.receiver.track))
                self.state.changed.set()

    def on_answer(self, msg: m.PeerAnswer) -> None:
        sfu = self.sfu
        if sfu is not None and sfu.answer is not None and not sfu.answer.done():
            sfu.answer.set_result(msg.sdp)

    def on_tracks(self, msg: m.Tracks) -> None:
        if self.sfu is not None:
            self.sfu.mapping = {mid: (ref.pid, ref.kind) for mid, ref in msg.mids.items()}

    async def _pump(self, sfu: SfuLink, mid: str, track: Any) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                await track.recv()
                entry = sfu.mapping.get(mid)
                if entry is None:
                    continue
                pid, kind = entry
                counts = self.frames.setdefault(pid, {"video": 0, "audio": 0})
                counts[kind] += 1
                self.first_frame.setdefault(f"{pid}/{kind}", time.monotonic())
                self.state.changed.set()

    def close(self) -> None:
        sfu, self.sfu = self.sfu, None
        if sfu is None or sfu.closed:
            return
        sfu.closed = True
        if sfu.answer is not None and not sfu.answer.done():
            sfu.answer.cancel()
        self.tasks.spawn(self._shutdown(sfu), "alcove-close-pc")

    @staticmethod
    async def _shutdown(sfu: SfuLink) -> None:
        for task in sfu.pumps.values():
            task.cancel()
        await asyncio.gather(*sfu.pumps.values(), return_exceptions=True)
        await sfu.pc.close()
        for track in sfu.local_tracks:
            track.stop()

    def ever_connected(self) -> bool:
        return any(s.pc.connectionState == "connected" for s in self.sfu_links)
