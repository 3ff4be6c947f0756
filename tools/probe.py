"""A synthetic end-to-end check of a running Alcove server with real aiortc peers and real media.

``run_probe(server, scenario, admin_key=...)`` creates a room through the admin API, joins a therapist and
client(s) and checks one scenario:

* ``basic``   — the waiting room holds the client (no peer connection, no media), admission, frames both ways
  for ``duration`` seconds;
* ``decline`` — the therapist declines and blocks; the client's socket is closed (4010) and its link refused afterwards;
* ``end``     — a room of ``duration`` seconds; media flows until the server's hard end, every socket gets
  ``session-ended`` and every link is refused afterwards (real clock);
* ``resume``  — the admitted client drops its websocket (keeping its peer connection), reconnects with its
  resume credential and is back in the room without a new admission, media uninterrupted;
* ``wrong-key`` — an E2EE room (links with ``s``/``tk``, as the therapist UI makes them) of at least two
  clients where the last client installs corrupted epoch keys: it decodes 0 frames (and nobody decodes its
  frames) while the others decode each other; figures: frames per receiver and sender, decrypt failures;
* ``mitm``    — the probe puts its own fingerprint-swapping relay (``tools.mitm.MitmProxy``) between its peers
  and the server; ok only if both peers refuse the SDP (security failure recorded) and never connect;
* ``group``   — a ``--clients N`` family/group room with topology ``sfu`` and E2EE: every peer receives frames
  from every other peer through the SFU; ``figures.server_decoded_frames`` is the server's
  ``alcove_sfu_decoded_frames`` gauge from ``/metrics`` (must be 0; ``null`` when the server does not expose it);
* ``sendback`` — the therapist admits the client, keeps nothing of it but sends it back to the waiting room; the
  client leaves and comes back with a new ticket of its link and the resume credential it was given while admitted
  (what a client that wants to let itself back in would do); ok only if it is ``waiting`` again, gets no roster and
  no ICE servers, and shows up in the therapist's queue; figures: the replayed credential's answer;
* ``ghost``   — an E2EE room behind the probe's own hostile relay (``tools.hostile.HostileProxy``): it queues a
  ghost participant with a valid intro and puts it in every roster (never admitted by the therapist), then the
  therapist admits the real client; ok only if the ghost opens no epoch (every wrapped key of every epoch the
  relay saw, tried with the ghost's keys), decrypts no frame of either peer, and the real peers' media flows;
  figures: epochs seen, epochs and frames the ghost opened, the therapist's refusals;
* ``relay``   — every peer is relay-only (``iceTransportPolicy`` RELAY with the server's TURN credentials); ok
  only if media flows and every selected candidate pair is relay↔relay; figures: the pair types;
* ``echo``    — the pre-join connectivity test: with a client link's token only (no admission), the probe asks
  ``/api/echo/ice``, calls the server's echo peer through ``/api/echo/offer`` and checks that its own audio and
  video come back; figures: the time to the answer and to the first returned frame, frames returned, the
  selected candidate pair types, whether TURN credentials were offered and how long they live;
* ``chat``    — end-to-end encrypted app messages (docs/security.md §10) in an E2EE room of at least two clients,
  behind the probe's own recording relay (``tools.mitm.MitmProxy`` with ``record=True``): the therapist writes to
  everyone and privately to the second client, the first client to everyone and privately to the therapist, each
  message carrying a fresh random marker; ok only if every message arrives decrypted where it should (and a private
  one nowhere else), nothing is refused, and no marker appears in anything the relay carried either way; figures:
  messages sent and received, the slowest delivery, frames and app messages relayed, markers seen in the relay.

It returns ``{"ok", "scenario", "figures", "error"}``; the CLI decides the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec

from peer.e2ee import ClientKeys, b64e, message_kind, pub_raw, tk_of, unwrap_any
from peer.participant import Participant
from peer.sframe import FrameKind
from peer.signaling_client import JoinRefused, SignalingClient, base_of
from rtc.aiortc_hooks import allow_loopback_candidates, selected_pair_types
from rtc.urls import sdp_candidate_types
from tools import admin_client
from tools.hostile import HostileProxy
from tools.mitm import MitmProxy
from tools.wrong_key import keystate_factory

__all__ = ["SCENARIOS", "ProbeFailure", "run_probe"]

SCENARIOS = ("basic", "decline", "end", "resume", "wrong-key", "mitm", "group", "relay", "sendback", "echo", "ghost",
             "chat")
MIN_VIDEO = 11
MIN_AUDIO = 10
MEDIA_UNREACHABLE = "the media server has no reachable address"
"""Reported, instead of a timeout, when the SFU answers an offer with ``media-unreachable``."""


class ProbeFailure(Exception):
    """A check of the probe failed."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise ProbeFailure(what)


