"""Faults rehearsed (issue 10, item 7), in the loopback-only namespace with Python participants: the server
killed (``kill -9``) or stopped for a deploy (SIGTERM) mid-session and started again, the server frozen for 2 s
(SIGSTOP/SIGCONT), a client's network cut for 5 s and for longer than the grace.

Mesh media is peer to peer: it must go on through a signaling outage, and everyone must be back in the room
without a new admission within 10 s of the new server listening (the figure is printed: ``-s``).
Everyone has end-to-end encryption on, and the therapist comes back first: the restarted server lists nobody
else yet, and the therapist keeps its clients in the signed membership within the resume grace (the roster is
a hint, peer/e2ee_glue.py), so their frames decrypt on both sides of the restart, with nothing refused.
The therapist's crash and return within and after the grace, and the session's end with people in it, are in
test_participant_signaling.py (``test_therapist_drop_return_and_grace``, ``test_hard_end_closes_everyone``).

Group media (the SFU) survives the same restart: its worker processes outlive the signaling process and the new
one adopts them (docs/sfu.md §4); the longest gap in the frames each participant decodes is printed and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.e2ee import TherapistKeys, b64e, pub_raw, tk_of
from peer.participant import Participant

pytestmark = [pytest.mark.media, pytest.mark.integration, pytest.mark.usefixtures("media_namespace")]

ROOT = Path(__file__).resolve().parents[2]
BACK_WITHIN = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``alcove serve`` as operators run it (plain HTTP on loopback), restartable on the same port and data."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.extra_env = env
        self.port = free_port()
        self.admin_key = secrets.token_urlsafe(24)
        self.data = tmp_path / "data"
        self.log = tmp_path / "server.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> float:
        """Start and wait until it listens; returns that moment (monotonic)."""
        env = {**os.environ, "ALCOVE_DATA_DIR": str(self.data), "ALCOVE_ADMIN_KEY": self.admin_key,
               **self.extra_env}
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tools.cli", "serve", "--no-tls", "--host", "127.0.0.1",
                "--port", str(self.port), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        async with asyncio.timeout(20):
            while b"serving" not in (line := await self.proc.stdout.readline()):
                assert line, "the server exited"
        return time.monotonic()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), 15)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for pid in workers_of(self):  # SFU workers outlive the server by design: end them with the test
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    async def create_room(self, **body: Any) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.url}/api/rooms", json={"start": "now", **body},
                headers={"Authorization": f"Bearer {self.admin_key}"}) as r:
            assert r.status == 201
            data: dict[str, Any] = await r.json()
            return data


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    s = ServerProcess(tmp_path)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def join_e2ee(server: ServerProcess, room: dict[str, Any]) -> tuple[Participant, list[Participant]]:
    """Therapist and clients with end-to-end encryption, links as the console makes them (``s``; ``tk``)."""
    ik = ec.generate_private_key(ec.SECP256R1())
    s = b64e(os.urandom(32))
    tk = b64e(tk_of(pub_raw(ik)))
    t = await Participant.join(server.url, room["therapist_link"] + f"&s={s}", name="Dr. T", therapist_ik=ik)
    cs = [await Participant.join(server.url, link + f"&s={s}&tk={tk}", name=f"C{i}")
          for i, link in enumerate(room["client_links"])]
    assert t.e2ee and all(c.e2ee for c in cs)
    return t, cs


async def admit(t: Participant, c: Participant) -> None:
    await t.wait_until(lambda: c.pid in t.intros, 5, "intro verified")
    await t.admit(c.pid)
    await c.wait_until(lambda: c.status == "admitted", 5, "admitted")
    await t.wait_until(lambda: c.pid in t.sas_of, 5, "reveal")


async def keyed(t: Participant, cs: list[Participant], after: int = -1, timeout: float = 10.0) -> int:
    """Until the therapist and every client send with one epoch newer than ``after`` whose signed roster has them
    all; returns it."""
    keys = t.keys
    assert isinstance(keys, TherapistKeys)
    pids = {c.pid for c in cs}

    def done() -> bool:
        cur = keys.current
        return (cur is not None and cur.epoch > after and pids <= set(cur.roster)
                and all(c.keystate is not None and c.keystate.send_epoch == cur.epoch for c in cs))
    await t.wait_until(done, timeout, "everyone on the therapist's newest epoch")
    assert keys.current is not None
    return keys.current.epoch


def nothing_refused(ps: list[Participant]) -> None:
    for p in ps:
        assert p.failures == [] and p.refusals == [] and p.security_failures == [], (p.name, p.refusals)


async def session(server: ServerProcess) -> tuple[Participant, Participant]:
    room = await server.create_room(type="individual")
    t, (c,) = await join_e2ee(server, room)
    await admit(t, c)
    await keyed(t, [c])
    await c.wait_frames(t.pid, video=11, audio=10, timeout=15)
    await t.wait_frames(c.pid, video=11, audio=10, timeout=15)
    return t, c


async def therapist_back_first(t: Participant, clients: list[Participant]) -> float:
    """The therapist resumes first and sees the restarted server's roster without its clients (who are still
    away); then they resume. Returns the moment the last one is back."""
    await rejoin(t)
    await t.wait_until(lambda: set(t.roster) == {t.pid}, 5, "the fresh server lists the therapist alone")
    await asyncio.sleep(0.3)  # what the therapist does with that roster reaches the clients before they return
    back = await asyncio.gather(*(rejoin(c) for c in clients))
    return max(back)


def video(p: Participant, other: Participant) -> int:
    return p.frames_from(other.pid)["video"]


async def media_goes_on(t: Participant, c: Participant, frames: int = 15) -> None:
    a, b = video(t, c), video(c, t)
    await t.wait_frames(c.pid, video=a + frames)
    await c.wait_frames(t.pid, video=b + frames)


async def rejoin(p: Participant) -> float:
    """Reconnect with the resume credential as a client does (retrying every 0.1 s); the moment it is back."""
    credential = p.resume_credential
    while True:
        if p.sc is not None and p.sc.resume is None:
            p.sc.resume = credential  # a failed attempt made a fresh client: keep the credential
        try:
            await p.reconnect()
            return time.monotonic()
        except Exception:
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_a_restart_mid_session_keeps_media_and_brings_everyone_back(server: ServerProcess, sig: int) -> None:
    t, c = await session(server)
    watch: FrameWatch | None = None
    try:
        tpid, cpid = t.pid, c.pid
        server.signal(sig)
        code = await server.wait()
        if sig == signal.SIGTERM:
            assert code == 0  # a clean stop for a deploy
            for p in (t, c):
                assert p.sc is not None and await p.sc.wait_closed(5) == 1001  # told to come back
        await media_goes_on(t, c)  # peer to peer: the outage does not touch the media
        epoch, made = t.keys.current.epoch, len(t.epochs_made)  # type: ignore[union-attr]
        watch = FrameWatch([t, c])
        listening = await server.start()
        back = await therapist_back_first(t, [c])
        gap = back - listening
        # where they were, without a new admission
        assert (t.pid, t.role, c.pid, c.status) == (tpid, "therapist", cpid, "admitted")
        await t.wait_until(lambda: c.pid in t.roster and t.roster[c.pid].connected, 5, "roster")
        # back: a new epoch for the returning client (a reloaded page holds no epoch secret), with it signed in
        await t.wait_until(lambda: len(t.epochs_made) > made, 5, "a new epoch for the returning client")
        after = await keyed(t, [c], after=epoch)
        await media_goes_on(t, c)
        longest = watch.longest()
        print(f"\nfault {signal.Signals(sig).name} (E2EE): everyone back {gap:.2f} s after the server listened; "
              f"epoch {epoch} -> {after}; longest gap in decrypted video {longest:.2f} s; frames that failed to "
              f"decrypt: therapist {t.decrypt_failures()}, client {c.decrypt_failures()}")
        assert gap <= BACK_WITHIN, gap
        nothing_refused([t, c])
        if timing_holds():
            assert longest < 3.0, longest
    finally:
        if watch is not None:
            await watch.stop()
        await t.close()
        await c.close()


async def test_a_frozen_server_evicts_nobody(server: ServerProcess) -> None:
    t, c = await session(server)
    try:
        server.signal(signal.SIGSTOP)
        await asyncio.sleep(2.0)  # the fault itself: the process is frozen for 2 s of real time
        server.signal(signal.SIGCONT)
        await media_goes_on(t, c)
        mark = c.mark()
        await t.sc.send(b'{"type":"extend","minutes":5}')  # type: ignore[union-attr]
        await c.expect("time", after=mark)
        assert t.connected and c.connected and c.status == "admitted"
        assert t.roster[c.pid].connected and c.roster[t.pid].connected
    finally:
        await t.close()
        await c.close()


async def test_a_client_network_cut_of_5_s_and_past_the_grace(alcove: Any, join: Any) -> None:
    room = await alcove.create_room(type="individual")
    t = await join(room["therapist_link"], name="Dr. T")
    c = await join(room["client_links"][0], name="Alex")
    await t.wait_until(lambda: any(q.pid == c.pid for q in t.queue), 5, "queued")
    await t.admit(c.pid)
    await c.wait_frames(t.pid, video=11)
    cpid = c.pid
    # 5 s: the seat is kept, the client comes back admitted, media never stopped
    await c.drop_signaling()
    await t.wait_until(lambda: not t.roster[cpid].connected, 5, "marked dropped")
    await alcove.advance(5)
    await media_goes_on(t, c)
    welcome = await c.reconnect()
    assert (welcome.pid, welcome.status) == (cpid, "admitted")
    await t.wait_until(lambda: t.roster[cpid].connected, 5, "back")
    # past the grace: the seat is given up and the therapist sees it go
    await c.drop_signaling()
    await alcove.advance(alcove.hub.config.timing.grace + 1)
    await t.wait_until(lambda: cpid not in t.roster, 5, "seat freed")
    assert alcove.hub.rooms.get(room["room_id"]).members.get(cpid) is None


# ------------------------------------------------------------------------------------------------ group media (SFU)


class FrameWatch:
    """Samples the video frames every receiver decodes from every publisher (every 20 ms): the longest time a
    stream went without a new frame."""

    def __init__(self, ps: list[Participant], also: tuple[str, ...] = ()) -> None:
        self.ps = ps
        self.publishers = [*(p.pid for p in ps), *also]
        """Whose frames are watched: ``ps`` themselves and the pids in ``also`` (a browser's)."""
        self.last: dict[tuple[str, str], tuple[int, float]] = {}
        self.gaps: dict[tuple[str, str], float] = {}
        self.task = asyncio.create_task(self._run())

    def reset(self) -> None:
        self.gaps.clear()

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            for x in self.ps:
                for y in self.publishers:
                    if x.pid == y:
                        continue
                    key = (x.pid, y)
                    count = x.frames_from(y)["video"]
                    previous = self.last.get(key)
                    if previous is None or count > previous[0]:
                        if previous is not None:
                            self.gaps[key] = max(self.gaps.get(key, 0.0), now - previous[1])
                        self.last[key] = (count, now)
            await asyncio.sleep(0.02)

    def longest(self) -> float:
        """The longest gap since :meth:`reset`, including a stream still waiting for its next frame."""
        now = time.monotonic()
        pending = [now - t for (_, t) in self.last.values()]
        return max([*self.gaps.values(), *pending, 0.0])

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def timing_holds() -> bool:
    """Whether a bound on a media gap means anything now: not on a machine whose load average is above 20 per
    core (the bounds held at 15 per core; at 28–45 per core, on a 2-core machine shared by several test suites,
    a test process or a browser went seconds without the CPU). The gaps are printed either way; the structural
    checks (the same worker, the kept connection, frames through the outage) always hold."""
    return os.getloadavg()[0] / (os.cpu_count() or 1) < 20


def workers_of(server: ServerProcess) -> set[int]:
    """The OS pids of the SFU worker processes serving ``server`` (their control sockets are in its data dir)."""
    mark = f"{server.data / 'run'}/".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if mark in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
    return pids


async def group_session(server: ServerProcess, clients: int) -> tuple[Participant, list[Participant]]:
    """A group room (SFU), everyone admitted, with end-to-end encryption."""
    room = await server.create_room(type="group", clients=clients)
    t, cs = await join_e2ee(server, room)
    assert t.sfu_room
    for c in cs:
        await t.wait_until(lambda c=c: any(q.pid == c.pid for q in t.queue), 5, "queued")
        await admit(t, c)
    await keyed(t, cs)
    return t, cs


async def everyone_gets(ps: list[Participant], frames: int, timeout: float = 20.0) -> None:
    marks = {(x.pid, y.pid): x.frames_from(y.pid)["video"] for x in ps for y in ps if x is not y}
    for x in ps:
        for y in ps:
            if x is not y:
                await x.wait_frames(y.pid, video=marks[(x.pid, y.pid)] + frames, timeout=timeout)


@pytest.mark.sfu
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_group_media_survives_a_restart_of_the_signaling_process(tmp_path: Path, sig: int) -> None:
    server = ServerProcess(tmp_path, ALCOVE_MEDIA_WORKERS="1")
    await server.start()
    t, cs = await group_session(server, clients=2)
    everyone = [t, *cs]
    watch = FrameWatch(everyone)
    try:
        await everyone_gets(everyone, 15)
        [worker] = workers_of(server)
        sockets = list((server.data / "run").glob("sfu-*/w*.sock"))
        assert sockets and all(s.stat().st_mode & 0o777 == 0o600 for s in sockets)
        before = {p.pid: sum(v["video"] for v in p.frames().values()) for p in everyone}
        watch.reset()
        server.signal(sig)
        assert await server.wait() == 0 if sig == signal.SIGTERM else True
        down = time.monotonic()
        await everyone_gets(everyone, 15)  # the worker forwards on while no signaling process runs
        assert workers_of(server) == {worker}
        epoch, made = t.keys.current.epoch, len(t.epochs_made)  # type: ignore[union-attr]
        listening = await server.start()
        back = await therapist_back_first(t, cs)
        await t.wait_until(lambda: len(t.epochs_made) > made, 5, "a new epoch for the returning clients")
        after_epoch = await keyed(t, cs, after=epoch)
        await everyone_gets(everyone, 30, timeout=40)
        gap = watch.longest()
        after = {p.pid: sum(v["video"] for v in p.frames().values()) for p in everyone}
        print(f"\nSFU fault {signal.Signals(sig).name} (E2EE): server down {listening - down:.2f} s, everyone back "
              f"{back - listening:.2f} s after it listened; epoch {epoch} -> {after_epoch}; longest gap in "
              f"decrypted video {gap:.2f} s; frames that failed to decrypt "
              f"{[p.decrypt_failures() for p in everyone]}; video frames decrypted per participant before/after: "
              f"{[(before[p.pid], after[p.pid]) for p in everyone]}")
        nothing_refused(everyone)
        assert back - listening <= BACK_WITHIN
        if timing_holds():
            assert gap < 2.0, gap  # without adoption: the outage plus about 6 s
        assert worker in workers_of(server)  # adopted, not replaced (it drains; new rooms go to a new worker)
        assert (t.role, [c.status for c in cs]) == ("therapist", ["admitted"] * len(cs))
        # the adopted room still obeys the core: a removed member stops receiving at once
        gone = cs[-1]
        await t.remove(gone.pid)
        await asyncio.sleep(1.0)
        frozen = gone.frames_from(t.pid)["video"]
        await everyone_gets([t, *cs[:-1]], 15)
        assert gone.frames_from(t.pid)["video"] <= frozen + 1
        nothing_refused([t, *cs[:-1]])
        # a new room runs on a worker of the new process; the adopted one stops once its room has ended
        assert len(workers_of(server)) == 2
        await t.end()
        for _ in range(50):
            if worker not in workers_of(server):
                break
            await asyncio.sleep(0.1)
        assert workers_of(server) and worker not in workers_of(server)
    finally:
        await watch.stop()
        for p in everyone:
            await p.close()
        await server.stop()


@pytest.mark.sfu
async def test_sfu_workers_nobody_adopts_exit_on_their_own(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, ALCOVE_MEDIA_WORKERS="1", ALCOVE_MEDIA_ADOPT_SECONDS="2")
    await server.start()
    t, cs = await group_session(server, clients=1)
    try:
        await everyone_gets([t, *cs], 10)
        workers = workers_of(server)
        assert len(workers) == 1
        server.signal(signal.SIGKILL)
        await server.wait()
        await asyncio.sleep(1.0)
        assert workers_of(server) == workers  # still forwarding, waiting to be adopted
        for _ in range(50):  # the worker's own bound (2 s) in real time: it is another process
            if not workers_of(server):
                break
            await asyncio.sleep(0.1)
        assert not workers_of(server)
        assert not list((server.data / "run").glob("sfu-*/w*.sock"))
    finally:
        for p in (t, *cs):
            await p.close()
        await server.stop()

