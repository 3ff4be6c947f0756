"""Nothing of a session persists (issue 15, item 5): a session through ``alcove serve`` carries the planted strings of
tests/planted.py (chat to everyone and private, a link, a display name), then the server's stdout and stderr, its
data directory, ``/metrics`` and every file written during the run are searched for them: zero hits.

To cover a new feature, add its strings to ``tests.planted.PLANTED`` and send them in ``_session`` below.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.participant import Participant
from tests.e2ee.test_aiortc_e2ee import admit, e2ee_links, switched
from tests.planted import PLANTED, scan

from .test_faults import free_port

pytestmark = [pytest.mark.integration, pytest.mark.media, pytest.mark.usefixtures("media_namespace")]

ROOT = Path(__file__).resolve().parents[2]
CHAT_EVERYONE, CHAT_TO_CLIENT, CHAT_TO_THERAPIST, LINK, NAME = PLANTED[:5]


@dataclass
class Served:
    """``alcove serve`` as operators run it, with its own data directory, working directory, HOME and TMPDIR."""

    base: Path
    port: int = field(default_factory=free_port)
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    proc: asyncio.subprocess.Process | None = None
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dirs(self) -> dict[str, Path]:
        return {name: self.base / name for name in ("data", "cwd", "home", "tmp")}

    async def start(self) -> None:
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ALCOVE_DATA_DIR": str(self.dirs["data"]), "ALCOVE_ADMIN_KEY": self.admin_key,
               "HOME": str(self.dirs["home"]), "TMPDIR": str(self.dirs["tmp"]), "PYTHONPATH": str(ROOT),
               "ALCOVE_LOG_LEVEL": "DEBUG"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.cli", "serve", "--no-tls", "--host", "127.0.0.1", "--port", str(self.port),
            cwd=self.dirs["cwd"], env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.readers = [asyncio.create_task(self._read(self.proc.stdout, self.stdout)),
                        asyncio.create_task(self._read(self.proc.stderr, self.stderr))]
        async with asyncio.timeout(20):
            while b"serving" not in self.stdout:
                assert self.proc.returncode is None, "the server exited"
                await asyncio.sleep(0.05)

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: bytearray) -> None:
        while chunk := await stream.read(65536):
            into += chunk

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()  # SIGTERM, as a deploy does: whatever it writes on the way out counts too
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(*self.readers, return_exceptions=True)

    async def create_room(self, **body: Any) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.url}/api/rooms", json={"start": "now", **body},
                headers={"Authorization": f"Bearer {self.admin_key}"}) as r:
            assert r.status == 201
            data: dict[str, Any] = await r.json()
            return data

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/metrics") as r:
            assert r.status == 200
            return await r.text()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    s = Served(tmp_path / "run")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def _session(served: Served) -> None:
    """A couple session with E2EE, chat both ways (everyone and private) carrying the planted strings; then the end."""
    ik = ec.generate_private_key(ec.SECP256R1())
    room = await served.create_room(type="couple", clients=2, host="Dr. T")
    t_link, c_links = e2ee_links(room, ik)
    t = await Participant.join(served.url, t_link, name="Dr. T", therapist_ik=ik, media=False)
    cs = [await Participant.join(served.url, c_links[0], name=NAME, media=False),
          await Participant.join(served.url, c_links[1], name="Sam", media=False)]
    try:
        for c in cs:
            await admit(t, c)
        await switched(t, *cs)
        a, b = cs
        assert t.send_app({"k": "chat", "text": f"{CHAT_EVERYONE} {LINK}"})
        assert t.send_app({"k": "chat", "text": CHAT_TO_CLIENT}, to=a.pid)
        assert a.send_app({"k": "chat", "text": CHAT_TO_THERAPIST}, to=t.pid)
        await b.wait_app(lambda x: CHAT_EVERYONE in x[1].get("text", ""))
        await a.wait_app(lambda x: x[1].get("text") == CHAT_TO_CLIENT)
        await t.wait_app(lambda x: x[1].get("text") == CHAT_TO_THERAPIST)
        assert not [r for p in (t, *cs) for r in p.refusals]
        await t.end()
        await t.wait_until(lambda: t.status == "ended", 5, "ended")
    finally:
        for p in (t, *cs):
            await p.close()


async def test_a_session_with_chat_leaves_no_planted_string_anywhere(served: Served) -> None:
    started = time.time() - 1  # file times have a coarse granularity on some file systems
    await _session(served)
    # the CLI's own chat probe, as operators run it: exit 0 and the probe's JSON shape
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "probe", "--server", served.url, "--scenario", "chat", "--json", cwd=ROOT,
        env={**os.environ, "ALCOVE_ADMIN_KEY": served.admin_key}, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    result = json.loads(out)
    assert proc.returncode == 0 and result["ok"] is True and result["scenario"] == "chat", result
    assert set(result) >= {"ok", "scenario", "figures"} and result["figures"]["markers_in_relay"] == 0
    metrics = await served.metrics()
    assert "alcove_app_messages_total" in metrics  # counted (never read)
    await served.stop()
    texts = {"stdout": bytes(served.stdout), "stderr": bytes(served.stderr), "/metrics": metrics}
    roots = [*served.dirs.values(), ROOT, Path("/tmp"), Path("/var/tmp")]
    hits = scan(PLANTED, texts=texts, roots=roots, since=started)
    assert hits == [], hits
    assert served.stdout and b"serving" in served.stdout  # the scan read real output


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The helper itself: a planted string in a text, in a file written now, and in UTF-16 is found (with strings of
    its own, so that this test's files never show up in another run's scan of the machine's temporary files)."""
    planted = ["selftest-a-Zp0q", "selftest-b-Zp0q", "selftest-c-Zp0q"]
    since = time.time() - 1
    (tmp_path / "a.log").write_text(f"x {planted[0]} y")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.db").write_bytes(planted[1].encode("utf-16-le"))
    hits = scan(planted, texts={"stdout": f"..{planted[2]}.."}, roots=[tmp_path], since=since)
    assert hits == sorted([f"stdout: {planted[2]}", f"{tmp_path / 'a.log'}: {planted[0]}",
                           f"{tmp_path / 'sub' / 'b.db'}: {planted[1]}"])
    assert scan(planted, roots=[tmp_path], since=time.time() + 60) == []  # only files written since