def _media_unreachable(p: Participant) -> bool:
    return any(e.code == "media-unreachable" for e in p.errors)


async def _wait_frames(x: Participant, pid: str, timeout: float = 20) -> None:
    """``x`` gets frames from ``pid``; fails at once (not after ``timeout``) when the SFU cannot be reached."""
    def done() -> bool:
        f = x.frames_from(pid)
        return _media_unreachable(x) or (f["video"] >= MIN_VIDEO and f["audio"] >= MIN_AUDIO)
    await x.wait_until(done, timeout, f"{MIN_VIDEO} video/{MIN_AUDIO} audio frames from {pid}")
    _check(not _media_unreachable(x), MEDIA_UNREACHABLE)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def create_room(server: str, admin_key: str, body: dict[str, Any], *, insecure: bool = True) -> dict[str, Any]:
    """``POST /api/rooms`` with the admin key."""
    connector = aiohttp.TCPConnector(ssl=False if insecure else True)
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            return await admin_client.create_room(http, base_of(server), admin_key, body,
                                                  ssl_context=False if insecure else True)
        except admin_client.RoomNotCreated as err:
            raise ProbeFailure(str(err)) from None


async def _refused(server: str, link: str, insecure: bool) -> str | None:
    """The error code with which the server refuses ``link`` now (``None`` if it lets it in)."""
    try:
        sc = await SignalingClient.open(server, link, name="Probe check", insecure=insecure)
    except JoinRefused as err:
        return err.code
    await sc.close()
    return None


async def run_probe(server: str, scenario: str, *, duration: float = 15.0, clients: int = 1, admin_key: str,
                    insecure: bool = True) -> dict[str, Any]:
    """Run one scenario against ``server`` (``https://host:port``); never raises for a failed check."""
    figures: dict[str, Any] = {}
    result: dict[str, Any] = {"ok": False, "scenario": scenario, "figures": figures, "error": None}
    if scenario not in SCENARIOS:
        result["error"] = f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})"
        return result
    if not 1 <= clients <= 10:
        result["error"] = "clients is between 1 and 10"
        return result
    if _is_loopback(server):
        allow_loopback_candidates()
    probe = _Probe(base_of(server), admin_key, insecure, duration, clients, figures)
    started = time.monotonic()
    try:
        await getattr(probe, scenario.replace("-", "_"))()
        result["ok"] = True
    except (ProbeFailure, JoinRefused, TimeoutError, aiohttp.ClientError, OSError) as err:
        result["error"] = f"{type(err).__name__}: {err}"
    finally:
        with contextlib.suppress(Exception):
            await probe.cleanup()
        figures["total_s"] = round(time.monotonic() - started, 3)
    return result


