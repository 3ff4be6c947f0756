"""A reusable aiortc participant (therapist or client) for tests, the probe and benchmarks.

It joins with a link, follows the room (status, roster, queue, therapist presence, time), and keeps one
``RTCPeerConnection`` per admitted remote peer (mesh). The side with the smaller pid (string compare) makes
the offer; aiortc cannot roll back, so this participant never offers to a peer with a smaller pid and only
answers it (browsers use perfect negotiation and cope with this). aiortc puts every candidate in its SDP, so
it does not trickle, but it accepts trickled ``candidate`` messages from browsers.

Each peer connection sends synthetic audio and video (``peer.media``) and counts the frames it receives per
remote pid. ICE servers come only from the server's ``ice-servers`` message (never aiortc's default STUN);
``relay_only=True`` forces TURN relay candidates.

**E2EE** (docs/security.md) is on when the link carries ``s``/``tk`` or with ``e2ee=True``: the client sends
its intro in ``hello``, checks the therapist's grant, reveals its nonce and both sides compute the SAS
(:attr:`Participant.sas`, :attr:`Participant.sas_of`); the therapist issues a new epoch on every change of the
admitted set (and when it returns), collects acks and switches. Media is SFrame-protected through
``rtc.aiortc_hooks`` (VP8/Opus only); every offer/answer to a peer is signed and verified before
``setRemoteDescription``. A failed check is recorded in :attr:`Participant.security_failures` and nothing
connects.

**SFU rooms** (``topology: "sfu"``): one connection to ``"sfu"`` (publish + one recvonly pair per other
member), frames attributed to publishers by the ``tracks`` mapping (docs/sfu.md). SDP to the SFU is not signed
(the SFU holds no keys); SFrame protects the media end to end.

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

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from cryptography.hazmat.primitives.asymmetric import ec

from rtc import aiortc_hooks as hooks
from rtc.codecs import prefer_vp8_opus
from rtc.ice import aiortc_configuration
from signaling import messages as m

from .e2ee import (
    SAS,
    SWITCH_TIMEOUT,
    ClientKeys,
    IntroInfo,
    KeyState,
    LinkInfo,
    SecurityCheckFailed,
    TherapistKeys,
    message_kind,
    parse_link_fragment,
)
from .media import SyntheticAudioTrack, SyntheticVideoTrack, TrackSink
from .signaling_client import JoinRefused, SignalingClient, base_of, token_of

__all__ = ["JoinRefused", "Participant", "PeerLink", "SfuLink", "link_info_of"]

log = logging.getLogger("alcove.peer")


def link_info_of(link: str) -> LinkInfo:
    """The E2EE fields of a link's fragment (``#t=…&s=…&tk=…``); a bare token has none."""
    if "#" not in link:
        return LinkInfo(link)
    return parse_link_fragment(link.split("#", 1)[1])


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


