"""The participant's end-to-end encryption: the key protocol (:mod:`peer.e2ee`) wired to the room and media.

:class:`E2eeGlue` holds the participant's keys and the results of their checks (SAS, verified intros, every
failed check), makes and answers key messages, signs and verifies SDP, and puts SFrame transforms on peer
connections (:mod:`rtc.aiortc_hooks`). It does not negotiate and does not mirror the room: it reads
:class:`peer.state.RoomState` and sends through :class:`peer.state.Tasks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from cryptography.hazmat.primitives.asymmetric import ec

from rtc import aiortc_hooks as hooks
from rtc.codecs import prefer_vp8_opus
from signaling import messages as m

from .e2ee import (
    EPOCH_LIFETIME_MS,
    SAS,
    SWITCH_TIMEOUT,
    AppHold,
    ClientKeys,
    IntroInfo,
    KeyState,
    LinkInfo,
    NewPerson,
    SecurityCheckFailed,
    TherapistKeys,
    app_epoch_of,
    message_kind,
)
from .state import RoomState, Tasks

log = logging.getLogger("alcove.peer")

KeyStateFactory = Callable[[], KeyState]

#: How often the therapist checks whether the current epoch is due for a periodic rekey (seconds).
REKEY_CHECK_S = 5.0
#: How long the therapist keeps an admitted client the server has not listed since the therapist's own return
#: (a fresh server after a restart learns about people only as they resume): the server's default resume grace.
RESUME_GRACE_S = 120.0


class E2eeGlue:
    """Keys, SAS and signed SDP of one participant; ``enabled=False`` leaves media and SDP in clear."""

    def __init__(self, state: RoomState, tasks: Tasks, *, enabled: bool, link_info: LinkInfo,
                 therapist_ik: ec.EllipticCurvePrivateKey | None = None,
                 keystate_factory: KeyStateFactory = KeyState, who: Callable[[], str] = lambda: "",
                 epoch_lifetime_ms: int = EPOCH_LIFETIME_MS, resume_grace: float = RESUME_GRACE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state, self.tasks = state, tasks
        self.resume_grace = resume_grace
        self.clock = clock
        """Seconds, monotonic: the therapist's deadlines for clients the server has not listed yet."""
        self.epoch_lifetime_ms = epoch_lifetime_ms
        self.enabled = enabled
        self.link_info = link_info
        self.therapist_ik = therapist_ik
        self.keystate_factory = keystate_factory
        self.who = who
        self.on_switch: list[Callable[[int], None]] = []
        """Called with the epoch after every key switch (the participant forces keyframes)."""
        self.keys: ClientKeys | TherapistKeys | None = None
        self.sas: SAS | None = None
        """A client's SAS with the therapist (after the grant)."""
        self.sas_of: dict[str, SAS] = {}
        """The therapist's SAS per client pid (after each reveal)."""
        self.intros: dict[str, IntroInfo] = {}
        """The therapist's verified intros per waiting pid."""
        self.security_failures: list[str] = []
        """Every failed E2EE check (forged/unsigned SDP, bad grant, bad epoch, …)."""
        self.refusals: list[dict[str, str | None]] = []
        """Every refused key, epoch, intro or signature as ``{"what", "pid", "detail"}``, queryable (never only
        logged): ``what`` is one of intro, new-person, grant, reveal, ack, epoch, switch, sdp, unkeyed, app."""
        self.new_people: dict[str, IntroInfo] = {}
        """Therapist: pids whose queued intro is a new person with the seat of someone granted before."""
        self.ignored_epochs = 0
        """Epoch messages ignored because they were not newer than the newest one (replays)."""
        self.epochs_made: list[int] = []
        self.app_messages: list[tuple[str, dict[str, Any], bool]] = []
        """Every verified app message received, as ``(from_pid, body, private)`` in arrival order (memory only)."""
        self.app_held = AppHold()
        """App messages under an epoch not received yet, waiting for it (bounded in number and time)."""
        self.ignored_apps = 0
        """App messages ignored because they were sent under an epoch older than this participant's membership."""
        self._hold_timer: asyncio.TimerHandle | None = None
        self._epoch_members: tuple[str, ...] | None = None
        self._connected_clients: set[str] = set()
        self._admitted_clients: set[str] = set()
        self._listed: set[str] = set()
        """Clients the server listed since this therapist's last (re)connection."""
        self.unconfirmed: dict[str, float] = {}
        """Therapist: admitted clients the server has not listed since this therapist came back (a restarted server
        does not know them until they resume), each with the deadline (``clock``) until which it stays a member."""
        self._removed_by_me: set[str] = set()
        """Clients this therapist removed or sent back itself: no key, whatever the server's roster says, until a
        new Admit."""
        self._grace_timer: asyncio.TimerHandle | None = None
        self._intro_seen: dict[str, str] = {}
        self._rekey_timer: asyncio.TimerHandle | None = None

    @property
    def keystate(self) -> KeyState | None:
        return self.keys.keystate if self.keys is not None else None

    def _new_keystate(self) -> KeyState:
        ks = self.keystate_factory()
        ks.on_switch.append(self._switched)
        return ks

    def _switched(self, epoch: int) -> None:
        for listener in self.on_switch:
            listener(epoch)

    def failed(self, what: str, *, kind: str = "check", pid: str | None = None) -> None:
        log.warning("%s: security check failed: %s", self.who(), what)
        self.security_failures.append(what)
        self.refusals.append({"what": kind, "pid": pid, "detail": what})
        self.state.changed.set()

    def refused(self, kind: str, pid: str | None = None) -> list[dict[str, str | None]]:
        """The recorded refusals of one kind (and pid)."""
        return [r for r in self.refusals if r["what"] == kind and (pid is None or r["pid"] == pid)]

    @property
    def encryption_state(self) -> str:
        """"off" (no E2EE), "waiting" (no key yet), "ok" or "reconnecting" (the sending epoch expired)."""
        ks = self.keystate
        if not self.enabled or ks is None:
            return "off"
        if ks.expire_due():
            return "reconnecting"
        return "ok" if ks.send_epoch is not None else "waiting"

    # ------------------------------------------------------------------ the room's messages

    def make_intro(self, info: dict[str, Any], intro: str | None) -> str | None:
        """The client's intro for ``hello`` (``info``: the ``/api/session`` answer)."""
        if intro is not None:
            return intro
        if not self.enabled or info.get("role") != "client":
            return None
        if self.keys is None:
            self.keys = ClientKeys(str(info["room"]["id"]), self.link_info, keystate=self._new_keystate())
        assert isinstance(self.keys, ClientKeys)
        return self.keys.make_intro()

    def welcomed(self, msg: m.Welcome) -> None:
        if self.enabled and msg.role == "therapist" and self.keys is None:
            self.keys = TherapistKeys(msg.room.id, msg.pid, self.therapist_ik, s_link=self.link_info.s_link,
                                      keystate=self._new_keystate(), epoch_lifetime_ms=self.epoch_lifetime_ms)
        elif isinstance(self.keys, ClientKeys):
            self.keys.pid = msg.pid

    def sent_back(self) -> None:
        """A client went back to the waiting room: its keys and SAS are gone."""
        if isinstance(self.keys, ClientKeys):
            self.keys.reset()
            self.sas = None
            self.app_held = AppHold()  # what waited for an epoch of that membership: it will not come

    def admitted(self, grant: str | None) -> bool:
        """A client was admitted: check the grant and reveal; False (recorded) when the grant fails."""
        if not isinstance(self.keys, ClientKeys):
            return True
        try:
            self.keys.check_grant(grant, self.state.pid)
            self.sas = self.keys.sas()
            reveal = self.keys.make_reveal()
        except SecurityCheckFailed as err:
            self.failed(f"grant: {err}", kind="grant")
            return False
        self.tasks.send_soon(m.Key(to=None, data=reveal))
        return True

    def reconnected(self) -> None:
        """This participant's signaling came back (its own drop, or a restart of the server).

        The therapist keeps its epoch: its clients still hold it, media between them never stopped, and those
        the (maybe fresh) server does not list yet stay members within the resume grace (:meth:`maybe_rekey`).
        """
        self._listed = set()

    def removed_by_me(self, pid: str) -> None:
        """The therapist removed ``pid`` or sent it back: no key for it from now on, whatever the server says."""
        if not isinstance(self.keys, TherapistKeys):
            return
        self._removed_by_me.add(pid)
        self._forget(pid)
        self._admitted_clients.discard(pid)
        self.unconfirmed.pop(pid, None)
        self.maybe_rekey()

    def _forget(self, pid: str) -> None:
        assert isinstance(self.keys, TherapistKeys)
        self.keys.forget(pid)  # no key any more; a new admission starts afresh
        self.intros.pop(pid, None)
        self._intro_seen.pop(pid, None)
        self.sas_of.pop(pid, None)

    def check_intros(self) -> None:
        if not isinstance(self.keys, TherapistKeys):
            return
        for q in self.state.queue:
            if q.intro is None or self._intro_seen.get(q.pid) == q.intro:
                continue
            self._intro_seen[q.pid] = q.intro
            try:
                self.intros[q.pid] = self.keys.check_intro(q.pid, q.intro)
                self.new_people.pop(q.pid, None)
            except NewPerson as err:
                # Never re-keyed silently: shown as a new person, who needs the therapist's new Admit.
                self.intros.pop(q.pid, None)
                self.new_people[q.pid] = self.keys.newcomers[q.pid]
                self.failed(f"intro of {q.pid}: {err}", kind="new-person", pid=q.pid)
            except SecurityCheckFailed as err:
                self.failed(f"intro of {q.pid}: {err}", kind="intro", pid=q.pid)

    def grant_for(self, pid: str) -> str | None:
        """The therapist's grant for a waiting client (from its verified intro); None without E2EE."""
        if not isinstance(self.keys, TherapistKeys):
            return None
        try:
            grant = self.keys.make_grant(pid)
        except SecurityCheckFailed as err:
            self.failed(f"admit {pid}: {err}", kind="grant", pid=pid)
            raise
        if pid in self.new_people:  # the therapist's new Admit of a new person
            self.intros[pid] = self.new_people.pop(pid)
        self._removed_by_me.discard(pid)  # a new Admit
        return grant

    def maybe_rekey(self, *, force: bool = False) -> None:
        """Therapist: a new epoch whenever the set of granted, present clients changes (or a client returns).

        The server's roster is a hint: a client gets a key only if this therapist granted it (its own Admit)
        and verified its reveal, and never after this therapist removed it or sent it back. A client the server
        listed since this therapist's last connection and lists no more has left for good (left, removed, or its
        grace ran out: a client within its grace stays listed, ``connected: false``); it is forgotten and needs a
        new Admit. A client the server has not listed since then (a restarted server knows only those who
        resumed) stays a member until it is listed again, or forgotten once ``resume_grace`` has passed.
        """
        keys = self.keys
        if not isinstance(keys, TherapistKeys) or self.state.status != "admitted" or self.tasks.closing:
            return
        roster = self.state.roster
        now = self.clock()
        listed = {p for p, e in roster.items() if e.role == "client"} - self._removed_by_me
        gone: set[str] = set()
        for pid in self._admitted_clients - listed:
            if pid in self._listed:
                gone.add(pid)  # the server listed it on this connection, then not: it left for good
            elif now >= self.unconfirmed.setdefault(pid, now + self.resume_grace):
                gone.add(pid)  # not back within the grace
        for pid in gone:
            self._forget(pid)
            self.unconfirmed.pop(pid, None)
        for pid in listed:
            self.unconfirmed.pop(pid, None)
        self._listed |= listed
        self._admitted_clients = (self._admitted_clients - gone) | listed
        admitted = sorted(self._admitted_clients)
        self._schedule_grace(now)
        connected = {p for p, e in roster.items() if e.role == "client" and e.connected}
        returned = (connected - self._connected_clients) & listed
        self._connected_clients = connected
        if (returned or force) and self._epoch_members is not None:
            self._epoch_members = None  # a client came back (a reload): it holds no epoch secret any more
        members = []
        for pid in admitted:
            if keys.keyable(pid):
                members.append(pid)
            elif keys.members.get(pid) is None or keys.members[pid].n_t is None:
                if not self.refused("unkeyed", pid):
                    self.failed(f"admitted client {pid} was not granted by this therapist: no key for it",
                                kind="unkeyed", pid=pid)
        if tuple(members) == self._epoch_members:
            return
        self._epoch_members = tuple(members)
        if not members:
            return
        names = {p: e.name for p, e in roster.items() if p == keys.pid or p in members}
        result = keys.make_epoch(members, names)
        self.epochs_made.append(result.epoch)
        self.release_held_apps()
        self.tasks.send_soon(m.Key(to=None, data=result.message))
        loop = asyncio.get_running_loop()
        loop.call_later(SWITCH_TIMEOUT + 0.02, self._maybe_switch)
        self._schedule_periodic(loop)

    def _schedule_grace(self, now: float) -> None:
        """Therapist: look again when the first unlisted client's resume grace runs out."""
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        if self.unconfirmed and not self.tasks.closing:
            with contextlib.suppress(RuntimeError):  # no running loop (a unit test drives the clock)
                self._grace_timer = asyncio.get_running_loop().call_later(
                    max(0.0, min(self.unconfirmed.values()) - now) + 0.01, self.maybe_rekey)

    def _schedule_periodic(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._rekey_timer is None:
            # checked often enough that the new epoch is switched to well before the current one expires
            self._rekey_timer = loop.call_later(min(REKEY_CHECK_S, self.epoch_lifetime_ms / 8000), self._periodic)

    def _periodic(self) -> None:
        """Therapist: a new epoch well before the current one expires, even when nothing changed."""
        self._rekey_timer = None
        keys = self.keys
        if not isinstance(keys, TherapistKeys) or self.tasks.closing:
            return
        if keys.rekey_due():
            self.maybe_rekey(force=True)
        self._schedule_periodic(asyncio.get_running_loop())

    def _maybe_switch(self) -> None:
        keys = self.keys
        if not isinstance(keys, TherapistKeys) or self.tasks.closing or not keys.switch_due():
            return
        self.tasks.send_soon(m.Key(to=None, data=keys.make_switch()))

    def on_key(self, msg: m.PeerKey) -> None:
        from_pid, data = msg.from_, msg.data
        keys = self.keys
        try:
            if isinstance(keys, TherapistKeys):
                result = keys.handle_key(from_pid, data)
                if isinstance(result, SAS):
                    self.sas_of[from_pid] = result
                    self.maybe_rekey()  # granted and revealed: now it gets the key
                elif result is True:
                    self._maybe_switch()
            elif isinstance(keys, ClientKeys):
                kind = message_kind(data)
                reply = keys.handle_key(data)
                if isinstance(reply, str):
                    self.tasks.send_soon(m.Key(to=None, data=reply))
                elif kind == "epoch" and reply is None:
                    self.ignored_epochs += 1
                self.release_held_apps()
                self.state.changed.set()
        except SecurityCheckFailed as err:
            self.failed(f"key from {from_pid}: {err}", kind=message_kind(data) or "key", pid=from_pid)

    # ------------------------------------------------------------------ app messages (docs/security.md §10)

    def send_app(self, body: dict[str, Any], to: str | None = None) -> bool:
        """Seal, sign and send an app message (to everyone, or one pid); False when there is no key yet.

        Raises ValueError for a body that is not a JSON object with a string ``k`` (at most 4 KiB) or a ``to``
        this role may not send to privately (a client: the therapist only).
        """
        keys = self.keys
        if not self.enabled or keys is None:
            return False
        data = keys.make_app(body, to)
        if data is None:
            return False
        self.tasks.send_soon(m.App(to=to, data=data))
        return True

    def on_app(self, msg: m.PeerApp) -> None:
        """An app message the server relayed: kept when it verifies, otherwise refused (``refusals``, ``app``).

        One under an epoch not received yet (a member's message sent just before this participant's admission
        or its newest epoch) waits for that epoch (:class:`peer.e2ee.AppHold`: bounded in number and time) and is
        refused if it does not come; one under an epoch older than this participant's membership is ignored.
        """
        self._app_in(msg.from_, msg.data)

    def _app_in(self, from_pid: str, data: str) -> None:
        keys = self.keys
        epoch = app_epoch_of(data)
        what = keys.app_disposition(epoch) if keys is not None and epoch is not None else "open"
        if what == "ignore" and not isinstance(keys, TherapistKeys):
            self.ignored_apps += 1  # a client: sent before it was a member
            return
        if what == "ignore":  # the therapist's own epoch, whose key it lost (a restart): said, not dropped
            self.failed(f"app from {from_pid}: under an epoch whose key is gone", kind="app", pid=from_pid)
            return
        if what == "hold" and keys is not None:
            if self.app_held.hold(from_pid, data, self.clock()):
                self._schedule_hold()
                return
            self.failed(f"app from {from_pid}: too many app messages waiting for their epoch", kind="app",
                        pid=from_pid)
            return
        try:
            if keys is None:
                raise SecurityCheckFailed("app message without keys")
            got = keys.open_app(from_pid, data)
        except SecurityCheckFailed as err:
            self.failed(f"app from {from_pid}: {err}", kind="app", pid=from_pid)
            return
        self.app_messages.append((got.from_pid, got.body, got.private))
        self.state.changed.set()

    def release_held_apps(self) -> None:
        """A new epoch is here: the held app messages it (or an older membership) settles, in arrival order."""
        keys = self.keys
        if keys is None or not len(self.app_held):
            return

        def still_early(data: str) -> bool:
            epoch = app_epoch_of(data)
            return epoch is not None and keys.app_disposition(epoch) == "hold"
        for from_pid, data in self.app_held.release(still_early):
            self._app_in(from_pid, data)

    def expire_held_apps(self) -> None:
        """Refuse the held app messages whose epoch did not come in time (``clock``)."""
        self._hold_timer = None
        for from_pid, _ in self.app_held.expired(self.clock()):
            self.failed(f"app from {from_pid}: its epoch did not come", kind="app", pid=from_pid)
        self._schedule_hold()

    def _schedule_hold(self) -> None:
        deadline = self.app_held.next_deadline()
        if deadline is None or self._hold_timer is not None or self.tasks.closing:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: the caller drives expire_held_apps
            self._hold_timer = asyncio.get_running_loop().call_later(
                max(0.0, deadline - self.clock()) + 0.01, self.expire_held_apps)

    # ------------------------------------------------------------------ media and SDP

    def encrypt(self, kind: str, frame: bytes) -> bytes | None:
        keys = self.keys
        return keys.keystate.encrypt(kind, frame) if keys is not None else None  # type: ignore[arg-type]

    def decrypt_from(self, pid: str | None, kind: str, data: bytes) -> bytes | None:
        keys = self.keys
        if keys is None or pid is None:
            return None
        return keys.keystate.decrypt_from(kind, data, pid)  # type: ignore[arg-type]

    def protect(self, pc: RTCPeerConnection, peer_of: Callable[[RTCRtpTransceiver], str | None]) -> None:
        """VP8/Opus only, and (E2EE) SFrame transforms on every sender and receiver of ``pc``, with less
        metadata in clear: no audio level or other header extension the transport does not need, Opus CBR."""
        if self.enabled:
            hooks.limit_metadata(pc)
        for t in pc.getTransceivers():
            prefer_vp8_opus(t)
            if not self.enabled:
                continue
            hooks.set_sender_transform(t.sender, self.encrypt)
            hooks.set_receiver_transform(t.receiver, self._receive_transform(t, peer_of))

    def _receive_transform(self, t: RTCRtpTransceiver, peer_of: Callable[[RTCRtpTransceiver], str | None]
                           ) -> Callable[[str, bytes], bytes | None]:
        def transform(kind: str, data: bytes) -> bytes | None:
            return self.decrypt_from(peer_of(t), kind, data)
        return transform

    async def verified(self, pid: str, sdp_type: str, sdp: str, sig: str | None) -> bool:
        """Check a peer's signed SDP (E2EE) BEFORE ``setRemoteDescription``; False (recorded) if it fails."""
        keys = self.keys
        if not self.enabled:
            return True
        if keys is None:
            self.failed(f"{sdp_type} from {pid} before any key")
            return False
        if isinstance(keys, ClientKeys):
            entry = self.state.roster.get(pid)
            if entry is None or entry.role != "therapist":
                # another client: its key comes only from the therapist-signed roster; wait for that epoch
                with contextlib.suppress(TimeoutError):
                    await self.state.wait_until(lambda: pid in keys.roster, 5.0, f"{pid} in the signed roster",
                                                self.who())
        try:
            keys.verify_sdp(pid, sdp_type, sdp, sig)
        except SecurityCheckFailed as err:
            self.failed(f"{sdp_type} from {pid}: {err}", kind="sdp", pid=pid)
            return False
        return True

    def sign(self, pid: str, sdp_type: str, sdp: str) -> str | None:
        if not self.enabled or self.keys is None:
            return None
        return self.keys.sign_sdp(pid, sdp_type, sdp)

    def decrypt_failures(self) -> int:
        """Frames that failed SFrame authentication (all peers)."""
        ks = self.keystate
        return ks.counters["failed"] if ks is not None else 0