class _Probe:
    def __init__(self, server: str, admin_key: str, insecure: bool, duration: float, clients: int,
                 figures: dict[str, Any]) -> None:
        self.server = server
        self.admin_key = admin_key
        self.insecure = insecure
        self.duration = duration
        self.n = clients
        self.figures = figures
        self.room: dict[str, Any] = {}
        self.therapist: Participant | None = None
        self.clients: list[Participant] = []
        self.keep_room = False
        self.proxy: Any = None

    def _e2ee_links(self, ik: ec.EllipticCurvePrivateKey) -> tuple[str, list[str]]:
        """The invite links as the therapist UI makes them: ``s`` for everyone, ``tk`` for the clients."""
        s = b64e(os.urandom(32))
        tk = b64e(tk_of(pub_raw(ik)))
        return (self.room["therapist_link"] + f"&s={s}",
                [link + f"&s={s}&tk={tk}" for link in self.room["client_links"]])

    # ------------------------------------------------------------------ steps

    async def _setup(self, seconds: float | None = None, *, e2ee: bool = False, topology: str = "mesh",
                     via: str | None = None, wrong: tuple[int, ...] = (), relay_only: bool = False) -> None:
        kind = "individual" if self.n == 1 else "couple" if self.n == 2 else "family" if self.n <= 6 else "group"
        body: dict[str, Any] = {"type": kind, "clients": self.n, "topology": topology, "host": "Probe therapist"}
        if seconds is not None:
            body["duration_seconds"] = seconds
        started = time.monotonic()
        self.room = await create_room(self.server, self.admin_key, body, insecure=self.insecure)
        self.figures["room_id"] = self.room["room_id"]
        server = via or self.server
        t_link, c_links = self.room["therapist_link"], list(self.room["client_links"])
        ik = None
        if e2ee:
            ik = ec.generate_private_key(ec.SECP256R1())
            t_link, c_links = self._e2ee_links(ik)
        self.therapist = await Participant.join(server, t_link, name="Probe therapist", insecure=self.insecure,
                                                therapist_ik=ik, relay_only=relay_only)
        for i, link in enumerate(c_links):
            self.clients.append(await Participant.join(server, link, name=f"Probe client {i + 1}",
                                                       insecure=self.insecure, **keystate_factory(i in wrong),
                                                       relay_only=relay_only))
        self.figures["join_ms"] = round((time.monotonic() - started) * 1000, 1)
        await self._check_waiting()

    async def _check_waiting(self) -> None:
        t = self.therapist
        assert t is not None
        pids = {c.pid for c in self.clients}
        await t.wait_until(lambda: pids <= {q.pid for q in t.queue}, 10, "seeing every client in the queue")
        await asyncio.sleep(0.5)  # time enough for a (wrong) peer connection to appear
        for c in self.clients:
            _check(c.status == "waiting", f"{c.name} is {c.status}, not waiting")
            _check(not c.links and not c.roster, f"{c.name} has a peer connection or a roster while waiting")
        _check(not t.links, "the therapist has a peer connection to a waiting client")
        _check(all(f == {"video": 0, "audio": 0} for c in self.clients for f in c.frames().values()),
               "media reached a waiting client")

    async def _admit_all(self, *, expect_frames: bool = True) -> None:
        t = self.therapist
        assert t is not None
        admit_at: dict[str, float] = {}
        for c in self.clients:
            if t.e2ee:
                await t.wait_until(lambda c=c: c.pid in t.intros, 10, "a verified intro")  # type: ignore[misc]
            admit_at[c.pid] = time.monotonic()
            await t.admit(c.pid)
            await c.wait_until(lambda c=c: bool(c.status == "admitted"), 10, "admitted")  # type: ignore[misc]
        if not expect_frames:
            return
        everyone = [t, *self.clients]
        for x in everyone:
            for y in everyone:
                if x is not y:
                    await _wait_frames(x, y.pid)
        delays = []
        for c in self.clients:
            first = c.first_frame_at(t.pid)
            if first is not None:
                delays.append(first - admit_at[c.pid])
        self.figures["admit_to_first_frame_ms"] = round(max(delays) * 1000, 1) if delays else None

    def _who(self, p: Participant) -> str:
        return "therapist" if p is self.therapist else f"client{self.clients.index(p) + 1}"

    def _frames(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for p in [self.therapist, *self.clients]:
            if p is None:
                continue
            total = {"video": 0, "audio": 0}
            if p.sfu_room:
                for counts in p.sfu_frames.values():
                    for kind, n in counts.items():
                        total[kind] += n
            for link in [*p.links.values(), *p.closed_links]:
                for kind, n in link.frames().items():
                    total[kind] += n
            out[self._who(p)] = total
        return out

    def _frames_by_peer(self) -> dict[str, dict[str, int]]:
        """Video frames each participant received from each other one (``{receiver: {sender: n}}``)."""
        everyone = [p for p in [self.therapist, *self.clients] if p is not None]
        return {self._who(x): {self._who(y): x.frames_from(y.pid)["video"] for y in everyone if y is not x}
                for x in everyone}

    async def _flow(self, seconds: float) -> None:
        """Media keeps flowing both ways for ``seconds``."""
        before = self._frames()
        await asyncio.sleep(seconds)
        after = self._frames()
        for who, counts in after.items():
            grew = counts["video"] - before.get(who, {}).get("video", 0)
            _check(grew >= min(5, int(seconds * 5)), f"{who}'s incoming video stalled ({grew} frames)")
        if seconds > 0:
            self.figures["video_fps"] = {
                who: round((after[who]["video"] - before[who]["video"]) / seconds / max(self.n, 1), 1)
                for who in after}

    # ------------------------------------------------------------------ scenarios

    async def basic(self) -> None:
        await self._setup()
        await self._admit_all()
        await self._flow(self.duration)
        self.figures["frames"] = self._frames()

    async def decline(self) -> None:
        await self._setup()
        t, c = self.therapist, self.clients[0]
        assert t is not None and c.sc is not None
        started = time.monotonic()
        await t.decline(c.pid, "The probe declines you.", block=True)
        await c.wait_until(lambda: c.status == "declined", 10, "declined")
        code = await c.sc.wait_closed(10)
        self.figures["decline_to_close_ms"] = round((time.monotonic() - started) * 1000, 1)
        _check(code == 4010, f"the declined client's socket closed with {code}, not 4010")
        _check(not c.links, "the declined client has a peer connection")
        refused = await _refused(self.server, self.room["client_links"][0], self.insecure)
        _check(refused == "token-revoked", f"the declined link is not refused (got {refused})")
        self.figures["refused_with"] = refused
        self.figures["frames"] = self._frames()

    async def end(self) -> None:
        await self._setup(seconds=max(self.duration, 1.0))
        await self._admit_all()
        t = self.therapist
        assert t is not None and t.ends_at is not None
        everyone = [t, *self.clients]
        wait = max(_ts(t.ends_at) - time.time(), 0) + 30
        await t.wait_until(lambda: all(p.status == "ended" for p in everyone), wait, "ended by the server")
        ended_at = time.time()
        self.figures["end_skew_ms"] = round((ended_at - _ts(t.ends_at)) * 1000, 1)
        for p in everyone:
            _check(p.ended_reason == "time", f"{p.name} ended with reason {p.ended_reason}")
            assert p.sc is not None
            code = await p.sc.wait_closed(10)
            _check(code == 1000, f"{p.name}'s socket closed with {code}, not 1000")
            _check(not p.links, f"{p.name} kept a peer connection after the end")
        self.figures["frames"] = self._frames()
        refusals: set[str] = set()
        for link in [self.room["therapist_link"], *self.room["client_links"]]:
            refused = await _refused(self.server, link, self.insecure)
            _check(refused in ("room-ended", "token-revoked"), f"a link is not refused after the end (got {refused})")
            refusals.add(str(refused))
        self.figures["refused_with"] = sorted(refusals)
        self.keep_room = True  # already ended

    async def resume(self) -> None:
        await self._setup()
        await self._admit_all()
        t, c = self.therapist, self.clients[0]
        assert t is not None
        link = c.links[t.pid]
        await c.drop_signaling()
        await t.wait_until(lambda: c.pid in t.roster and not t.roster[c.pid].connected, 10,
                           "seeing the client disconnected")
        await self._flow(min(self.duration, 2.0))  # media does not depend on the websocket
        mark = c.mark()
        started = time.monotonic()
        welcome = await c.reconnect()
        self.figures["resume_ms"] = round((time.monotonic() - started) * 1000, 1)
        _check(welcome.pid == c.pid, "the resumed client got a new pid")
        _check(welcome.status == "admitted", f"the resumed client is {welcome.status}, not admitted")
        await asyncio.sleep(0.2)
        _check(not any(type(x).__name__ == "Admitted" for x in c.log[mark:]), "the resumed client was re-admitted")
        await t.wait_until(lambda: c.pid in t.roster and t.roster[c.pid].connected, 10, "seeing the client back")
        _check(c.links.get(t.pid) is link, "the client's peer connection was replaced")
        await self._flow(max(self.duration - 2.0, 1.0))
        self.figures["frames"] = self._frames()

    async def sendback(self) -> None:
        self.n = 1
        await self._setup()
        t, c = self.therapist, self.clients[0]
        assert t is not None and c.sc is not None
        waiting_credential = c.resume_credential
        await self._admit_all(expect_frames=False)
        await c.wait_until(lambda: c.resume_credential != waiting_credential, 10, "an admitted resume credential")
        admitted_credential = c.resume_credential
        await t.send_to_waiting(c.pid)
        await c.wait_until(lambda: c.status == "waiting", 10, "sent back to the waiting room")
        await c.leave()
        await t.wait_until(lambda: all(q.pid != c.pid for q in t.queue), 10, "seeing the client leave")
        started = time.monotonic()
        replay = await SignalingClient.open(self.server, self.room["client_links"][0], resume=admitted_credential,
                                            insecure=self.insecure)
        try:
            assert replay.welcome is not None
            self.figures["replay_ms"] = round((time.monotonic() - started) * 1000, 1)
            self.figures["replayed_status"] = replay.welcome.status
            _check(replay.welcome.status == "waiting",
                   f"the sent-back client let itself back in with its old credential ({replay.welcome.status})")
            await t.wait_until(lambda: any(q.pid == replay.pid for q in t.queue), 10, "the replayer in the queue")
            await asyncio.sleep(0.3)  # time enough for a roster or ICE servers to arrive
            got = sorted({str(type(x).__struct_config__.tag) for x in replay.pending()})
            self.figures["replay_received"] = got
            _check(not {"roster", "ice-servers", "admitted"} & set(got), f"the replayer received {got}")
            _check(replay.pid not in t.roster, "the replayer is on the therapist's roster")
        finally:
            await replay.close()

    async def wrong_key(self) -> None:
        self.n = max(self.n, 2)
        await self._setup(e2ee=True, wrong=(self.n - 1,))
        await self._admit_all(expect_frames=False)
        t = self.therapist
        assert t is not None
        bad, good = self.clients[-1], [t, *self.clients[:-1]]
        for x in good:
            for y in good:
                if x is not y:
                    await _wait_frames(x, y.pid)
        await bad.wait_until(lambda: bad.decrypt_failures() > 20, 10, "failing to decrypt")
        await asyncio.sleep(max(self.duration, 1.0))
        self.figures["frames_by_peer"] = self._frames_by_peer()
        self.figures["decrypt_failures"] = {self._who(p): p.decrypt_failures() for p in [*good, bad]}
        for y in good:
            _check(bad.frames_from(y.pid) == {"video": 0, "audio": 0},
                   f"the wrong-key client decoded frames from {self._who(y)}")
            _check(y.frames_from(bad.pid) == {"video": 0, "audio": 0},
                   f"{self._who(y)} decoded frames of the wrong-key client")
        await self._flow_between(good, max(self.duration, 1.0))
        self.figures["frames"] = self._frames()

    async def _flow_between(self, peers: list[Participant], seconds: float) -> None:
        before = {(x.pid, y.pid): x.frames_from(y.pid)["video"] for x in peers for y in peers if x is not y}
        await asyncio.sleep(seconds)
        for (a, b), n in before.items():
            x = next(p for p in peers if p.pid == a)
            grew = x.frames_from(b)["video"] - n
            _check(grew >= min(5, int(seconds * 5)), f"video from {b} to {a} stalled ({grew} frames)")

    async def mitm(self) -> None:
        self.proxy = await MitmProxy(self.server, rewrite=True, insecure=self.insecure).start()
        self.n = 1
        await self._setup(e2ee=True, via=self.proxy.url)
        await self._admit_all(expect_frames=False)
        t, c = self.therapist, self.clients[0]
        assert t is not None
        await t.wait_until(lambda: bool(t.security_failures) and bool(c.security_failures), 15,
                           "both peers refusing the swapped fingerprints")
        await asyncio.sleep(max(min(self.duration, 5.0), 2.0))
        self.figures["rewritten_sdp"] = self.proxy.rewritten
        self.figures["forged_answers"] = self.proxy.forged_answers
        self.figures["security_failures"] = {"therapist": list(t.security_failures),
                                             "client1": list(c.security_failures)}
        self.figures["frames"] = self._frames()
        for p in (t, c):
            _check(not p.ever_connected(), f"{self._who(p)} connected through the middleman")
        _check(self.figures["frames"] == {"therapist": {"video": 0, "audio": 0}, "client1": {"video": 0, "audio": 0}},
               "media flowed through the middleman")

    async def chat(self) -> None:
        relay = MitmProxy(self.server, rewrite=False, insecure=self.insecure, record=True)
        self.proxy = relay
        await relay.start()
        self.n = max(self.n, 2)
        await self._setup(e2ee=True, via=relay.url)
        await self._admit_all(expect_frames=False)
        t, c1, c2 = self.therapist, self.clients[0], self.clients[1]
        assert t is not None and t.pid is not None
        everyone = [t, *self.clients]
        await t.wait_until(lambda: all(p.keys is not None and p.keys.can_send_app() for p in everyone), 15,
                           "app keys on every side")
        marker = "alcove-probe-" + b64e(os.urandom(12))
        plan: list[tuple[Participant, str | None, list[Participant]]] = [
            (t, None, self.clients),            # therapist -> everyone
            (c1, None, [t, *self.clients[1:]]),  # client -> everyone
            (t, c2.pid, [c2]),                   # therapist -> one client, privately
            (c1, t.pid, [t]),                    # client -> therapist, privately
        ]
        delivery = []
        for i, (sender, to, receivers) in enumerate(plan):
            text = f"{marker} {i}"
            sent_at = time.monotonic()
            _check(sender.send_app({"k": "chat", "text": text}, to), f"{self._who(sender)} had no key to send with")
            for r in receivers:
                got = await r.wait_app(lambda a, text=text: a[1].get("text") == text, 10)  # type: ignore[misc]
                _check(got[0] == sender.pid and got[2] == (to is not None),
                       f"{self._who(r)} got message {i} from the wrong sender or privacy")
            delivery.append(time.monotonic() - sent_at)
        await asyncio.sleep(0.3)  # a private message that went astray would have arrived by now
        for p in everyone:
            for _, body, _private in p.app_messages:
                i = int(str(body.get("text", "")).rsplit(" ", 1)[-1])
                _check(p in plan[i][2], f"{self._who(p)} received message {i}, not meant for it")
        recorded = relay.recorded or []
        self.figures["messages_sent"] = len(plan)
        self.figures["messages_received"] = sum(len(p.app_messages) for p in everyone)
        self.figures["slowest_delivery_ms"] = round(max(delivery) * 1000, 1)
        self.figures["relayed_frames"] = len(recorded)
        self.figures["relayed_app_messages"] = sum('"type":"app"' in f.replace(" ", "") for f in recorded)
        self.figures["markers_in_relay"] = sum(marker in f for f in recorded)
        self.figures["refusals"] = sum(len(p.e2ee_glue.refused("app")) for p in everyone)
        _check(self.figures["messages_received"] == sum(len(r) for _, _, r in plan), "a message did not arrive")
        _check(self.figures["relayed_app_messages"] > 0, "the relay carried no app message (not on the path)")
        _check(self.figures["markers_in_relay"] == 0, "the plaintext appeared in what the server relayed")
        _check(self.figures["refusals"] == 0, "an app message was refused")

    async def ghost(self) -> None:
        relay = HostileProxy(self.server, insecure=self.insecure)
        self.proxy = relay
        await relay.start()
        self.n = 1
        await self._setup(e2ee=True, via=relay.url)
        t, c = self.therapist, self.clients[0]
        assert t is not None and t.pid is not None and c.pid is not None
        ghost_pid = "p_ghost" + b64e(os.urandom(6))
        ghost = ClientKeys(self.room["room_id"], pid=ghost_pid)
        self.figures["ghost"] = ghost_pid
        relay.extra_queue.append({"pid": ghost_pid, "name": "Probe ghost", "since": "2026-01-01T00:00:00Z",
                                  "connected": True, "intro": ghost.make_intro()})
        await relay.resend(t.pid)
        await t.wait_until(lambda: ghost_pid in t.intros, 10, "the ghost's intro checked by the therapist")
        relay.extra_queue.clear()
        relay.extra_roster.append({"pid": ghost_pid, "role": "client", "name": "Probe ghost", "connected": True})
        for p in (t, c):
            await relay.resend(str(p.pid))
        await t.wait_until(lambda: ghost_pid in t.roster, 10, "the forged roster at the therapist")
        await self._admit_all()  # a new epoch is made while the ghost sits in the forged roster
        await self._flow(max(min(self.duration, 5.0), 1.0))
        epochs = [data for _, data in relay.keys_seen if message_kind(data) == "epoch"]
        keys = [k for _, k in ghost.hpke_keys]
        opened = sum(unwrap_any(data, self.room["room_id"], keys) is not None for data in epochs)
        decrypted = 0
        for sender in (t, c):
            ks = sender.keystate
            assert ks is not None
            samples: tuple[tuple[FrameKind, bytes], ...] = (
                ("video", bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]) + os.urandom(400)),
                ("audio", b"\xfc" + os.urandom(60)))
            for kind, frame in samples:
                sealed = ks.encrypt(kind, frame)
                if sealed is not None:
                    for who in (t.pid, c.pid, ghost_pid):
                        decrypted += ghost.keystate.decrypt_from(kind, sealed, who) is not None
        self.figures["epochs_seen"] = len(epochs)
        self.figures["epochs_opened_by_ghost"] = opened
        self.figures["frames_decrypted_by_ghost"] = decrypted
        self.figures["therapist_refusals"] = sorted({str(r["what"]) for r in t.refusals if r["pid"] == ghost_pid})
        self.figures["frames"] = self._frames()
        _check(bool(epochs), "no epoch passed the relay: nothing to try")
        _check(opened == 0, f"the ghost opened {opened} epoch(s)")
        _check(decrypted == 0, f"the ghost decrypted {decrypted} frame(s)")
        _check(all(ghost_pid not in data for data in epochs), "an epoch names the ghost")

    async def group(self) -> None:
        await self._setup(e2ee=True, topology="sfu")
        started = time.monotonic()
        await self._admit_all()
        self.figures["admit_to_all_frames_ms"] = round((time.monotonic() - started) * 1000, 1)
        everyone = [p for p in [self.therapist, *self.clients] if p is not None]
        _check(all(p.sfu_room for p in everyone), "the room is not an SFU room")
        await self._flow_between(everyone, max(self.duration, 1.0))
        self.figures["frames_by_peer"] = self._frames_by_peer()
        self.figures["frames"] = self._frames()
        self.figures["server_decoded_frames"] = await self._server_decoded_frames()
        decoded = self.figures["server_decoded_frames"]
        _check(decoded in (None, 0), f"the SFU decoded {decoded} frames")

    async def _server_decoded_frames(self) -> int | None:
        connector = aiohttp.TCPConnector(ssl=False if self.insecure else True)
        try:
            async with aiohttp.ClientSession(connector=connector) as http, http.get(
                    f"{self.server}/metrics", headers={"Authorization": f"Bearer {self.admin_key}"}) as r:
                if r.status != 200:
                    return None
                text = await r.text()
        except aiohttp.ClientError:
            return None
        for line in text.splitlines():
            if line.startswith("alcove_sfu_decoded_frames"):
                return int(float(line.split()[-1]))
        return None

    async def relay(self) -> None:
        await self._setup(relay_only=True)
        t = self.therapist
        assert t is not None
        await self._admit_all(expect_frames=False)
        everyone = [t, *self.clients]
        for p in everyone:
            await p.wait_until(lambda p=p: p.ice_known, 10, "ice servers")  # type: ignore[misc]
            _check(any("turn:" in str(s.get("urls")) for s in p.ice_servers),
                   f"the server offered {self._who(p)} no TURN server")
        for x in everyone:
            for y in everyone:
                if x is not y:
                    await x.wait_frames(y.pid, video=MIN_VIDEO, audio=MIN_AUDIO, timeout=30)
        await self._flow(max(self.duration, 1.0))
        pairs: dict[str, list[list[str]]] = {}
        local_types: set[str] = set()
        for p in everyone:
            for pid, link in p.links.items():
                found = selected_pair_types(link.pc)
                pairs[f"{self._who(p)}->{pid}"] = [list(x) for x in found]
                local_types.update(sdp_candidate_types(link.pc.localDescription.sdp if link.pc.localDescription
                                                       else None))
                _check(bool(found), f"no selected candidate pair on {self._who(p)}'s link")
                _check(all(x == ("relay", "relay") for x in found), f"a non-relay pair was selected: {found}")
        self.figures["candidate_pairs"] = pairs
        self.figures["local_candidate_types"] = sorted(local_types)
        _check(local_types == {"relay"}, f"non-relay candidates were offered: {sorted(local_types)}")
        self.figures["frames"] = self._frames()

    async def echo(self) -> None:
        """The pre-join test as a waiting client runs it: the link's token, the echo peer, media back."""
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from peer.media import SyntheticAudioTrack, SyntheticVideoTrack, TrackSink
        from peer.signaling_client import token_of
        from rtc.codecs import prefer_vp8_opus_all
        from rtc.ice import aiortc_configuration

        self.room = await create_room(self.server, self.admin_key, {"type": "individual", "clients": 1},
                                      insecure=self.insecure)
        self.figures["room_id"] = self.room["room_id"]
        token = token_of(self.room["client_links"][0])
        connector = aiohttp.TCPConnector(ssl=False if self.insecure else True)
        async with aiohttp.ClientSession(connector=connector) as http:
            async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with http.post(self.server + path, json=body) as resp:
                    data: dict[str, Any] = await resp.json()
                    _check(resp.status == 200, f"{path}: {resp.status} {data.get('error')}")
                    return data

            started = time.monotonic()
            ice = await post("/api/echo/ice", {"token": token})
            servers = list(ice["ice_servers"])
            self.figures["turn_offered"] = any("turn" in str(s.get("urls")) for s in servers)
            self.figures["turn_lifetime_s"] = ice["expires_in"] if servers else None
            pc = RTCPeerConnection(aiortc_configuration(servers, relay_only=False, bundle=True))
            sinks: dict[str, TrackSink] = {}
            pc.on("track", lambda track: sinks.setdefault(track.kind, TrackSink(track).start()))
            sources = [SyntheticVideoTrack(), SyntheticAudioTrack()]
            try:
                for track in sources:
                    pc.addTrack(track)
                prefer_vp8_opus_all(pc)
                await pc.setLocalDescription(await pc.createOffer())
                answer = await post("/api/echo/offer", {"token": token, "sdp": pc.localDescription.sdp})
                self.figures["answer_ms"] = round((time.monotonic() - started) * 1000, 1)
                self.figures["limit_s"] = answer["limit_s"]
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
                within = min(8.0, float(answer["limit_s"]) - 1)
                for kind, count in (("video", MIN_VIDEO), ("audio", MIN_AUDIO)):
                    if kind in sinks:
                        await sinks[kind].wait_frames(count, within)
                first = [s.first_frame_time for s in sinks.values() if s.first_frame_time is not None]
                self.figures["first_frame_ms"] = round((max(first) if first else 0) * 1000, 1) or None
                self.figures["frames_returned"] = {k: s.frames for k, s in sorted(sinks.items())}
                self.figures["candidate_pairs"] = [list(x) for x in selected_pair_types(pc)]
                _check("video" in sinks and sinks["video"].frames >= MIN_VIDEO, "the echo peer returned no video")
                _check("audio" in sinks and sinks["audio"].frames >= MIN_AUDIO, "the echo peer returned no audio")
            finally:
                for sink in sinks.values():
                    await sink.stop()
                await pc.close()

    # ------------------------------------------------------------------ cleanup

    async def cleanup(self) -> None:
        t = self.therapist
        if t is not None and t.connected and not self.keep_room:
            with contextlib.suppress(Exception):
                await t.end()
                await t.wait_until(lambda: t.status == "ended", 5)
        for p in [*self.clients, t]:
            if p is not None:
                await p.close()
        if self.proxy is not None:
            await self.proxy.stop()
