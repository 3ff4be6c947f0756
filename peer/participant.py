"""A reusable aiortc participant (therapist or client) for tests, the probe and benchmarks.

It joins with a link, follows the room (status, roster, queue, therapist presence, time), and keeps one
``RTCPeerConnection`` per admitted remote peer (mesh, :mod:`peer.mesh`) or one to the SFU
(:mod:`peer.sfu_session`). :class:`Participant` only wires four parts that each do one thing: the mirror of
the room (:class:`peer.state.RoomState`), mesh negotiation (:class:`peer.mesh.Mesh`), SFU negotiation
(:class:`peer.sfu_session.SfuSession`) and end-to-end encryption (:class:`peer.e2ee_glue.E2eeGlue`).

Each peer connection sends synthetic audio and video (:mod:`peer.media`) and counts the frames it receives per
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
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from rtc import aiortc_hooks as hooks
from signaling import messages as m

from .e2ee import EPOCH_LIFETIME_MS, KeyState, LinkInfo, parse_link_fragment
from .e2ee_glue import E2eeGlue
from .manners import Manners, safety_body
from .media import SyntheticAudioTrack
from .mesh import MediaOptions, Mesh, PeerLink
from .sfu_session import SfuLink, SfuSession
from .signaling_client import JoinRefused, SignalingClient, base_of, token_of
from .state import RoomState, Tasks

__all__ = ["JoinRefused", "Participant", "PeerLink", "SfuLink", "link_info_of"]


def link_info_of(link: str) -> LinkInfo:
    """The E2EE fields of a link's fragment (``#t=…&s=…&tk=…``); a bare token has none."""
    if "#" not in link:
        return LinkInfo(link)
    return parse_link_fragment(link.split("#", 1)[1])


