"""Harness for the SFU tests: a real SfuManager (worker processes) driven directly, aiortc clients in-process.

Run inside a loopback-only network namespace:
    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/sfu'
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

from peer.media import SyntheticAudioTrack, SyntheticVideoTrack, TrackSink
from rtc import aiortc_hooks as hooks
from rtc.codecs import prefer_vp8_opus_all
from server.sfu import SfuManager
from signaling import messages as m
from signaling.effects import MediaMembers, MediaSignal
from tests.conftest import require_loopback_namespace


@pytest.fixture(autouse=True, scope="session")
def loopback_only() -> None:
    require_loopback_namespace()


async def until(condition: Callable[[], bool], within: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(step)
    return condition()


async def slot_stats(sfu: Harness, room: str, pid: str) -> dict[str, Any]:
    """The worker's counters of ``pid``'s receive slots in ``room``, by mid."""
    stats = await sfu.manager.stats()
    peers = next(s["rooms"][room]["peers"] for s in stats.values() if room in s["rooms"])
    return dict(peers[pid]["slots"])


class Client:
    """One participant: publishes (optional) and offers ``slots`` recvonly audio+video pairs to the SFU."""

    def __init__(self, harness: Harness, room: str, pid: str, *, colour: tuple[int, int, int] | None,
                 slots: int) -> None:
        self.harness = harness
        self.room = room
        self.pid = pid
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.colour = colour
        self.video: SyntheticVideoTrack | None = None
        if colour is not None:
            self.video = SyntheticVideoTrack(320, 240, 30, colour)
            self.pc.addTransceiver(self.video, direction="sendonly")
            self.pc.addTransceiver(SyntheticAudioTrack(), direction="sendonly")
        for _ in range(slots):
            self.pc.addTransceiver("video", direction="recvonly")
            self.pc.addTransceiver("audio", direction="recvonly")
        self.answers: asyncio.Queue[str] = asyncio.Queue()
        self.mapping: dict[str, dict[str, Any]] = {}
        self.mappings: list[dict[str, dict[str, Any]]] = []
        self.errors: list[m.Error] = []
        self.ended: list[m.MediaEnded] = []
        self.sinks: dict[str, TrackSink] = {}
        self.rx: dict[str, hooks.ReceiverHookStats] = {}

    def add_slots(self, count: int) -> None:
        for _ in range(count):
            self.pc.addTransceiver("video", direction="recvonly")
            self.pc.addTransceiver("audio", direction="recvonly")

    def deliver(self, message: Any) -> None:
        if isinstance(message, m.Tracks):
            mids: dict[str, dict[str, Any]] = {
                mid: {"pid": ref.pid, "kind": ref.kind, **({"paused": True} if ref.paused else {})}
                for mid, ref in message.mids.items()}
            self.mapping = mids
            self.mappings.append(mids)
        elif isinstance(message, m.MediaEnded):
            self.ended.append(message)
        elif isinstance(message, m.PeerAnswer):
            assert message.from_ == "sfu"
            self.answers.put_nowait(message.sdp)
        elif isinstance(message, m.Error):
            self.errors.append(message)

    def offer_message(self) -> MediaSignal:
        return MediaSignal(self.room, self.pid, m.Offer(to="sfu", sdp=self.pc.localDescription.sdp))  # type: ignore[arg-type]

    async def negotiate(self, within: float = 10.0, *, hold: Callable[[], Awaitable[None]] | None = None) -> None:
        """Offer, apply the SFU's answer (after ``hold()``, if given: a client that is slow to apply it), connect."""
        prefer_vp8_opus_all(self.pc)
        for t in self.pc.getTransceivers():
            if t.direction == "recvonly":
                self.rx[t.mid or ""] = hooks.receiver_stats(t.receiver)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.harness.manager.handle(self.offer_message())
        sdp = await asyncio.wait_for(self.answers.get(), within)
        if hold is not None:
            await hold()
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        for t in self.pc.getTransceivers():
            if t.direction == "recvonly" and t.mid not in self.sinks and t.receiver.track is not None:
                self.rx[t.mid] = hooks.receiver_stats(t.receiver)
                self.sinks[t.mid] = TrackSink(t.receiver.track).start()
        assert await until(lambda: self.pc.connectionState == "connected", within), self.pc.connectionState

    def mid_of(self, publisher: str, kind: str = "video") -> str | None:
        for mid, entry in self.mapping.items():
            if entry["pid"] == publisher and entry["kind"] == kind:
                return mid
        return None

    def sink_of(self, publisher: str, kind: str = "video") -> TrackSink:
        mid = self.mid_of(publisher, kind)
        assert mid is not None, (self.pid, publisher, self.mapping)
        return self.sinks[mid]

    def received_frames(self) -> int:
        """Encoded frames reassembled by all receivers (counted before decoding)."""
        return sum(s.frames_received for s in self.rx.values())

    async def close(self) -> None:
        for sink in self.sinks.values():
            await sink.stop()
        await self.pc.close()


class Harness:
    def __init__(self, manager: SfuManager) -> None:
        self.manager = manager
        self.clients: dict[tuple[str, str], Client] = {}
        self.undelivered: list[tuple[str, str, Any]] = []

    def send(self, room_id: str, pid: str, message: Any) -> None:
        client = self.clients.get((room_id, pid))
        if client is None:
            self.undelivered.append((room_id, pid, message))
        else:
            client.deliver(message)

    def client(self, room: str, pid: str, *, colour: tuple[int, int, int] | None = None, slots: int = 0) -> Client:
        c = Client(self, room, pid, colour=colour, slots=slots)
        self.clients[(room, pid)] = c
        return c

    def members(self, room: str, pids: set[str]) -> None:
        self.manager.handle(MediaMembers(room, frozenset(pids)))  # type: ignore[arg-type]

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()


@pytest.fixture
async def sfu() -> AsyncIterator[Harness]:
    harness: Harness | None = None

    def send(room_id: str, pid: str, message: Any) -> None:
        assert harness is not None
        harness.send(room_id, pid, message)

    manager = SfuManager(send, workers=2, loopback=True, pli_interval=0.5)
    harness = Harness(manager)
    await manager.start()
    try:
        yield harness
    finally:
        await harness.close()
        await manager.stop()