class Participant:
    """A therapist or a client, with real media. Create it with :meth:`join`."""

    RESUME_HOLD = 10.0
    """Seconds after a reconnect during which links to peers missing from the roster are kept."""

    def __init__(self, server: str, link: str, *, name: str | None = None, intro: str | None = None,
                 insecure: bool = False, media: bool = True, width: int = 320, height: int = 240,
                 fps: int = 30, e2ee: bool | None = None, therapist_ik: ec.EllipticCurvePrivateKey | None = None,
                 relay_only: bool = False, wrong_key: bool = False) -> None:
        self.base_url = base_of(server)
        self.token = token_of(link)
        self.link_info = link_info_of(link)
        self.e2ee = e2ee if e2ee is not None else (
            self.link_info.s_link is not None or self.link_info.tk is not None)
        """End-to-end encryption and signed SDP (on by default when the link carries ``s``/``tk``)."""
        self.therapist_ik = therapist_ik
        self.relay_only = relay_only
        self.wrong_key = wrong_key
        """Test hook: every epoch key this participant installs is corrupted (it can neither decrypt nor be
        decrypted)."""
        self.keys: ClientKeys | TherapistKeys | None = None
        self.sas: SAS | None = None
        """A client's SAS with the therapist (after the grant)."""
        self.sas_of: dict[str, SAS] = {}
        """The therapist's SAS per client pid (after each reveal)."""
        self.intros: dict[str, IntroInfo] = {}
        """The therapist's verified intros per waiting pid."""
        self.security_failures: list[str] = []
        """Every failed E2EE check (forged/unsigned SDP, bad grant, bad epoch, …)."""
        self.ignored_epochs = 0
        """Epoch messages ignored because they were not newer than the newest one (replays)."""
        self.epochs_made: list[int] = []
        self._epoch_members: tuple[str, ...] | None = None
        self._connected_clients: set[str] = set()
        self._send_lock = asyncio.Lock()
        self.sfu: SfuLink | None = None
        self.sfu_links: list[SfuLink] = []
        self.sfu_frames: dict[str, dict[str, int]] = {}
        """SFU rooms: frames received per publisher pid (attributed by the ``tracks`` mapping)."""
        self.sfu_first_frame: dict[str, float] = {}
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
                   width: int = 320, height: int = 240, fps: int = 30, **options: Any) -> Participant:
        """Join the room of ``link``; raises :class:`JoinRefused` if refused.

        ``options``: ``e2ee``, ``therapist_ik``, ``relay_only``, ``wrong_key`` (see :class:`Participant`).
        """
        self = cls(server, link, name=name, intro=intro, insecure=insecure, media=media, width=width,
                   height=height, fps=fps, **options)
        await self._connect(resume)
        return self

    def _make_intro(self, info: dict[str, Any]) -> str | None:
        if self.intro is not None:
            return self.intro
        if not self.e2ee or info.get("role") != "client":
            return None
        if self.keys is None:
            self.keys = ClientKeys(str(info["room"]["id"]), self.link_info, keystate=self._keystate())
        assert isinstance(self.keys, ClientKeys)
        return self.keys.make_intro()

    def _keystate(self) -> KeyState:
        ks = KeyState()
        ks.on_switch.append(lambda epoch: self._force_keyframes())
        if self.wrong_key:
            install = ks.install

            def corrupted(epoch: int, base_key: bytes, roster: Any, send_idx: int | None) -> None:
                install(epoch, bytes(b ^ 0x5A for b in base_key), roster, send_idx)

            ks.install = corrupted  # type: ignore[method-assign]
        return ks

    @property
    def keystate(self) -> KeyState | None:
        return self.keys.keystate if self.keys is not None else None

    async def _connect(self, resume: str | None) -> None:
        sc = SignalingClient.create(self.base_url, self.token, insecure=self.insecure)
        sc.listeners.append(self._on_message)
        sc.keep_inbox = False
        self.sc = sc
        await sc.connect(self.name, resume, self._make_intro)
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
        self._epoch_members = None  # a returning therapist issues a new epoch on the next roster
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
            if self.e2ee and self.role == "therapist" and self.keys is None:
                self.keys = TherapistKeys(msg.room.id, msg.pid, self.therapist_ik, s_link=self.link_info.s_link,
                                          keystate=self._keystate())
            elif isinstance(self.keys, ClientKeys):
                self.keys.pid = msg.pid
            self._set_status(msg.status)
        elif isinstance(msg, m.Waiting):
            self.position, self.therapist = msg.position, msg.therapist
            if self.status == "admitted":
                if isinstance(self.keys, ClientKeys):
                    self.keys.reset()
                    self.sas = None
                self._set_status("waiting")
        elif isinstance(msg, m.Admitted):
            if isinstance(self.keys, ClientKeys):
                try:
                    self.keys.check_grant(msg.grant, self.pid)
                    self.sas = self.keys.sas()
                    reveal = self.keys.make_reveal()
                except SecurityCheckFailed as err:
                    self._security_failed(f"grant: {err}")
                    self._set_status("security-failed")
                    return
                self._send_soon(m.Key(to=None, data=reveal))
            self._set_status("admitted")
        elif isinstance(msg, m.Roster):
            self.roster = {p.pid: p for p in msg.participants}
            self._maybe_rekey()
            self._sync_links()
        elif isinstance(msg, m.Queue):
            self.queue = list(msg.waiting)
            self._check_intros()
        elif isinstance(msg, m.PeerKey):
            self._on_key(msg.from_, msg.data)
        elif isinstance(msg, m.Tracks):
            self._on_tracks(msg)
        elif isinstance(msg, m.MediaEnded):
            self._on_media_ended()
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
            self._spawn(self._on_offer(msg.from_, msg.sdp, msg.sig), "alcove-answer")
        elif isinstance(msg, m.PeerAnswer):
            if msg.from_ == "sfu":
                self._on_sfu_answer(msg.sdp)
            else:
                self._spawn(self._on_answer(msg.from_, msg.sdp, msg.sig), "alcove-set-answer")
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

    # ------------------------------------------------------------------ E2EE keys

    def _security_failed(self, what: str) -> None:
        log.warning("%s: security check failed: %s", self.name or self.role, what)
        self.security_failures.append(what)
        self._changed.set()

    def _send_soon(self, msg: m.ClientMessage) -> None:
        """Send from synchronous code, keeping the order of calls."""
        self._spawn(self._send_in_order(msg), "alcove-send")

    async def _send_in_order(self, msg: m.ClientMessage) -> None:
        async with self._send_lock:
            if self.sc is not None and not self.sc.closed:
                await self.sc.send(msg)

    def _check_intros(self) -> None:
        if not isinstance(self.keys, TherapistKeys):
            return
        for q in self.queue:
            if q.intro is None or q.pid in self.intros:
                continue
            try:
                self.intros[q.pid] = self.keys.check_intro(q.pid, q.intro)
            except SecurityCheckFailed as err:
                self._security_failed(f"intro of {q.pid}: {err}")

    def _maybe_rekey(self) -> None:
        """Therapist: a new epoch whenever the admitted set of clients changes (or after a return)."""
        keys = self.keys
        if not isinstance(keys, TherapistKeys) or self.status != "admitted":
            return
        admitted = [p for p, e in sorted(self.roster.items()) if e.role == "client"]
        connected = {p for p, e in self.roster.items() if e.role == "client" and e.connected}
        returned = (connected - self._connected_clients) & set(admitted)
        self._connected_clients = connected
        if returned and self._epoch_members is not None:
            self._epoch_members = None  # a client came back (a reload): it holds no epoch secret any more
        members = []
        for pid in admitted:
            if pid in keys.members:
                members.append(pid)
            else:
                self._security_failed(f"admitted client {pid} has no verified intro: no key for it")
        if tuple(members) == self._epoch_members:
            return
        self._epoch_members = tuple(members)
        if not members:
            return
        result = keys.make_epoch(members)
        self.epochs_made.append(result.epoch)
        self._send_soon(m.Key(to=None, data=result.message))
        asyncio.get_running_loop().call_later(SWITCH_TIMEOUT + 0.02, self._maybe_switch)

    def _maybe_switch(self) -> None:
        keys = self.keys
        if not isinstance(keys, TherapistKeys) or self._closing or not keys.switch_due():
            return
        self._send_soon(m.Key(to=None, data=keys.make_switch()))

    def _on_key(self, from_pid: str, data: str) -> None:
        keys = self.keys
        try:
            if isinstance(keys, TherapistKeys):
                result = keys.handle_key(from_pid, data)
                if isinstance(result, SAS):
                    self.sas_of[from_pid] = result
                elif result is True:
                    self._maybe_switch()
            elif isinstance(keys, ClientKeys):
                kind = message_kind(data)
                reply = keys.handle_key(data)
                if isinstance(reply, str):
                    self._send_soon(m.Key(to=None, data=reply))
                elif kind == "epoch" and reply is None:
                    self.ignored_epochs += 1
                self._changed.set()
        except SecurityCheckFailed as err:
            self._security_failed(f"key from {from_pid}: {err}")

    def _force_keyframes(self) -> None:
        pcs = [link.pc for link in self.links.values()]
        if self.sfu is not None:
            pcs.append(self.sfu.pc)
        for pc in pcs:
            for sender in pc.getSenders():
                if sender.kind == "video" and sender.track is not None:
                    hooks.force_keyframe(sender)

    def _encrypt(self, kind: str, frame: bytes) -> bytes | None:
        keys = self.keys
        return keys.keystate.encrypt(kind, frame) if keys is not None else None  # type: ignore[arg-type]

    def _decrypt_from(self, pid: str | None, kind: str, data: bytes) -> bytes | None:
        keys = self.keys
        if keys is None or pid is None:
            return None
        return keys.keystate.decrypt_from(kind, data, pid)  # type: ignore[arg-type]

    def _protect_pc(self, pc: RTCPeerConnection, peer_of: Callable[[RTCRtpTransceiver], str | None]) -> None:
        """VP8/Opus only, and (E2EE) SFrame transforms on every sender and receiver of ``pc``."""
        for t in pc.getTransceivers():
            prefer_vp8_opus(t)
            if not self.e2ee:
                continue
            hooks.set_sender_transform(t.sender, self._encrypt)
            hooks.set_receiver_transform(t.receiver, self._receive_transform(t, peer_of))

    def _receive_transform(self, t: RTCRtpTransceiver, peer_of: Callable[[RTCRtpTransceiver], str | None]
                           ) -> Callable[[str, bytes], bytes | None]:
        def transform(kind: str, data: bytes) -> bytes | None:
            return self._decrypt_from(peer_of(t), kind, data)
        return transform

    async def _verified(self, pid: str, sdp_type: str, sdp: str, sig: str | None) -> bool:
        """Check a peer's signed SDP (E2EE) BEFORE ``setRemoteDescription``; False (recorded) if it fails."""
        keys = self.keys
        if not self.e2ee:
            return True
        if keys is None:
            self._security_failed(f"{sdp_type} from {pid} before any key")
            return False
        if isinstance(keys, ClientKeys):
            entry = self.roster.get(pid)
            if entry is None or entry.role != "therapist":
                # another client: its key comes only from the therapist-signed roster; wait for that epoch
                with contextlib.suppress(TimeoutError):
                    await self.wait_until(lambda: pid in keys.roster, 5.0, f"{pid} in the signed roster")
        try:
            keys.verify_sdp(pid, sdp_type, sdp, sig)
        except SecurityCheckFailed as err:
            self._security_failed(f"{sdp_type} from {pid}: {err}")
            return False
        return True

    def _sign(self, pid: str, sdp_type: str, sdp: str) -> str | None:
        if not self.e2ee or self.keys is None:
            return None
        return self.keys.sign_sdp(pid, sdp_type, sdp)

    def decrypt_failures(self) -> int:
        """Frames that failed SFrame authentication (all peers)."""
        ks = self.keystate
        return ks.counters["failed"] if ks is not None else 0

    # ------------------------------------------------------------------ mesh

    @property
    def sfu_room(self) -> bool:
        return self.room is not None and self.room.topology == "sfu"

    def _sync_links(self) -> None:
        """Open links to new admitted peers (when we offer), close links to peers that left the roster."""
        if self.status != "admitted" or self._closing:
            return
        if self.sfu_room:
            self._sync_sfu()
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
        pc = RTCPeerConnection(aiortc_configuration(self.ice_servers, relay_only=self.relay_only))
        link = PeerLink(pid, pc, offerer)
        video = SyntheticVideoTrack(self.width, self.height, self.fps)
        audio = SyntheticAudioTrack()
        link.local_tracks = [audio, video]
        pc.addTrack(audio)
        pc.addTrack(video)
        self._protect_pc(pc, lambda t: pid)

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
            if pc.connectionState == "connected" and link.connected_at is None:
                link.connected_at = time.monotonic()
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
        sdp = link.pc.localDescription.sdp
        await self._send_in_order(m.Offer(to=pid, sdp=sdp, sig=self._sign(pid, "offer", sdp)))

    async def _on_offer(self, pid: str, sdp: str, sig: str | None = None) -> None:
        if self.status != "admitted":
            return
        if not await self._verified(pid, "offer", sdp, sig):
            link = self.links.pop(pid, None)
            if link is not None:
                link.refused = "offer"
                self.links[pid] = link
                self._close_link(pid)
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
        self._protect_pc(link.pc, lambda t: pid)
        answer = await link.pc.createAnswer()
        await link.pc.setLocalDescription(answer)
        if link.closed or self.sc is None:
            return
        link.answered = True
        out = link.pc.localDescription.sdp
        await self._send_in_order(m.Answer(to=pid, sdp=out, sig=self._sign(pid, "answer", out)))

    async def _on_answer(self, pid: str, sdp: str, sig: str | None = None) -> None:
        link = self.links.get(pid)
        if link is None or link.pc.signalingState != "have-local-offer":
            return
        if not await self._verified(pid, "answer", sdp, sig):
            link.refused = "answer"
            self._close_link(pid)
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

    # ------------------------------------------------------------------ SFU

    def _sync_sfu(self) -> None:
        if not self.media or not self.ice_known:
            return
        sfu = self.sfu
        if sfu is None or sfu.closed or sfu.pc.connectionState in ("closed", "failed"):
            if sfu is not None:
                self._close_sfu()
            sfu = self.sfu = self._new_sfu()
            self.sfu_links.append(sfu)
        if len(sfu.pairs) < len(self.peers()) or sfu.negotiations == 0:
            self._spawn(self._negotiate_sfu(sfu), "alcove-sfu-offer")

    def _new_sfu(self) -> SfuLink:
        pc = RTCPeerConnection(aiortc_configuration(self.ice_servers, relay_only=self.relay_only, bundle=True))
        sfu = SfuLink(pc)
        video = SyntheticVideoTrack(self.width, self.height, self.fps)
        audio = SyntheticAudioTrack()
        sfu.local_tracks = [video, audio]
        pc.addTransceiver(video, direction="sendonly")
        pc.addTransceiver(audio, direction="sendonly")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self._changed.set()

        return sfu

    def _sfu_publisher(self, sfu: SfuLink, t: RTCRtpTransceiver) -> str | None:
        entry = sfu.mapping.get(t.mid or "")
        return entry[0] if entry is not None else None

    async def _negotiate_sfu(self, sfu: SfuLink) -> None:
        async with sfu.lock:
            while not sfu.closed and self.status == "admitted" and self.sc is not None:
                need = len(self.peers())
                if sfu.negotiations > 0 and len(sfu.pairs) >= need:
                    return
                while len(sfu.pairs) < need:
                    video = sfu.pc.addTransceiver("video", direction="recvonly")
                    audio = sfu.pc.addTransceiver("audio", direction="recvonly")
                    sfu.pairs.append((video, audio))
                self._protect_pc(sfu.pc, lambda t: self._sfu_publisher(sfu, t))
                await sfu.pc.setLocalDescription(await sfu.pc.createOffer())
                sfu.answer = asyncio.get_running_loop().create_future()
                await self._send_in_order(m.Offer(to="sfu", sdp=sfu.pc.localDescription.sdp))
                sdp = await asyncio.wait_for(sfu.answer, 15.0)
                if sfu.closed:
                    return
                await sfu.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
                sfu.negotiations += 1
                for video, audio in sfu.pairs:
                    for t in (video, audio):
                        mid = t.mid or ""
                        if mid and mid not in sfu.pumps and t.receiver.track is not None:
                            sfu.pumps[mid] = asyncio.create_task(self._sfu_pump(sfu, mid, t.receiver.track))
                self._changed.set()

    def _on_sfu_answer(self, sdp: str) -> None:
        sfu = self.sfu
        if sfu is not None and sfu.answer is not None and not sfu.answer.done():
            sfu.answer.set_result(sdp)

    def _on_tracks(self, msg: m.Tracks) -> None:
        if self.sfu is not None:
            self.sfu.mapping = {mid: (ref.pid, ref.kind) for mid, ref in msg.mids.items()}

    def _on_media_ended(self) -> None:
        self._close_sfu()
        self._sync_links()

    async def _sfu_pump(self, sfu: SfuLink, mid: str, track: Any) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                await track.recv()
                entry = sfu.mapping.get(mid)
                if entry is None:
                    continue
                pid, kind = entry
                counts = self.sfu_frames.setdefault(pid, {"video": 0, "audio": 0})
                counts[kind] += 1
                self.sfu_first_frame.setdefault(f"{pid}/{kind}", time.monotonic())
                self._changed.set()

    def _close_sfu(self) -> None:
        sfu, self.sfu = self.sfu, None
        if sfu is None or sfu.closed:
            return
        sfu.closed = True
        if sfu.answer is not None and not sfu.answer.done():
            sfu.answer.cancel()
        self._spawn(self._shutdown_sfu(sfu), "alcove-close-pc")

    @staticmethod
    async def _shutdown_sfu(sfu: SfuLink) -> None:
        for task in sfu.pumps.values():
            task.cancel()
        await asyncio.gather(*sfu.pumps.values(), return_exceptions=True)
        await sfu.pc.close()
        for track in sfu.local_tracks:
            track.stop()

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
        self._close_sfu()

    @staticmethod
    async def _shutdown_link(link: PeerLink) -> None:
        await link.pc.close()
        for track in link.local_tracks:
            track.stop()
        for sink in link.sinks.values():
            await sink.stop()

    # ------------------------------------------------------------------ figures

    def frames(self) -> dict[str, dict[str, int]]:
        """Frames received per remote pid, over the open peer connections (SFU rooms: per publisher)."""
        if self.sfu_room:
            return {pid: dict(c) for pid, c in self.sfu_frames.items()}
        return {pid: link.frames() for pid, link in self.links.items()}

    def frames_from(self, pid: str) -> dict[str, int]:
        if self.sfu_room:
            return dict(self.sfu_frames.get(pid, {"video": 0, "audio": 0}))
        link = self.links.get(pid)
        if link is None:
            for old in reversed(self.closed_links):
                if old.pid == pid:
                    return old.frames()
            return {"video": 0, "audio": 0}
        return link.frames()

    def first_frame_at(self, pid: str, kind: str = "video") -> float | None:
        if self.sfu_room:
            return self.sfu_first_frame.get(f"{pid}/{kind}")
        link = self.links.get(pid)
        return link.first_frame_at(kind) if link is not None else None

    def ever_connected(self) -> bool:
        """True if any peer connection (open or closed, mesh or SFU) ever reached ``connected``."""
        links = [*self.links.values(), *self.closed_links]
        return any(link.connected_at is not None for link in links) or any(
            s.pc.connectionState == "connected" for s in self.sfu_links)

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
        """Admit a waiting client; with E2EE the grant is made here (from its verified intro)."""
        pid = self._target(who)
        if grant is None and isinstance(self.keys, TherapistKeys):
            try:
                grant = self.keys.make_grant(pid)
            except SecurityCheckFailed as err:
                self._security_failed(f"admit {pid}: {err}")
                raise
        await self.send(m.Admit(pid=pid, grant=grant))

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