class _Forward:
    """An attribute of the participant that lives in one of its parts (read and write)."""

    def __init__(self, part: str, name: str | None = None) -> None:
        self.part, self.name = part, name or ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj: object, value: Any) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class Participant:
    """A therapist or a client, with real media. Create it with :meth:`join`.

    Options of :meth:`join`: ``e2ee`` (default: on when the link carries ``s``/``tk``), ``therapist_ik``,
    ``relay_only`` (TURN relay candidates only) and ``keystate_factory`` (makes the participant's
    :class:`peer.e2ee.KeyState`; the probe's wrong-key scenario passes one that corrupts every key).
    """

    # the room, as the server told it (peer.state.RoomState)
    pid = _Forward("state")
    role = _Forward("state")
    status = _Forward("state")
    room = _Forward("state")
    ends_at = _Forward("state")
    therapist = _Forward("state")
    position = _Forward("state")
    roster = _Forward("state")
    queue = _Forward("state")
    ice_servers = _Forward("state")
    ice_known = _Forward("state")
    log = _Forward("state")
    errors = _Forward("state")
    admitted_at = _Forward("state")
    ended_reason = _Forward("state")
    # end-to-end encryption (peer.e2ee_glue.E2eeGlue)
    keys = _Forward("e2ee_glue")
    sas = _Forward("e2ee_glue")
    sas_of = _Forward("e2ee_glue")
    intros = _Forward("e2ee_glue")
    security_failures = _Forward("e2ee_glue")
    refusals = _Forward("e2ee_glue")
    new_people = _Forward("e2ee_glue")
    encryption_state = _Forward("e2ee_glue")
    ignored_epochs = _Forward("e2ee_glue")
    epochs_made = _Forward("e2ee_glue")
    app_messages = _Forward("e2ee_glue")
    keystate = _Forward("e2ee_glue")
    # mesh and SFU negotiation (peer.mesh.Mesh, peer.sfu_session.SfuSession)
    links = _Forward("mesh")
    closed_links = _Forward("mesh")
    sfu = _Forward("sfu_session")
    sfu_links = _Forward("sfu_session")
    sfu_frames = _Forward("sfu_session", "frames")
    sfu_first_frame = _Forward("sfu_session", "first_frame")
    # background work
    sc = _Forward("tasks")
    failures = _Forward("tasks")

    def __init__(self, server: str, link: str, *, name: str | None = None, intro: str | None = None,
                 insecure: bool = False, media: bool = True, width: int = 320, height: int = 240,
                 fps: int = 30, e2ee: bool | None = None, therapist_ik: ec.EllipticCurvePrivateKey | None = None,
                 relay_only: bool = False, keystate_factory: Callable[[], KeyState] = KeyState,
                 epoch_lifetime_ms: int = EPOCH_LIFETIME_MS) -> None:
        self.base_url = base_of(server)
        self.token = token_of(link)
        self.link_info = link_info_of(link)
        self.e2ee = e2ee if e2ee is not None else (
            self.link_info.s_link is not None or self.link_info.tk is not None)
        """End-to-end encryption and signed SDP (on by default when the link carries ``s``/``tk``)."""
        self.name = name
        self.intro = intro
        self.insecure = insecure
        self.options = MediaOptions(media=media, width=width, height=height, fps=fps, relay_only=relay_only)
        self.state = RoomState()
        self.tasks = Tasks()
        self.e2ee_glue = E2eeGlue(self.state, self.tasks, enabled=self.e2ee, link_info=self.link_info,
                                  therapist_ik=therapist_ik, keystate_factory=keystate_factory, who=self._who,
                                  epoch_lifetime_ms=epoch_lifetime_ms)
        self.mesh = Mesh(self.state, self.tasks, self.e2ee_glue, self.options, resync=self._sync_links)
        self.sfu_session = SfuSession(self.state, self.tasks, self.e2ee_glue, self.options)
        self.e2ee_glue.on_switch.append(lambda epoch: self._force_keyframes())
        self.mic = True
        """What this participant tells the others of its own microphone (``set_media_state``); the synthetic
        media itself keeps flowing."""
        self.cam = True
        """What this participant tells the others of its own camera (``set_media_state``)."""
        self.tells_state = False
        """Whether this participant sends its state (from its first ``set_media_state`` on; off by default so that
        tests of other app messages see only their own)."""
        # Under each new epoch the state goes out again, so people who just joined see it too.
        self.e2ee_glue.on_switch.append(self._state_on_switch)
        self.state.status_listeners.append(self._status_changed)
        self._reactions: dict[type[m.ServerMessage], Callable[[Any], None]] = {
            m.Welcome: self._on_welcome,
            m.Waiting: self._on_waiting,
            m.Admitted: self._on_admitted,
            m.Roster: self._on_roster,
            m.Queue: lambda msg: self.e2ee_glue.check_intros(),
            m.PeerKey: self.e2ee_glue.on_key,
            m.PeerApp: self._on_app,
            m.Tracks: self.sfu_session.on_tracks,
            m.MediaEnded: self._on_media_ended,
            m.IceServers: lambda msg: self._sync_links(),
            m.SessionEnded: lambda msg: self.state.set_status("ended"),
            m.Declined: lambda msg: self.state.set_status("declined"),
            m.Removed: lambda msg: self.state.set_status("removed"),
            m.PeerOffer: lambda msg: self.tasks.spawn(self.mesh.on_offer(msg), "alcove-answer"),
            m.PeerAnswer: self._on_answer,
            m.PeerCandidate: lambda msg: self.tasks.spawn(self.mesh.on_candidate(msg), "alcove-candidate"),
        }
        """What the participant does after the mirror recorded a message, by message type."""
        self.manners = Manners(self.state, self.e2ee_glue, self._apply_mute)
        """Group manners and the safety answers (peer.manners): hands, spotlight, muted, safety_answers."""
        self._pump: asyncio.Task[None] | None = None
        self._hold_timer: asyncio.TimerHandle | None = None

    @property
    def media(self) -> bool:
        return self.options.media

    @property
    def relay_only(self) -> bool:
        return self.options.relay_only

    def _who(self) -> str:
        return self.name or self.role

    # ------------------------------------------------------------------ joining

    @classmethod
    async def join(cls, server: str, link: str, *, name: str | None = None, intro: str | None = None,
                   resume: str | None = None, insecure: bool = False, media: bool = True,
                   width: int = 320, height: int = 240, fps: int = 30, **options: Any) -> Participant:
        """Join the room of ``link``; raises :class:`JoinRefused` if refused.

        ``options``: ``e2ee``, ``therapist_ik``, ``relay_only``, ``keystate_factory``, ``epoch_lifetime_ms``
        (see :class:`Participant`).
        """
        self = cls(server, link, name=name, intro=intro, insecure=insecure, media=media, width=width,
                   height=height, fps=fps, **options)
        await self._connect(resume)
        return self

    async def _connect(self, resume: str | None) -> None:
        sc = SignalingClient.create(self.base_url, self.token, insecure=self.insecure)
        sc.listeners.append(self._on_message)
        sc.keep_inbox = False
        self.tasks.sc = sc
        await sc.connect(self.name, resume, lambda info: self.e2ee_glue.make_intro(info, self.intro))
        self._pump = asyncio.create_task(self._watch(sc), name="alcove-participant-watch")

    async def _watch(self, sc: SignalingClient) -> None:
        with contextlib.suppress(TimeoutError):
            await sc.wait_closed(timeout=1e9)
        self.state.changed.set()

    async def drop_signaling(self) -> None:
        """Close the websocket without ``leave`` (as a network drop would); peer connections stay up."""
        if self.tasks.sc is not None:
            await self.tasks.sc.close()
        await self._stop_pump()

    async def reconnect(self) -> m.Welcome:
        """Reconnect the websocket with the latest resume credential (peer connections are kept)."""
        old = self.tasks.sc
        resume = old.resume if old is not None else None
        if old is not None:
            await old.close()
            await self._stop_pump()
        self.mesh.hold()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self._hold_timer = asyncio.get_running_loop().call_later(Mesh.RESUME_HOLD + 0.01, self._sync_links)
        self.e2ee_glue.reconnected()
        await self._connect(resume)
        assert self.tasks.sc is not None and self.tasks.sc.welcome is not None
        return self.tasks.sc.welcome

    async def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None

    @property
    def connected(self) -> bool:
        return self.tasks.sc is not None and not self.tasks.sc.closed

    @property
    def resume_credential(self) -> str | None:
        """The latest resume credential the server gave this participant (the sendback probe replays it)."""
        return self.tasks.sc.resume if self.tasks.sc is not None else None

    # ------------------------------------------------------------------ messages

    def _on_message(self, msg: m.ServerMessage) -> None:
        """Every server message: the mirror records it, then the participant reacts (by message type)."""
        self.state.apply(msg)
        reaction = self._reactions.get(type(msg))
        if reaction is not None:
            reaction(msg)

    def _on_welcome(self, msg: m.Welcome) -> None:
        self.e2ee_glue.welcomed(msg)
        self.state.set_status(msg.status)

    def _on_waiting(self, msg: m.Waiting) -> None:
        if self.status == "admitted":
            self.e2ee_glue.sent_back()
            self.state.set_status("waiting")

    def _on_admitted(self, msg: m.Admitted) -> None:
        if not self.e2ee_glue.admitted(msg.grant):
            self.state.set_status("security-failed")
            return
        self.state.set_status("admitted")

    def _on_roster(self, msg: m.Roster) -> None:
        self.e2ee_glue.maybe_rekey()
        self._sync_links()

    def _on_answer(self, msg: m.PeerAnswer) -> None:
        if msg.from_ == m.SFU_PID:
            self.sfu_session.on_answer(msg)
        else:
            self.tasks.spawn(self.mesh.on_answer(msg), "alcove-set-answer")

    def _on_media_ended(self, msg: m.MediaEnded) -> None:
        self.sfu_session.close()
        self._sync_links()

    def _status_changed(self, previous: str, status: str) -> None:
        if status == "admitted" and previous != "admitted":
            self._sync_links()
        if (previous == "admitted" and status != "admitted") or status in ("ended", "declined", "removed"):
            self._close_all_links()

    def _sync_links(self) -> None:
        """Bring the peer connections in step with the roster (mesh) or the SFU membership."""
        if self.status != "admitted" or self.tasks.closing:
            return
        if self.sfu_room:
            self.sfu_session.sync()
        else:
            self.mesh.sync()
        if self.manners.muted:
            self._apply_mute(True)  # new links send silence too

    def _on_app(self, msg: m.PeerApp) -> None:
        self.e2ee_glue.on_app(msg)
        self.manners.on_app()

    def _local_audio(self) -> list[SyntheticAudioTrack]:
        links: list[Any] = [*self.mesh.links.values()]
        if self.sfu_session.sfu is not None:
            links.append(self.sfu_session.sfu)
        return [t for link in links for t in link.local_tracks if isinstance(t, SyntheticAudioTrack)]

    def _apply_mute(self, muted: bool) -> None:
        for track in self._local_audio():
            track.muted = muted

    # ------------------------------------------------------------------ safety check and group manners

    def answer_safety(self, where: str, contact_name: str, contact_phone: str, *, call_back: str | None = None,
                      wait_minutes: int | None = None) -> bool:
        """A client answers the safety check, privately to the therapist (False: no key or no therapist yet)."""
        therapist = self.manners.therapist_pid()
        if therapist is None:
            return False
        body = safety_body(where, contact_name, contact_phone, call_back=call_back, wait_minutes=wait_minutes)
        return self.send_app(body, therapist)

    def raise_hand(self, up: bool = True) -> bool:
        """A member raises (or lowers) its hand, to everyone."""
        ok = self.send_app({"k": "hand", "up": up})
        if ok and self.pid is not None:
            (self.manners.hands.add if up else self.manners.hands.discard)(self.pid)
        return ok

    def unmute(self) -> None:
        """This participant turns its microphone back on (after the therapist's mute or ask)."""
        self.manners.set_muted(False)

    def mute_member(self, who: str) -> bool:
        """The therapist mutes one member (its own page/participant mutes its sender)."""
        return self.send_app({"k": "mute"}, self._target(who))

    def ask_unmute(self, who: str) -> bool:
        """The therapist asks one member to unmute."""
        return self.send_app({"k": "unmute-ask"}, self._target(who))

    def set_spotlight(self, who: str | None) -> bool:
        """The therapist puts one speaker in the spotlight on every page (None: nobody)."""
        pid = self._target(who) if who is not None else None
        ok = self.send_app({"k": "spotlight", "pid": pid})
        if ok:
            self.manners.spotlight = pid
        return ok

    def _close_all_links(self) -> None:
        self.mesh.close_all()
        self.sfu_session.close()

    def _force_keyframes(self) -> None:
        pcs = [link.pc for link in self.mesh.links.values()]
        if self.sfu_session.sfu is not None:
            pcs.append(self.sfu_session.sfu.pc)
        for pc in pcs:
            for sender in pc.getSenders():
                if sender.kind == "video" and sender.track is not None:
                    hooks.force_keyframe(sender)

    def decrypt_failures(self) -> int:
        """Frames that failed SFrame authentication (all peers)."""
        return self.e2ee_glue.decrypt_failures()

    # ------------------------------------------------------------------ figures

    @property
    def sfu_room(self) -> bool:
        return self.state.sfu_room

    def frames(self) -> dict[str, dict[str, int]]:
        """Frames received per remote pid, over the open peer connections (SFU rooms: per publisher)."""
        if self.sfu_room:
            return {pid: dict(c) for pid, c in self.sfu_session.frames.items()}
        return self.mesh.frames()

    def frames_from(self, pid: str) -> dict[str, int]:
        if self.sfu_room:
            return dict(self.sfu_session.frames.get(pid, {"video": 0, "audio": 0}))
        return self.mesh.frames_from(pid)

    def first_frame_at(self, pid: str, kind: str = "video") -> float | None:
        if self.sfu_room:
            return self.sfu_session.first_frame.get(f"{pid}/{kind}")
        return self.mesh.first_frame_at(pid, kind)

    def ever_connected(self) -> bool:
        """True if any peer connection (open or closed, mesh or SFU) ever reached ``connected``."""
        return self.mesh.ever_connected() or self.sfu_session.ever_connected()

    def peers(self) -> list[str]:
        """Admitted remote pids (from the roster)."""
        return self.state.peers()

    def pid_of(self, name: str) -> str:
        """The pid of a waiting client or roster member by display name."""
        return self.state.pid_of(name)

    # ------------------------------------------------------------------ waiting

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        """Wait until ``condition()`` holds (checked on every message and every 50 ms); TimeoutError if not."""
        await self.state.wait_until(condition, timeout, what, self._who())

    def mark(self) -> int:
        """A position in :attr:`log` for :meth:`expect`."""
        return len(self.log)

    async def expect(self, type_: str, *, after: int = 0, timeout: float = 5.0) -> Any:
        """The first message of ``type_`` in :attr:`log` at or after position ``after``."""
        def find() -> Any:
            for msg in self.log[after:]:
                if m.tag_of(msg) == type_:
                    return msg
            return None
        await self.wait_until(lambda: find() is not None, timeout, f"sent {type_}")
        return find()

    async def wait_app(self, predicate: Callable[[tuple[str, dict[str, Any], bool]], bool] = lambda _: True,
                       timeout: float = 10.0) -> tuple[str, dict[str, Any], bool]:
        """The first received app message ``(from_pid, body, private)`` for which ``predicate`` holds."""
        def find() -> tuple[str, dict[str, Any], bool] | None:
            return next((a for a in self.app_messages if predicate(a)), None)
        await self.wait_until(lambda: find() is not None, timeout, "an app message")
        found = find()
        assert found is not None
        return found

    async def wait_frames(self, pid: str, video: int = 10, audio: int = 0, timeout: float = 10.0) -> None:
        def enough() -> bool:
            f = self.frames_from(pid)
            return f["video"] >= video and f["audio"] >= audio
        await self.wait_until(enough, timeout, f"{video} video/{audio} audio frames from {pid}")

    # ------------------------------------------------------------------ actions

    async def send(self, msg: m.ClientMessage) -> None:
        if self.tasks.sc is None:
            raise RuntimeError("not connected")
        await self.tasks.sc.send(msg)

    def _target(self, who: str) -> str:
        if who in self.roster or any(q.pid == who for q in self.queue):
            return who
        try:
            return self.pid_of(who)
        except KeyError:
            return who  # an unknown pid: the server answers unknown-peer

    def set_media_state(self, *, mic: bool | None = None, cam: bool | None = None) -> bool:
        """Says to everyone that this participant's microphone / camera is on or off, as the browser does when its
        buttons are pressed (an end-to-end encrypted app message of kind ``state``). False without a key yet: the
        state then goes out with the first epoch. From then on it goes out again under every new epoch, as the
        browser's does."""
        self.tells_state = True
        if mic is not None:
            self.mic = mic
        if cam is not None:
            self.cam = cam
        return self._send_state()

    def _send_state(self) -> bool:
        return self.e2ee and self.send_app({"k": "state", "mic": self.mic, "cam": self.cam})

    def _state_on_switch(self, epoch: int) -> None:
        if self.tells_state:
            self._send_state()

    def send_app(self, body: dict[str, Any], to: str | None = None) -> bool:
        """Send an end-to-end encrypted app message (``{"k": kind, …}``) to everyone (``None``) or one pid.

        False when there is no key yet (before the first epoch); see docs/security.md §10.
        """
        return self.e2ee_glue.send_app(body, to)

    async def admit(self, who: str, grant: str | None = None) -> None:
        """Admit a waiting client; with E2EE the grant is made here (from its verified intro)."""
        pid = self._target(who)
        if grant is None:
            grant = self.e2ee_glue.grant_for(pid)
        await self.send(m.Admit(pid=pid, grant=grant))

    async def decline(self, who: str, message: str | None = None, block: bool = False) -> None:
        """Refuse a waiting client; its link stays usable unless ``block``."""
        await self.send(m.Decline(pid=self._target(who), message=message, block=block))

    async def send_to_waiting(self, who: str) -> None:
        pid = self._target(who)
        await self.send(m.SendToWaiting(pid=pid))
        self.e2ee_glue.removed_by_me(pid)  # no key for it any more, whatever the server's roster says

    async def remove(self, who: str, message: str | None = None, block: bool = False) -> None:
        """Take a client out of the session; its link stays usable unless ``block``."""
        pid = self._target(who)
        await self.send(m.Remove(pid=pid, message=message, block=block))
        self.e2ee_glue.removed_by_me(pid)  # no key for it any more, whatever the server's roster says

    async def extend(self, minutes: int) -> None:
        await self.send(m.Extend(minutes=minutes))  # type: ignore[arg-type]

    async def end(self) -> None:
        await self.send(m.End())

    async def leave(self) -> None:
        if self.connected:
            await self.send(m.Leave())
            with contextlib.suppress(TimeoutError):
                assert self.tasks.sc is not None
                await self.tasks.sc.wait_closed(2.0)
        self.state.set_status("left")

    # ------------------------------------------------------------------ shutdown

    async def close(self) -> None:
        """Close the socket and every peer connection; waits for every task (no pending-task warnings)."""
        self.tasks.closing = True
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        if self.tasks.sc is not None:
            await self.tasks.sc.close()
        await self._stop_pump()
        self._close_all_links()
        await self.tasks.drain()
        if self.status not in ("ended", "declined", "removed", "left"):
            self.status = "closed"

    async def __aenter__(self) -> Participant:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
